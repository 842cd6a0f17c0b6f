"""meddiff-ft with tiny random SD and DINOv2 folders: masked loss, guided synthesis, mask DDPM, filter, erosion,
fit + generate end to end, and bad input (CPU, offline)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import error_lines, use_planned
from nnunet_synth.commands.main import main as cli_main
from nnunet_synth.errors import SynthError

TINY_FIT = ["--resolution", "32", "--train-steps", "1", "--gradient-accumulation-steps", "1", "--mask-steps", "1",
            "--mask-resolution", "16", "--mask-channels", "8", "16", "--mask-batch-size", "2",
            "--background-steps", "1", "--checkpointing-steps", "1", "--cpu"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny 9-channel SD inpainting folder and a tiny DINOv2 folder (written once for the module)."""
    from nnunet_synth.testing.tiny_dinov2 import write_tiny_dinov2
    from nnunet_synth.testing.tiny_sd import write_tiny_sd

    root = tmp_path_factory.mktemp("meddiff_tiny")
    return {"sd": write_tiny_sd(root / "sd_inpaint", inpainting=True), "dino": write_tiny_dinov2(root / "dino")}


pytestmark = pytest.mark.usefixtures("hub_offline")


def test_masked_loss_has_no_gradient_outside_the_mask():
    from diffusers import DDPMScheduler

    from nnunet_synth.generators.meddiff_ft.train import masked_loss

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    gen = torch.Generator().manual_seed(0)
    predicted = torch.randn((2, 4, 8, 8), generator=gen, requires_grad=True)
    target = torch.randn((2, 4, 8, 8), generator=gen)
    lesion = torch.zeros((2, 1, 8, 8))
    lesion[:, :, 2:5, 3:7] = 1
    timesteps = torch.tensor([10, 500])
    for snr_gamma in (None, 5.0):
        predicted.grad = None
        masked_loss(predicted, target, timesteps, scheduler, snr_gamma, lesion, 0.0).backward()
        outside = (lesion == 0).expand_as(predicted)
        assert torch.all(predicted.grad[outside] == 0) and torch.all(predicted.grad[~outside] != 0)
    # outside weight 1 is the plain MSE
    plain = masked_loss(predicted, target, timesteps, scheduler, None, lesion, 1.0)
    assert torch.allclose(plain, torch.nn.functional.mse_loss(predicted, target))


def _pipeline(sd_folder):
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(sd_folder), local_files_only=True, safety_checker=None,
                                                          feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_guided_synthesis_follows_the_background_outside_the_mask(tiny):
    from nnunet_synth.generators.meddiff_ft.guided import GuidedOptions, decode, dilation_schedule, guided_synthesis
    from nnunet_synth.generators.sd.loading import encode_prompts

    pipe = _pipeline(tiny["sd"])
    rng = np.random.default_rng(0)
    background = np.clip(rng.normal(0, 0.5, (3, 32, 32)), -1, 1).astype(np.float32)
    mask = np.zeros((32, 32), bool)
    mask[10:20, 12:22] = True
    embeds = encode_prompts(pipe.tokenizer, pipe.text_encoder, ["a photo of hta", ""], "cpu")
    assert dilation_schedule(4, 2, 0.5) == [2, 1, 0, 0]
    for jumps in (0, 1):  # without and with RePaint resampling
        out = guided_synthesis(pipe, background, mask, embeds[:1], embeds[1:],
                               GuidedOptions(steps=4, guidance_scale=2.0, dilation_start=2, tighten_until=0.5,
                                             repaint_jumps=jumps), seed=3)
        final = out["latent_masks"][-1]
        assert out["latent_masks"][0].sum() > final.sum()                     # dilated early, tightened late
        outside = (final == 0).expand_as(out["latents"])
        assert torch.equal(out["latents"][outside], out["background_latents"][outside])
        assert not torch.allclose(out["latents"][~outside], out["background_latents"][~outside])
        round_trip = decode(pipe.vae, out["background_latents"])[0].numpy()
        assert np.allclose(out["image"][:, ~out["region"]], round_trip[:, ~out["region"]], atol=1e-6)
        assert out["region"][mask].all() and not out["region"].all()
        assert not np.allclose(out["image"][:, mask], round_trip[:, mask], atol=1e-3)  # generated inside


