"""patch-ddpm writes the same bytes as before the generator interface v2 (issue 10).

The hashes were recorded with the pre-v2 code (commit f0882b9) for the same
commands and seeds; a change to seeding, sampling, intensity mapping or
writing shows up here as a different hash. They held unchanged through the
model folder's move to the Hugging Face layout (unet/, scheduler/,
model_index.json: the same weights under other names) and the addition of
``--strength`` (1 = the pinned sampling).
"""
from __future__ import annotations

import hashlib

import pytest

from nnunet_synth.commands.main import main
from nnunet_synth.testing import make_raw_dataset_2d, make_raw_dataset_3d

FIT = ["--channels", "8", "16", "--res-blocks", "1", "--batch-size", "2", "--train-steps", "3",
       "--checkpoint-every", "2", "--ema-decay", "0.9", "--cpu"]

PINNED = {
    # (dataset id, mode, sampling) -> {file name: sha256}
    (901, 'twins', 'full'): {
        'case_001_syn000.png': 'b9aa0cf21440c51191d5bb9fdeb98bccf37131fe395750669588ac546270007f',
        'case_001_syn000_0000.png': '3ff3afaf08c0ba431c5e266caab08d3412ee0681939682e0faec502345864ed0',
        'case_001_syn001.png': 'b9aa0cf21440c51191d5bb9fdeb98bccf37131fe395750669588ac546270007f',
        'case_001_syn001_0000.png': '7db5e92411a7bda6c5a23220037af693a441b65d8627dac2c8bcf65af9c6ec85',
        'case_003_syn000.png': '40851f8118db291ef8e1b4212517151515c37953a19a28f3c6cc2af87a24e050',
        'case_003_syn000_0000.png': '321db743bc8b646960df512f4b1a1f0e676202561eb9bc7ae0c1f4bcda512e24',
        'case_003_syn001.png': '40851f8118db291ef8e1b4212517151515c37953a19a28f3c6cc2af87a24e050',
        'case_003_syn001_0000.png': '2fec0cd735a2e92fdf8a4e8b69c5743f4e0e61d24405a644679d7dd77cf63dc1',
    },
    (911, 'new', 'tiled'): {
        'case_001_new000.nii.gz': '37c435943c96ac263da8f76467b072bcb4c5db1aacb2d34139c8719db3b83823',
        'case_001_new000_0000.nii.gz': 'af00a8ad3a8fa1586113653102b2a9df51947e02aba978df085d025fff7c6b84',
        'case_001_new001.nii.gz': '6acc7cf95642685a54dfba667529eb93cbd3a78c821ff7def345c4a163d5afc8',
        'case_001_new001_0000.nii.gz': '331d19741a97cbd1549d8af73e098ceb828b8a6d13427b5d502c795af8a73d93',
        'case_003_new000.nii.gz': '22d8bad3d8899658158a5e82bdd6bd9e2e87c91774187a7eb7e1d1a06b9425d1',
        'case_003_new000_0000.nii.gz': '91138831ea764ee1d437314b56c05a9114cb26349baadeb78f8e28c9d2dc3c2b',
        'case_003_new001.nii.gz': '6b503b6167e7e50918072784140d56af0c7eec112e954e300c363c0aca78698e',
        'case_003_new001_0000.nii.gz': 'b2daed199b75d6fa53100622daffb076493e712af956339eca97fa2a1c95dd4a',
    },
}


# One torch thread for every test here (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def file_hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("imagesTr", "labelsTr") for p in sorted((folder / sub).iterdir())}


@pytest.mark.parametrize("real_id, mode, sampling, patch", [(901, "twins", "full", "8"), (911, "new", "tiled", "4")])
def test_outputs_are_byte_identical_to_the_pinned_ones(nnunet_folders, tmp_path, real_id, mode, sampling, patch):
    if real_id == 901:
        make_raw_dataset_2d(nnunet_folders.raw, real_id, n_cases=5, shape=(24, 20))
    else:
        make_raw_dataset_3d(nnunet_folders.raw, real_id, n_cases=5, shape=(8, 16, 12))
    model = tmp_path / "model"
    assert main(["fit", "patch-ddpm", "-d", str(real_id), "--fold", "0", "-o", str(model), "--patch-size", patch,
                 *FIT]) == 0
    # --strength 1 (img2img's pure-noise end) must be the sampling these bytes were pinned with
    strength = ["--strength", "1"] if mode == "new" else []
    assert main(["generate", "patch-ddpm", "-m", str(model), "-d", str(real_id), "-o", str(real_id + 1),
                 "--mode", mode, "-k", "2", "--cases", "case_001", "case_003", "--seed", "5", "--steps", "2",
                 "--sampling", sampling, "--device", "cpu", *strength]) == 0
    out = next(nnunet_folders.raw.glob(f"Dataset{real_id + 1}_*"))
    assert file_hashes(out) == PINNED[(real_id, mode, sampling)]
