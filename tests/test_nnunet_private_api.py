"""The two private nnU-Net functions ``nnunet-synth twins`` relies on, held to what it assumes.

nnunet_synth/diffboost/twins.py preprocesses twins exactly as nnU-Net
preprocessed the real case, so it calls nnU-Net's own pieces instead of copies:
``DefaultPreprocessor._normalize`` (the configured per-channel normalization)
and ``nnUNetDatasetBlosc2._select_filter`` (the blosc2 filter nnU-Net picks when
it writes a case). Neither is public API. When an nnU-Net release changes one,
these tests fail with a message saying what changed, before a training run
reads twins written differently from the real cases.
"""
import inspect
from importlib.metadata import version
from types import SimpleNamespace

import blosc2
import numpy as np
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

CHANGED = ("nnU-Net {v} changed {name}, which nnunet_synth/diffboost/twins.py calls: {what}. Adapt twins.py "
           "to it and update the supported nnunetv2 range in setup.cfg.")


def _params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def _changed(name: str, what: str) -> str:
    return CHANGED.format(v=version("nnunetv2"), name=name, what=what)


def test_normalize_keeps_its_signature_and_meaning():
    name = "DefaultPreprocessor._normalize"
    assert hasattr(DefaultPreprocessor, "_normalize"), _changed(name, "it no longer exists")
    expected = ["self", "data", "seg", "configuration_manager", "foreground_intensity_properties_per_channel"]
    assert _params(DefaultPreprocessor._normalize) == expected, \
        _changed(name, f"parameters {_params(DefaultPreprocessor._normalize)}, expected {expected}")

    # z-score without a mask: (x - mean) / std over the channel, the rule twins rely on for MRI/US data
    data = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
    seg = np.ones((1, 4, 4), dtype=np.int8)
    cm = SimpleNamespace(normalization_schemes=["ZScoreNormalization"] * 2, use_mask_for_norm=[False, False])
    out = DefaultPreprocessor(verbose=False)._normalize(data.copy(), seg, cm, {"0": {}, "1": {}})
    expected_out = np.stack([(c - c.mean()) / c.std() for c in data])
    assert isinstance(out, np.ndarray) and out.shape == data.shape, _changed(name, "it returns something else")
    assert np.allclose(out, expected_out, atol=1e-5), _changed(name, "z-score normalization gives other values")


def test_select_filter_keeps_its_signature_and_meaning():
    name = "nnUNetDatasetBlosc2._select_filter"
    attr = inspect.getattr_static(nnUNetDatasetBlosc2, "_select_filter", None)
    assert attr is not None, _changed(name, "it no longer exists")
    assert isinstance(attr, staticmethod), _changed(name, "it is no longer a staticmethod")
    expected = ["arr", "blocks", "chunks", "codec", "clevel"]
    assert _params(nnUNetDatasetBlosc2._select_filter) == expected, \
        _changed(name, f"parameters {_params(nnUNetDatasetBlosc2._select_filter)}, expected {expected}")

    x = np.random.default_rng(0).normal(size=(1, 16, 16)).astype(np.float32)
    chosen = nnUNetDatasetBlosc2._select_filter(x, (1, 8, 8), (1, 16, 16), blosc2.Codec.LZ4HC, 5)
    assert chosen in (blosc2.Filter.NOFILTER, blosc2.Filter.SHUFFLE), \
        _changed(name, f"it returned {chosen!r}, not one blosc2 filter")


def test_the_supported_range_is_stated_in_setup_cfg_and_installed():
    import configparser
    from pathlib import Path

    from packaging.requirements import Requirement

    from nnunet_synth.environment import NNUNET_RANGE

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parents[1] / "setup.cfg")
    requirements = [Requirement(line) for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    nnunet = next(r for r in requirements if r.name == "nnunetv2")
    from packaging.specifiers import SpecifierSet

    assert nnunet.specifier == SpecifierSet(NNUNET_RANGE), "setup.cfg and nnunet_synth.environment.NNUNET_RANGE differ"
    assert nnunet.specifier.contains(version("nnunetv2")), \
        f"installed nnunetv2 {version('nnunetv2')} is outside the supported range {nnunet.specifier}"
