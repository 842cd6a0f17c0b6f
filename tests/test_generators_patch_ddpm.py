"""The framework with the real patch-wise DDPM (tiny settings): fit, generate, outputs in the source's format."""
from __future__ import annotations

import json

import numpy as np

from conftest import error_lines
from nnunet_synth.commands.main import main as cli_main
from nnunet_synth.manifest import Manifest
from nnunet_synth.raw_dataset import RawDataset, file_dtype
from nnunet_synth.testing import make_raw_dataset_2d, make_raw_dataset_3d

TINY_FIT = ["--channels", "8", "16", "--res-blocks", "1", "--batch-size", "2", "--train-steps", "2",
            "--checkpoint-every", "1", "--ema-decay", "0", "--cpu"]
# Full-image sampling: tiled sampling is tested with the model itself (tests/test_patch_ddpm*.py).
TINY_SAMPLE = ["--steps", "2", "--sampling", "full", "--device", "cpu"]


def check_outputs(real: RawDataset, synth_folder, expected_cases):
    synth = RawDataset.open(synth_folder)
    assert synth.case_ids() == sorted(expected_cases)
    manifest = Manifest.load(synth_folder)
    for case in expected_cases:
        source = manifest.cases[case].source_case
        images, seg, props = synth.read_case(case)
        real_images, real_seg, real_props = real.read_case(source)
        assert images.shape == real_images.shape and seg.shape == real_seg.shape
        assert np.allclose(props["spacing"], real_props["spacing"])
        assert synth.source_dtype(case) == real.source_dtype(source)
        assert file_dtype(synth.label_file(case)) == file_dtype(real.label_file(source))
        assert set(np.unique(seg)) <= set(real.labels.values())


def test_patch_ddpm_2d_and_3d_through_the_framework(nnunet_folders, tmp_path, capsys):
    make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=5, shape=(24, 20))
    make_raw_dataset_3d(nnunet_folders.raw, 911, n_cases=5, shape=(8, 16, 12))

    # patch larger than the images: one-line error, no model folder left
    capsys.readouterr()
    assert cli_main(["fit", "patch-ddpm", "-d", "901", "--fold", "0", "-o", str(tmp_path / "big"),
                         "--patch-size", "64", *TINY_FIT]) == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and "patch" in errors[0] and not (tmp_path / "big").exists()

    for real_id, synth_id, patch, mode, kind, strength in ((901, 902, "8", "twins", "syn", 0.5),
                                                           (911, 912, "4", "new", "new", 1.0)):
        model = tmp_path / f"model{real_id}"
        assert cli_main(["fit", "patch-ddpm", "-d", str(real_id), "--fold", "0", "-o", str(model),
                             "--patch-size", patch, *TINY_FIT]) == 0
        assert json.loads((model / "training_cases.json").read_text())["fold"] == 0
        if real_id == 901:  # a bad --strength: one line, exit 2, no output folder
            capsys.readouterr()
            assert cli_main(["generate", "patch-ddpm", "-m", str(model), "-d", "901", "-o", "903", "--mode", "twins",
                             "-k", "1", "--strength", "1.5", *TINY_SAMPLE]) == 2
            errors = error_lines(capsys)
            assert len(errors) == 1 and "--strength must be in (0, 1], got 1.5" in errors[0], errors
            assert not list(nnunet_folders.raw.glob("Dataset903_*"))
        assert cli_main(["generate", "patch-ddpm", "-m", str(model), "-d", str(real_id), "-o", str(synth_id),
                                  "--mode", mode, "-k", "2", "--cases", "case_001", "--strength", str(strength),
                                  *TINY_SAMPLE]) == 0
        real = RawDataset.open(real_id)
        out = next(nnunet_folders.raw.glob(f"Dataset{synth_id}_*"))
        check_outputs(real, out, [f"case_001_{kind}000", f"case_001_{kind}001"])
        record = Manifest.load(out).generators[out.name]
        assert record.name == "patch-ddpm" and record.parameters["generator_options"]["steps"] == 2
        assert record.parameters["generator_options"]["strength"] == strength
        first, second = (RawDataset.open(out).read_case(f"case_001_{kind}00{k}")[0] for k in (0, 1))
        assert not np.array_equal(first, second)
