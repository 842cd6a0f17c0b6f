"""sd-inpaint with tiny random Stable Diffusion folders: fit, inpaint, outputs, resume and bad input (CPU, offline)."""
from __future__ import annotations

import json
import shutil
import stat

import numpy as np
import pytest

from conftest import error_lines, use_planned
from nnunet_synth.atomic import new_file_mode
from nnunet_synth.commands.main import main as cli_main
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import Manifest
from nnunet_synth.raw_dataset import RawDataset
from nnunet_synth.testing import make_raw_dataset_3d, make_sector_dataset_2d
from test_generators_patch_ddpm import check_outputs

TINY_FIT = ["--resolution", "64", "--train-steps", "2", "--checkpointing-steps", "1", "--cpu"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from nnunet_synth.testing.tiny_sd import write_tiny_sd

    root = tmp_path_factory.mktemp("tiny_sd")
    return {4: write_tiny_sd(root / "sd", inpainting=False), 9: write_tiny_sd(root / "sd_inpaint", inpainting=True)}


pytestmark = pytest.mark.usefixtures("hub_offline")


def check_inpainted(real: RawDataset, synth_folder, cases, sector: bool):
    """Outside the repainted pixels the image is the source's exactly; the label is the source's plus one lesion."""
    from scipy import ndimage

    manifest = Manifest.load(synth_folder)
    synth = RawDataset.open(synth_folder)
    for case in cases:
        record = manifest.cases[case]
        assert record.kind == "inpaint" and record.prompt == "thyroid nodule, ultrasound"
        image, seg, _ = synth.read_case(case)
        source_image, source_seg, _ = real.read_case(record.source_case)
        # nnU-Net reads a 2D PNG as (C, 1, H, W); work in (C, H, W) and (H, W)
        (image, source_image), (seg, source_seg) = ((a.reshape(a.shape[0], *a.shape[-2:]) for a in (image, source_image)),
                                                    (a.reshape(a.shape[-2:]) for a in (seg, source_seg)))
        y0, x0, y1, x1 = record.extra["window"]
        outside = np.ones(seg.shape, bool)
        outside[max(y0, 0):y1, max(x0, 0):x1] = False
        assert np.array_equal(image[:, outside], source_image[:, outside])
        differs = (image != source_image).any(axis=0)
        assert differs.sum() <= record.extra["repainted_pixels"] and differs.any()
        assert np.array_equal(seg[source_seg != 0], source_seg[source_seg != 0])
        new = (seg != 0) & (source_seg == 0)
        assert new.sum() == record.extra["lesion_pixels"] > 0
        assert ndimage.label(new)[1] == 1                                 # one new lesion
        if sector:
            assert (source_image[:, new] > 0).all()                       # inside the imaged sector, not on black
        gap = ndimage.distance_transform_edt(source_seg == 0)[new]
        assert gap.min() > 2.0 - 1e-6                                     # 2 mm from the existing lesion (1 mm px)
        assert record.extra["placement"]["shape"]["shape_case_id"] != record.source_case


def test_fit_and_generate_commands_9_channel(planned_tiny_2d, nnunet_folders, tiny_sd, tmp_path, capsys, monkeypatch):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    use_planned(planned_tiny_2d, nnunet_folders)  # Dataset901_Tiny2D: no black border, the whole image is the region
    model = tmp_path / "model"
    assert cli_main(["fit", "sd-inpaint", "-d", "901", "--fold", "0", "-o", str(model),
                     "--pretrained", str(tiny_sd[9]), *TINY_FIT]) == 0
    assert "s per step (2 steps)" in capsys.readouterr().out          # (and the peak GPU memory on CUDA)
    config = json.loads((model / "config.json").read_text())
    assert config["unet_in_channels"] == 9 and config["steps_trained"] == 2 and config["resolution"] == 64
    assert (model / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert sorted(p.name for p in (model / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    # weights and checkpoints get the mode of the other outputs (safetensors alone writes 0600)
    modes = {p.relative_to(model).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in model.rglob("*") if p.is_file()}
    assert "checkpoints/checkpoint-2/model.safetensors" in modes and set(modes.values()) == {new_file_mode()}, modes
    trained_on = json.loads((model / "training_cases.json").read_text())["cases"]

    assert cli_main(["generate", "sd-inpaint", "-m", str(model), "-d", "901", "-o", "902", "--mode", "inpaint",
                     "-k", "2", "--steps", "2", "--cases", "case_001", "--device", "cpu"]) == 0
    assert "s per image (2 images)" in capsys.readouterr().out
    real, out = RawDataset.open(901), nnunet_folders.raw / "Dataset902_Tiny2DSynthInpaint"
    cases = ["case_001_inp000", "case_001_inp001"]
    check_outputs(real, out, cases)
    check_inpainted(real, out, cases, sector=False)
    verify_dataset_integrity(str(out), num_processes=1)
    record = Manifest.load(out).generators[out.name]
    assert record.name == "sd-inpaint" and record.trained_on == trained_on
    assert record.parameters["generator_options"]["resolution"] == 64  # the model's, recorded
    first, second = (RawDataset.open(out).read_case(c)[0] for c in cases)
    assert not np.array_equal(first, second)

    # resume: a run interrupted after its first case, rerun, writes what the uninterrupted run wrote
    from nnunet_synth.generators.sd_inpaint import SDInpaintGenerator

    calls, original = [], SDInpaintGenerator.generate

    def interrupted(self, request):
        calls.append(request.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill between two cases
        return original(self, request)

    command = ["generate", "sd-inpaint", "-m", str(model), "-d", "901", "-o", "905", "--name", "Again", "--mode",
               "inpaint", "-k", "2", "--steps", "2", "--cases", "case_001", "--device", "cpu"]
    monkeypatch.setattr(SDInpaintGenerator, "generate", interrupted)
    capsys.readouterr()
    assert cli_main(command) == 130 and "rerun the same command to resume" in capsys.readouterr().err
    monkeypatch.setattr(SDInpaintGenerator, "generate", original)
    again = nnunet_folders.raw / "Dataset905_Again"
    first_written = (again / "imagesTr" / "case_001_inp000_0000.png").stat().st_mtime_ns
    assert cli_main(command) == 0
    assert (again / "imagesTr" / "case_001_inp000_0000.png").stat().st_mtime_ns == first_written
    for sub in ("imagesTr", "labelsTr"):
        assert {p.name: p.read_bytes() for p in (out / sub).iterdir()} == \
            {p.name: p.read_bytes() for p in (again / sub).iterdir()}

    # expand takes the pairs into an expanded raw dataset
    capsys.readouterr()
    assert cli_main(["expand", "-d", "901", "-s", "902", "-o", "903"]) == 0
    assert (nnunet_folders.raw / "Dataset903_Tiny2DExpanded" / "dataset.json").is_file()


def test_4_channel_unet_with_ema_snr_and_offset_noise(nnunet_folders, tiny_sd, tmp_path):
    from safetensors.torch import load_file

    from nnunet_synth.generators.fit import FitJob, fit_generator
    from nnunet_synth.generators.generate import GenerateJob, generate_dataset
    from nnunet_synth.generators.sd_inpaint.settings import SDInpaintFitOptions, SDInpaintGenerateOptions

    make_sector_dataset_2d(nnunet_folders.raw, 901, n_cases=6)
    cases = ("case_000", "case_002", "case_003")

    def fit(folder, steps):
        options = SDInpaintFitOptions(pretrained=str(tiny_sd[4]), resolution=64, train_steps=steps,
                                      checkpointing_steps=1, use_ema=True, snr_gamma=5.0, noise_offset=0.05, cpu=True)
        fit_generator(FitJob("sd-inpaint", "901", folder, cases=cases), options)
        return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))

    straight = fit(tmp_path / "straight", 2)   # (resume: test_killed_fit_resumes_to_the_uninterrupted_weights)
    before = load_file(str(tiny_sd[4] / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not np.array_equal(before[k], straight[k]) for k in straight)  # training changed the weights

    out = generate_dataset(GenerateJob("sd-inpaint", tmp_path / "straight", "901", 904, "inpaint", 1,
                                       cases=("case_004",), device="cpu", prompt="thyroid nodule, ultrasound"),
                           SDInpaintGenerateOptions(steps=2, scheduler="pndm", guidance_scale=1.0))
    check_inpainted(RawDataset.open(901), out, ["case_004_inp000"], sector=True)


def test_generate_keeps_every_pixel_outside_the_repainted_region(tiny_sd, tmp_path):
    """In the generator's own output ([-1, 1]): outside ``changed`` the source values, untouched."""
    from nnunet_synth.generators.base import GenerationRequest, TrainingCase
    from nnunet_synth.generators.sd.placement import BANK_FILE, LesionBank
    from nnunet_synth.generators.sd_inpaint import SDInpaintGenerator
    from nnunet_synth.generators.sd_inpaint.settings import SDInpaintFitOptions, SDInpaintGenerateOptions
    from nnunet_synth.generators.sd_inpaint.train import build_config
    from nnunet_synth.testing import _sector_case

    rng = np.random.default_rng(3)
    cases = []
    for i in range(3):
        image, seg = _sector_case(rng, (72, 56))  # taller than wide: the window is padded at the sides
        image = np.clip(image[None] / 127.5 - 1, -1, 1).astype(np.float32)
        cases.append(TrainingCase(f"c{i}", image, seg, (1.0, 1.0)))
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    shutil.copytree(tiny_sd[9] / "unet", model / "unet", dirs_exist_ok=True)
    config = build_config(cases, [0, 1], SDInpaintFitOptions(pretrained=str(tiny_sd[9]), resolution=32), str(tiny_sd[9]), 9)
    (model / "config.json").write_text(json.dumps(config))
    LesionBank.from_cases(cases, 1).save(model / BANK_FILE)
    generator = SDInpaintGenerator.load(model, "cpu")
    settings = generator.check_settings(SDInpaintGenerateOptions(steps=2, context=4.0))
    request = GenerationRequest(source=cases[0], target_mask=cases[0].seg, mode="inpaint", seed=5, prompt=None,
                                settings=settings)
    response = generator.generate(request)
    assert response.image.shape == cases[0].image.shape and response.image.dtype == np.float32
    assert np.array_equal(response.image[:, ~response.changed], cases[0].image[:, ~response.changed])
    assert not np.array_equal(response.image[:, response.changed], cases[0].image[:, response.changed])
    assert np.array_equal(response.mask[~response.changed], cases[0].seg[~response.changed])
    assert not (response.changed & (cases[0].seg != 0)).any()          # existing lesions are never repainted
    again = generator.generate(request)
    assert np.array_equal(again.image, response.image) and again.extras == response.extras

    # no room: the lesion bank's shapes cannot fit into a sector filled by a lesion
    full = TrainingCase("full", cases[0].image, (cases[0].image[0] > -1).astype(np.uint8), (1.0, 1.0))
    with pytest.raises(SynthError, match="case full: no room for a new lesion"):
        generator.generate(GenerationRequest(source=full, target_mask=full.seg, mode="inpaint", seed=1,
                                             prompt=None, settings=settings))


def test_bad_input_is_one_line(nnunet_folders, tiny_sd, tmp_path, capsys):
    make_sector_dataset_2d(nnunet_folders.raw, 901, n_cases=6)
    make_raw_dataset_3d(nnunet_folders.raw, 911, n_cases=5, shape=(8, 16, 12))
    broken = tmp_path / "broken_sd"
    shutil.copytree(tiny_sd[4], broken)
    shutil.rmtree(broken / "unet")
    capsys.readouterr()
    cases = [(["-d", "901", "--pretrained", str(broken)], "unet/"),
             (["-d", "901", "--pretrained", "someone/some-model"], "--allow-download"),
             (["-d", "911", "--pretrained", str(tiny_sd[4])], "2D generator"),
             (["-d", "901", "--pretrained", str(tiny_sd[4]), "--resolution", "63"], "multiple of 8"),
             (["-d", "901", "--pretrained", str(tiny_sd[4]), "--mixed-precision", "fp16"], "needs a GPU")]
    for k, (arguments, expected) in enumerate(cases):
        model = tmp_path / f"model{k}"
        code = cli_main(["fit", "sd-inpaint", "--fold", "0", "-o", str(model), *arguments,
                         *[a for a in TINY_FIT if a not in ("--resolution", "64")]])
        errors = error_lines(capsys)
        assert code == 2 and len(errors) == 1 and expected in errors[0], (arguments, errors)
        assert not model.exists(), arguments  # refused before anything was written
    with pytest.raises(SystemExit) as exit_info:                       # --pretrained is required
        cli_main(["fit", "sd-inpaint", "-d", "901", "--fold", "0", "-o", str(tmp_path / "m")])
    assert exit_info.value.code == 2 and "required: --pretrained" in capsys.readouterr().err



def test_killed_fit_resumes_to_the_uninterrupted_weights(nnunet_folders, tiny_sd, tmp_path, one_torch_thread):
    """A real `fit` process killed (SIGKILL) after its second checkpoint, rerun: the weights of an uninterrupted fit."""
    from safetensors.torch import load_file

    from conftest import kill_once, run_command, venv_command

    make_sector_dataset_2d(nnunet_folders.raw, 901, n_cases=6)
    arguments = ["fit", "sd-inpaint", "-d", "901", "--cases", "case_000", "case_001", "--pretrained", str(tiny_sd[4]),
                 "--resolution", "64", "--train-steps", "5", "--checkpointing-steps", "1", "--cpu"]
    assert cli_main([*arguments, "-o", str(tmp_path / "straight")]) == 0
    env = {**nnunet_folders.env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    command = [venv_command("nnunet-synth"), *arguments, "-o", str(killed)]
    kill_once(command, env, (killed / "checkpoints" / "checkpoint-2" / "progress.json").is_file, "the fit")
    assert not (killed / "unet").exists()                              # the weights are written last
    run_command(command, env)
    straight = load_file(str(tmp_path / "straight" / "unet" / "diffusion_pytorch_model.safetensors"))
    resumed = load_file(str(killed / "unet" / "diffusion_pytorch_model.safetensors"))
    assert straight.keys() == resumed.keys() and all(np.array_equal(straight[k], resumed[k]) for k in straight)
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-5"]  # the limit