def test_mask_ddpm_trains_and_draws_clean_masks(tmp_path):
    from nnunet_synth.generators.base import TrainingCase
    from nnunet_synth.generators.meddiff_ft.mask_model import MaskGenerator, clean_mask, train_mask_ddpm
    from nnunet_synth.generators.meddiff_ft.settings import MedDiffFTFitOptions

    yy, xx = np.mgrid[:24, :24]
    cases = [TrainingCase(f"c{i}", np.zeros((1, 24, 24), np.float32),
                          (((yy - 12) / (4 + i)) ** 2 + ((xx - 11) / 6) ** 2 <= 1).astype(np.uint8), (1.0, 1.0))
             for i in range(3)]
    options = MedDiffFTFitOptions(pretrained="unused", mask_steps=2, mask_resolution=16, mask_channels=(8, 16),
                                  mask_batch_size=2, checkpointing_steps=1, cpu=True)
    train_mask_ddpm(cases, options, tmp_path / "mask")
    assert json.loads((tmp_path / "mask" / "config.json").read_text())["steps_trained"] == 2
    generator = MaskGenerator(tmp_path / "mask")
    raw = generator.draw(seed=1, steps=2)
    assert raw.shape == (16, 16) and np.array_equal(raw, generator.draw(seed=1, steps=2))
    # an untrained-looking draw may fail the rules; every accepted mask passes them
    mask, draws = generator.generate(seed=1, steps=2, tries=20, min_pixels=4, single_component=True)
    assert mask is not None and 1 <= draws <= 20
    from scipy import ndimage

    assert mask.dtype == bool and mask.sum() >= 4 and ndimage.label(mask, np.ones((3, 3)))[1] == 1
    # the cleaning rules on known shapes
    two = -np.ones((16, 16))
    two[1:4, 1:4], two[8:14, 8:14] = 1, 1
    two[10, 10] = -1                                       # a hole, filled
    cleaned = clean_mask(two, min_pixels=4)
    assert cleaned.sum() == 36 and not cleaned[2, 2]
    assert clean_mask(two, min_pixels=4, single_component=False).sum() == 45
    assert clean_mask(two, min_pixels=40) is None and clean_mask(-np.ones((8, 8)), 1) is None


