"""The shared Stable Diffusion pieces: the tiny SD folder, loading it offline, prompts, resolution, framing."""
from __future__ import annotations

import json
import runpy
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.sd.framing import (Frame, from_model, full_frame, mask_bbox, paste, square_box_around,
                                                to_model)
from nnunet_synth.generators.sd.loading import (check_resolution, check_sd_folder, encode_prompts, load_sd_components,
                                                resolve_pretrained)
from nnunet_synth.testing.tiny_sd import write_tiny_sd

PROMPTS = ["thyroid nodule, ultrasound", "a photo of hta", "Breast, Ultrasound"]
PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> dict[int, Path]:
    """Tiny SD folders by UNet input channels: 4 (text-to-image) and 9 (inpainting), seed 0, once per module."""
    root = tmp_path_factory.mktemp("tiny_sd")
    return {4: write_tiny_sd(root / "sd", seed=0), 9: write_tiny_sd(root / "sd-inpaint", inpainting=True, seed=0)}


@pytest.fixture
def offline(monkeypatch):
    """No hub and no network: HF_HUB_OFFLINE set and every socket connection refused."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise OSError("network access in a hermetic test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- the tiny folder -------------------------------------------------------------------------------------------------

def test_tiny_folder_has_the_sd_layout(tiny_sd):
    for channels, folder in tiny_sd.items():
        assert check_sd_folder(folder) == folder
        index = json.loads((folder / "model_index.json").read_text())
        assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
        assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
        assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == channels
        assert (folder / "tokenizer" / "vocab.json").is_file() and (folder / "tokenizer" / "merges.txt").is_file()
        assert not list(folder.rglob("*.bin")), "weights are saved as safetensors"


def test_text_to_image_pipeline_runs_offline(tiny_sd, offline):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd[4], local_files_only=True)
    out = pipe(PROMPTS[0], num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_inpainting_pipeline_runs_offline(tiny_sd, offline):
    import torch
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image

    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny_sd[9], local_files_only=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 20:44] = 255
    out = pipe(PROMPTS[1], image=image, mask_image=Image.fromarray(mask), num_inference_steps=2, height=64, width=64,
               output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def _weights(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return {f"{p.parent.name}/{k}": v for p in sorted(folder.rglob("*.safetensors")) for k, v in load_file(p).items()}


def test_same_seed_same_weights_other_seed_other_weights(tiny_sd, tmp_path):
    import torch

    reference = _weights(tiny_sd[4])
    again = _weights(write_tiny_sd(tmp_path / "again", seed=0))
    assert again.keys() == reference.keys()
    assert all(torch.equal(again[k], reference[k]) for k in reference)
    other = _weights(write_tiny_sd(tmp_path / "other", seed=1))
    assert not torch.equal(other["unet/conv_in.weight"], reference["unet/conv_in.weight"])


def test_writing_does_not_change_the_callers_random_stream(tmp_path):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_tiny_sd(tmp_path / "sd", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_module_runs_as_a_program(tmp_path, monkeypatch, capsys):
    """``python -m nnunet_synth.testing.tiny_sd OUT --inpainting --seed 2``, run in this process."""
    monkeypatch.setattr(sys, "argv", ["tiny_sd", str(tmp_path / "cli"), "--inpainting", "--seed", "2"])
    # As in a fresh interpreter, the module is not imported yet when it starts as __main__.
    monkeypatch.delitem(sys.modules, "nnunet_synth.testing.tiny_sd")
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("nnunet_synth.testing.tiny_sd", run_name="__main__")
    assert exit_info.value.code == 0
    assert str(tmp_path / "cli") in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "unet" / "config.json").read_text())["in_channels"] == 9


# --- loading and prompts ---------------------------------------------------------------------------------------------

def test_tokenizer_encodes_the_prompts_offline(tiny_sd, offline):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd[4], subfolder="tokenizer", local_files_only=True)
    assert tokenizer.model_max_length == 77
    for prompt in PROMPTS:
        ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id
        # CLIP splits punctuation off words, so decoding puts a space before the comma.
        assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == prompt.lower().replace(" ", "")
        assert tokenizer.unk_token not in tokenizer.tokenize(prompt)
    assert len(tokenizer.tokenize("thyroid")) < len("thyroid"), "the merges make multi-character tokens"


def test_load_components_and_encode_prompts(tiny_sd, offline):
    import torch
    from diffusers import PNDMScheduler

    parts = load_sd_components(tiny_sd[9])
    assert isinstance(parts.scheduler, PNDMScheduler) and parts.unet.config.in_channels == 9
    assert len(parts.tokenizer) == parts.text_encoder.config.vocab_size
    assert not parts.unet.training and parts.unet.dtype == torch.float32
    embeddings = encode_prompts(parts.tokenizer, parts.text_encoder, PROMPTS, "cpu")
    assert embeddings.shape == (3, 77, 32) and not embeddings.requires_grad
    assert not torch.equal(embeddings[0], embeddings[1])
    assert torch.equal(encode_prompts(parts.tokenizer, parts.text_encoder, PROMPTS[:1], "cpu")[0], embeddings[0])

    only_vae = load_sd_components(tiny_sd[4], parts=("vae",), dtype=torch.float64)
    assert only_vae.vae.dtype == torch.float64 and only_vae.unet is None and only_vae.tokenizer is None


# --- folder checks ---------------------------------------------------------------------------------------------------

def _skeleton(root: Path) -> Path:
    """A folder with the files check_sd_folder looks for (empty weights: nothing here loads them)."""
    root.mkdir()
    (root / "model_index.json").write_text("{}")
    for part in ("unet", "vae", "text_encoder"):
        (root / part).mkdir()
        (root / part / "config.json").write_text("{}")
        (root / part / ("model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors")).touch()
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "tokenizer.json").write_text("{}")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text("{}")
    return root


def _error(path, **kwargs) -> str:
    with pytest.raises(SynthError) as info:
        check_sd_folder(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "hf download" in message and "--allow-download" in message
    return message


def test_check_sd_folder_names_what_is_missing(tmp_path):
    import shutil

    assert "does not exist" in _error(tmp_path / "nowhere")
    folder = _skeleton(tmp_path / "sd")
    assert check_sd_folder(folder) == folder

    (folder / "model_index.json").unlink()
    assert "model_index.json" in _error(folder)
    (folder / "model_index.json").write_text("{}")

    shutil.rmtree(folder / "unet")
    assert "has no unet/" in _error(folder)
    assert check_sd_folder(folder, parts=("vae", "tokenizer")) == folder, "only the parts asked for are checked"
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text("{}")
    assert "no weights in unet/" in _error(folder)
    (folder / "unet" / "diffusion_pytorch_model.bin").touch()
    assert check_sd_folder(folder) == folder

    (folder / "tokenizer" / "tokenizer.json").unlink()
    (folder / "tokenizer" / "vocab.json").write_text("{}")
    assert "tokenizer/" in _error(folder)
    (folder / "tokenizer" / "merges.txt").touch()
    assert check_sd_folder(folder) == folder

    (folder / "scheduler" / "scheduler_config.json").unlink()
    assert "scheduler/scheduler_config.json" in _error(folder)
    assert "stable-diffusion-inpainting" in _error(folder, hub_example="stable-diffusion-v1-5/stable-diffusion-inpainting")


def test_resolve_pretrained_refuses_the_hub_unless_allowed(tmp_path, tiny_sd):
    assert resolve_pretrained(tiny_sd[4]) == (str(tiny_sd[4]), True)
    with pytest.raises(SynthError, match="not a local folder and downloads are off.*--allow-download"):
        resolve_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert resolve_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5", allow_download=True) == \
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", False)
    with pytest.raises(SynthError, match="does not exist and is not a hub id"):
        resolve_pretrained(str(tmp_path / "missing" / "sd"), allow_download=True)
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(SynthError, match="has no unet/"):
        resolve_pretrained(tmp_path, allow_download=True)


def test_check_resolution():
    tiny_vae = SimpleNamespace(config=SimpleNamespace(block_out_channels=(32, 64)))        # downsamples by 2
    sd_vae = SimpleNamespace(config=SimpleNamespace(block_out_channels=(128, 256, 512, 512)))  # by 8
    assert check_resolution(tiny_vae, 64, "--resolution") == 64
    assert check_resolution(sd_vae, 520, "--resolution") == 520
    for bad in (63, 60, 0, -8):
        with pytest.raises(SynthError, match="--resolution") as info:
            check_resolution(tiny_vae, bad, "--resolution")
        assert "\n" not in str(info.value) and "multiple of 8" in str(info.value)
    with pytest.raises(SynthError, match="use e.g. 512 or 520"):
        check_resolution(sd_vae, 515, "--resolution")


# --- framing ---------------------------------------------------------------------------------------------------------

def _labels(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 3, shape) * (rng.random(shape) > 0.4)).astype(np.uint8)


@pytest.mark.parametrize("min_side,resolution", [(24, 24), (24, 48), (16, 64), (21, 63), (30, 90)])
def test_mask_round_trip_is_exact_for_integer_upscaling(min_side, resolution):
    mask = _labels((40, 56))
    for bbox in [(5, 5, 15, 12), (30, 45, 40, 56), (18, 20, 22, 30)]:
        frame = square_box_around(bbox, mask.shape, 1.2, min_side, resolution=resolution)
        model = to_model(mask, frame, order=0)
        assert model.shape == (resolution, resolution) and model.dtype == np.uint8
        y0, x0, y1, x1 = frame.inside
        assert np.array_equal(from_model(model, frame, order=0), mask[y0:y1, x0:x1])


def test_round_trip_through_padding_and_for_bool_masks():
    mask = _labels((20, 50)) > 0
    frame = full_frame(mask.shape, 100)
    assert frame.side == 50 and frame.padding == ((15, 15), (0, 0))
    model = to_model(mask, frame, order=0)
    assert model.dtype == bool and not model[:30].any() and not model[-30:].any(), "padding is fill (0)"
    assert np.array_equal(from_model(model, frame, order=0), mask)


def test_no_distortion_a_square_stays_a_square():
    mask = np.zeros((30, 80), np.uint8)
    mask[10:20, 40:50] = 1
    for frame in (full_frame(mask.shape, 64), square_box_around((10, 40, 20, 50), mask.shape, 3.0, 8, resolution=64)):
        y0, x0, y1, x1 = mask_bbox(to_model(mask, frame, order=0))
        assert y1 - y0 == x1 - x0


def test_square_box_around_keeps_the_box_and_shifts_or_pads_at_borders():
    shape = (60, 100)
    frame = square_box_around((0, 90, 10, 100), shape, 2.0, 8, resolution=64)
    assert frame.side == 20 and frame.box == (0, 80, 20, 100) and frame.padding == ((0, 0), (0, 0))
    frame = square_box_around((20, 20, 40, 30), shape, 2.0, 8, resolution=64)
    assert frame.side == 40 and frame.box == (10, 5, 50, 45)
    frame = square_box_around((20, 20, 40, 30), shape, 4.0, 8, resolution=64)   # side 80 > 60 rows: padded
    assert frame.side == 80 and (frame.y0, frame.y1) == (-10, 70) and frame.padding[0] == (10, 10)
    assert frame.x0 <= 20 and frame.x1 >= 30
    assert square_box_around((5, 5, 6, 6), shape, 1.5, 32, resolution=64).side == 32
    with pytest.raises(ValueError, match="context_factor"):
        square_box_around((5, 5, 6, 6), shape, 0.5, 8, resolution=64)
    with pytest.raises(ValueError, match="square"):
        Frame(0, 0, 10, 12, 64, shape)


def test_images_use_bilinear_and_keep_channels():
    image = np.linspace(-1, 1, 2 * 40 * 56, dtype=np.float32).reshape(2, 40, 56)
    frame = square_box_around((10, 10, 30, 30), image.shape[-2:], 1.5, 16, resolution=64)
    model = to_model(image, frame, order=1, fill=-1)
    assert model.shape == (2, 64, 64) and model.dtype == np.float32
    assert model.min() >= -1 and model.max() <= 1
    back = from_model(model, frame, order=1)
    y0, x0, y1, x1 = frame.inside
    assert np.abs(back - image[:, y0:y1, x0:x1]).max() < 0.02, "a smooth ramp survives up- and downsampling"


def test_paste_writes_only_where_the_mask_says():
    rng = np.random.default_rng(1)
    image = rng.uniform(-1, 1, (1, 40, 56)).astype(np.float32)
    original = image.copy()
    frame = square_box_around((30, 45, 40, 56), image.shape[-2:], 2.0, 8, resolution=32)
    patch = from_model(np.full((1, 32, 32), 5.0, np.float32), frame, order=1)
    where = np.zeros(patch.shape[-2:], bool)
    where[2:7, 3:9] = True
    assert paste(image, patch, frame, where) is image
    y0, x0, _, _ = frame.inside
    changed = np.zeros(image.shape[-2:], bool)
    changed[y0 + 2:y0 + 7, x0 + 3:x0 + 9] = True
    assert np.array_equal(image[:, ~changed], original[:, ~changed])
    assert np.all(image[:, changed] == 5.0)
    with pytest.raises(ValueError, match="where_mask"):
        paste(image, patch, frame, where.astype(np.uint8))
    with pytest.raises(ValueError, match="cannot paste"):
        paste(np.zeros((40, 56), np.uint8), patch[0], frame, where)
