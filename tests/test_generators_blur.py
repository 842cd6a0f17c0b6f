"""A tiny deterministic generator for testing the framework without a diffusion model.

``fit`` learns one mean intensity per label (in [-1, 1]) and saves it in the
Hugging Face layout (config.json + model.safetensors); ``generate`` paints the
mask with those means and adds seeded, smoothed noise. Subprocesses find it
through ``NNUNET_SYNTH_GENERATORS=test-blur=test_generators_blur:BlurTestGenerator``
with this folder on PYTHONPATH (see ``blur_env``).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import Generator, TrainingCase

NAME = "test-blur"
TARGET = "test_generators_blur:BlurTestGenerator"


class BlurTestGenerator(Generator):
    """Label means plus seeded smoothed noise (a test double, not a model)."""

    name = NAME
    supported_modes = ("twins", "new")

    def __init__(self, config: dict, means: np.ndarray):
        self.config = config
        self.means = means

    @classmethod
    def add_fit_arguments(cls, parser):
        parser.add_argument("--fail-in-fit", action="store_true", help="raise SynthError before writing anything")

    @classmethod
    def add_generate_arguments(cls, parser):
        parser.add_argument("--noise", type=float, default=0.3, help="noise amplitude")
        parser.add_argument("--sleep-per-case", type=float, default=0.0, help="seconds to sleep per sample")

    @classmethod
    def fit(cls, cases: list[TrainingCase], labels: list[int], model_dir: Path, args) -> None:
        from safetensors.numpy import save_file

        if args.fail_in_fit:
            raise SynthError("test-blur: refused by --fail-in-fit")
        channels = cases[0].image.shape[0]
        means = np.zeros((channels, max(labels) + 1), dtype=np.float32)
        for label in labels:
            for c in range(channels):
                values = np.concatenate([case.image[c][case.seg == label] for case in cases])
                means[c, label] = values.mean() if values.size else 0.0
        save_file({"means": means}, str(model_dir / "model.safetensors"))
        (model_dir / "config.json").write_text(json.dumps({"labels": labels, "channels": channels,
                                                           "ndim": cases[0].seg.ndim}))

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> "BlurTestGenerator":
        from safetensors.numpy import load_file

        for name in ("config.json", "model.safetensors"):
            if not (Path(model_dir) / name).is_file():
                raise SynthError(f"{model_dir}: missing {name}; run `nnunet-synth fit {NAME} ...`")
        return cls(json.loads((Path(model_dir) / "config.json").read_text()),
                   load_file(str(Path(model_dir) / "model.safetensors"))["means"])

    def model_labels(self) -> list[int]:
        return list(self.config["labels"])

    def generate(self, mask, spacing, seed, args):
        from scipy.ndimage import gaussian_filter

        time.sleep(args.sleep_per_case)
        rng = np.random.default_rng(seed)
        noise = gaussian_filter(rng.normal(size=(self.config["channels"],) + mask.shape), sigma=(0,) + (1.0,) * mask.ndim)
        image = self.means[:, mask] + args.noise * noise / max(noise.std(), 1e-6)
        return np.clip(image, -1, 1).astype(np.float32)


def blur_env(env: dict) -> dict:
    """``env`` plus what a subprocess needs to find the test generator."""
    here = os.path.dirname(os.path.abspath(__file__))
    return {**env, "NNUNET_SYNTH_GENERATORS": f"{NAME}={TARGET}",
            "PYTHONPATH": os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))}


@pytest.fixture
def blur_registered():
    from nnunet_synth.generators import registry

    registry.register(NAME, BlurTestGenerator)
    yield BlurTestGenerator
    registry.unregister(NAME)


def test_blur_generator_is_seeded_and_in_range(tmp_path):
    rng = np.random.default_rng(0)
    seg = (rng.random((12, 10)) > 0.7).astype(np.int32)
    cases = [TrainingCase("a", np.where(seg, 0.5, -0.5)[None].astype(np.float32), seg, (1.0, 1.0))]

    class Args:
        fail_in_fit = False
        noise = 0.3
        sleep_per_case = 0.0

    BlurTestGenerator.fit(cases, [0, 1], tmp_path, Args)
    gen = BlurTestGenerator.load(tmp_path)
    a, b, c = (gen.generate(seg, (1.0, 1.0), s, Args) for s in (1, 1, 2))
    assert a.shape == (1, 12, 10) and a.min() >= -1 and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[0][seg == 1].mean() > a[0][seg == 0].mean()