def test_filter_keeps_exactly_the_band_and_reports_every_case(tmp_path):
    from nnunet_synth.generators.meddiff_ft import quality_filter as qf

    angles = np.array([0.0, 0.2, 0.45, 0.7])            # real features on a circle: known cosines
    real = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    values = qf.real_to_real(real, ["a", "b", "c", "d"])
    assert np.allclose(values, np.cos([0.2, 0.2, 0.25, 0.25]))
    band = qf.calibrate_band(values, (0, 100))
    assert np.allclose(band, (np.cos(0.25), np.cos(0.2)))
    generated = {f"g_new{i:03d}": a for i, a in enumerate([0.0, -0.21, 0.8, 0.92, 1.0])}
    decisions = {}
    for case, angle in generated.items():
        similarity, index = qf.nearest_real(np.array([np.cos(angle), np.sin(angle)]), real)
        decisions[case] = {"similarity": similarity, "kept": qf.keep(similarity, band)}
    inside = {c for c, d in decisions.items() if band[0] <= d["similarity"] <= band[1]}
    # a copy (0), too similar (0.8: 0.1 from 0.7), inside the band (-0.21, 0.92), too dissimilar (1.0)
    assert {c for c, d in decisions.items() if d["kept"]} == inside == {"g_new001", "g_new003"}
    out = qf.write_report(tmp_path, decisions, band, {"real_to_real": values.tolist()})
    report = json.loads((out / qf.REPORT_FILE).read_text())
    assert (out / qf.HISTOGRAM_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["kept"] == ["g_new001", "g_new003"] and sorted(report["kept"] + report["dropped"]) == sorted(generated)
    assert set(report["cases"]) == set(generated) and np.allclose(report["band"], band)
    with pytest.raises(SynthError, match="low must be below high"):
        qf.check_band((0.9, 0.9))


def test_erosion_shrinks_by_the_kernel_and_drops_a_vanishing_mask():
    from nnunet_synth.generators.meddiff_ft import erosion

    square = np.zeros((20, 20), bool)
    square[4:14, 5:15] = True
    lesion, kept, info = erosion.erode_lesion(square, *erosion.radii(2, None, (1.0, 1.0)))
    expected = np.zeros_like(square)
    expected[6:12, 7:13] = True
    assert kept and np.array_equal(lesion, expected) and info["pixels_after"] == 36
    # 2 mm at 0.5 x 1.0 mm pixels: 4 pixels along y, 2 along x
    lesion, kept, _ = erosion.erode_lesion(square, *erosion.radii(0, 2.0, (0.5, 1.0)))
    expected[:] = False
    expected[8:10, 7:13] = True
    assert kept and np.array_equal(lesion, expected)
    # a kernel wider than the lesion: dropped, recorded, and the mask is not written empty
    lesion, kept, info = erosion.erode_lesion(square, 6, 6)
    assert not kept and np.array_equal(lesion, square) and "dropped" in info and info["pixels_after"] == 0


def test_fit_and_generate_write_a_dataset_that_nnunet_and_expand_accept(planned_tiny_2d, nnunet_folders, tiny,
                                                                         tmp_path, capsys):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnunet_synth.generators.meddiff_ft import quality_filter as qf
    from nnunet_synth.manifest import Manifest
    from nnunet_synth.raw_dataset import RawDataset

    use_planned(planned_tiny_2d, nnunet_folders)
    model = tmp_path / "model"
    assert cli_main(["fit", "meddiff-ft", "-d", "901", "--cases", "case_000", "case_001", "case_002", "-o",
                     str(model), "--pretrained", str(tiny["sd"]), *TINY_FIT]) == 0
    config = json.loads((model / "config.json").read_text())
    assert config["parts"] == {"lesion": True, "mask": True, "background": True} and config["steps_trained"] == 1
    assert config["prompt"] == "a photo of hta" and config["settings"]["outside_weight"] == 0.0
    for part in ("unet", "background/unet"):
        assert (model / part / "diffusion_pytorch_model.safetensors").is_file()
    assert (model / "mask" / "diffusion_pytorch_model.safetensors").is_file()

    capsys.readouterr()
    assert cli_main(["generate", "meddiff-ft", "-m", str(model), "-d", "901", "-o", "902", "--mode", "new", "-k", "1",
                     "--steps", "2", "--mask-sampling-steps", "2", "--cases", "case_003", "case_004",
                     "--device", "cpu", "--filter-model", str(tiny["dino"])]) == 0
    out = nnunet_folders.raw / "Dataset902_Tiny2DSynthNew"
    verify_dataset_integrity(str(out), num_processes=1)
    manifest = Manifest.load(out)
    real, synth = RawDataset.open(901), RawDataset.open(out)
    cases = ["case_003_new000", "case_004_new000"]
    assert synth.case_ids() == cases
    report = json.loads((out / qf.REPORT_FOLDER / qf.REPORT_FILE).read_text())
    assert sorted(report["kept"] + report["dropped"]) == cases
    for case in cases:
        record = manifest.cases[case]
        assert record.kind == "new" and record.prompt == "a photo of hta"
        assert record.extra["background"] == "restored by the background model"
        assert record.extra["filter"]["kept"] == record.kept == (case in report["kept"])
        image, seg, _ = synth.read_case(case)
        source_image, source_seg, _ = real.read_case(record.source_case)
        assert image.shape == source_image.shape and set(np.unique(seg)) <= {0, 1} and (seg == 1).any()
        # the new lesion is the eroded painted lesion, and lies where the image was generated
        assert (seg == 1).sum() == record.extra["erosion"]["pixels_after"]
    assert (out / qf.REPORT_FOLDER / qf.HISTOGRAM_FILE).is_file()

    # expand takes the kept pairs
    assert cli_main(["expand", "-d", "901", "-s", "902", "-o", "903"]) == 0
    assert (nnunet_folders.raw / "Dataset903_Tiny2DExpanded" / "dataset.json").is_file()


def _hand_made_generator(tmp_path, tiny, **config_changes):
    """A MedDiffFTGenerator on a hand-written config (the checks below run before any weights are read)."""
    from nnunet_synth.generators.base import TrainingCase
    from nnunet_synth.generators.meddiff_ft import MedDiffFTGenerator
    from nnunet_synth.generators.sd.placement import LesionBank

    seg = np.zeros((24, 24), np.uint8)
    seg[8:16, 8:16] = 1
    config = {"resolution": 32, "context": 2.5, "parts": {"lesion": True, "mask": False, "background": True},
              "healthy_training_cases": [], "largest_lesion_radius_px": 4.0, "image_channels": 1, "labels": [0, 1],
              "label": 1, "prompt": "a photo of hta", "pretrained": str(tiny["sd"]), "settings": {}}
    config.update(config_changes)
    bank = LesionBank.from_cases([TrainingCase("c", np.zeros((1, 24, 24), np.float32), seg, (1.0, 1.0))], 1)
    return MedDiffFTGenerator(config, bank, "cpu", tmp_path)


def test_bad_input_is_refused_with_one_line(nnunet_folders, tiny, tmp_path, capsys):
    from nnunet_synth.generators.meddiff_ft.quality_filter import load_dinov2
    from nnunet_synth.generators.meddiff_ft.settings import MedDiffFTGenerateOptions
    from nnunet_synth.testing import make_raw_dataset_2d

    # no background images and no background model
    generator = _hand_made_generator(tmp_path, tiny, parts={"lesion": True, "mask": False, "background": False})
    with pytest.raises(SynthError, match="needs lesion-free backgrounds.*--backgrounds DIR"):
        generator.check_settings(MedDiffFTGenerateOptions())
    # a filter band with low >= high
    with pytest.raises(SynthError, match="--filter-band 0.9 0.2: low must be below high"):
        _hand_made_generator(tmp_path, tiny).check_settings(
            MedDiffFTGenerateOptions(filter_model=str(tiny["dino"]), filter_band=(0.9, 0.2)))
    # an erosion kernel larger than the lesions (the largest training lesion's inscribed radius is 4 px)
    with pytest.raises(SynthError, match="erosion kernel 4 px is larger than the lesions"):
        _hand_made_generator(tmp_path, tiny).check_settings(MedDiffFTGenerateOptions(erosion_px=4))
    with pytest.raises(SynthError, match="erosion kernel 5.0 mm is larger"):
        _hand_made_generator(tmp_path, tiny).check_settings(MedDiffFTGenerateOptions(erosion_mm=5.0))
    # a folder that is not a DINOv2 model
    with pytest.raises(SynthError, match="holds a 'clip_text_model' model, not a DINOv2 model"):
        load_dinov2(str(tiny["sd"] / "text_encoder"))
    with pytest.raises(SynthError, match="no config.json; expected a local DINOv2 folder"):
        load_dinov2(str(tmp_path))

    # a 4-channel UNet where the 9-channel inpainting one is needed: refused before anything is written
    make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=5, shape=(24, 24))
    four = tmp_path / "sd4"
    shutil.copytree(tiny["sd"], four)
    unet_config = json.loads((four / "unet" / "config.json").read_text())
    (four / "unet" / "config.json").write_text(json.dumps({**unet_config, "in_channels": 4}))
    capsys.readouterr()
    assert cli_main(["fit", "meddiff-ft", "-d", "901", "--fold", "0", "-o", str(tmp_path / "m4"),
                     "--pretrained", str(four), *TINY_FIT]) == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and "expected a 9-channel UNet2DConditionModel" in errors[0]
    assert not (tmp_path / "m4").exists()
    # the same at generate time, through the command: the band
    capsys.readouterr()
    assert cli_main(["generate", "meddiff-ft", "-m", str(tmp_path / "none"), "-d", "901", "-o", "902", "--mode",
                     "new", "-k", "1"]) == 2
    assert len(error_lines(capsys)) == 1


def test_background_choice(tiny, tmp_path):
    """A label-free source is its own background; else an image of --backgrounds; else refused without a model."""
    from PIL import Image

    from nnunet_synth.generators.base import TrainingCase
    from nnunet_synth.generators.meddiff_ft.settings import MedDiffFTGenerateOptions

    generator = _hand_made_generator(tmp_path, tiny, parts={"lesion": True, "mask": False, "background": False})
    settings = MedDiffFTGenerateOptions()
    image = np.linspace(-1, 1, 24 * 20, dtype=np.float32).reshape(1, 24, 20)
    seg = np.zeros((24, 20), np.uint8)
    healthy = TrainingCase("healthy", image, seg, (1.0, 1.0))
    background, labels, extras = generator._background(healthy, settings, seed=1, label=1)
    assert np.array_equal(background, image) and not labels.any() and extras["background"] == "source (label-free)"
    seg[5:9, 5:9] = 1
    sick = TrainingCase("sick", image, seg, (1.0, 1.0))
    with pytest.raises(SynthError, match="case sick has a lesion and there is no background model or --backgrounds"):
        generator._background(sick, settings, seed=1, label=1)
    folder = tmp_path / "backgrounds"
    folder.mkdir()
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 5, (30, 1))).save(folder / "h1_0000.png")
    generator._backgrounds = generator._background_files(folder)
    background, labels, extras = generator._background(sick, settings, seed=1, label=1)
    assert background.shape == image.shape and background.min() >= -1 and background.max() <= 1
    assert not labels.any() and extras["background"] == "--backgrounds h1_0000.png"
    assert np.all(np.diff(background[0], axis=1) >= -1e-6)           # the folder's left-to-right ramp, resized
    with pytest.raises(SynthError, match="holds no images named NAME_0000"):
        generator._background_files(tmp_path)
