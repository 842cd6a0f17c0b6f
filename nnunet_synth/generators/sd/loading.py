"""Loading Stable Diffusion 1.x components from a local diffusers folder.

A folder is what ``hf download stable-diffusion-v1-5/stable-diffusion-v1-5
--local-dir DIR`` writes: ``model_index.json`` and one subfolder per
component. It is checked before anything loads, so a missing part fails as one
line naming the folder and the part. A hub id is used only when the caller
allows downloads; otherwise everything loads with ``local_files_only=True``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnunet_synth.errors import SynthError

if TYPE_CHECKING:
    import torch

SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DEFAULT_HUB_EXAMPLE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# One stored weights file is enough; from_pretrained picks among them.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".index.json")
# A hub id is "name" or "owner/name"; anything else (absolute, ./, ~, two slashes) is meant as a path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def download_hint(hub_example: str = DEFAULT_HUB_EXAMPLE) -> str:
    return (f"download a Stable Diffusion 1.x folder, e.g. `hf download {hub_example} --local-dir DIR`, "
            f"or pass --allow-download to fetch a hub id")


def _part_problem(folder: Path, part: str) -> str | None:
    """What ``folder/part`` lacks, or None when it is complete."""
    sub = folder / part
    if part == "tokenizer":
        expected = "tokenizer/vocab.json and merges.txt, or tokenizer/tokenizer.json"
        if not sub.is_dir():
            return f"has no tokenizer/ (expected {expected})"
        if not ((sub / "vocab.json").is_file() and (sub / "merges.txt").is_file()) and not (sub / "tokenizer.json").is_file():
            return f"has an incomplete tokenizer/ (expected {expected})"
        return None
    config = "scheduler_config.json" if part == "scheduler" else "config.json"
    if not sub.is_dir():
        return f"has no {part}/ (expected {part}/{config}" + (")" if part == "scheduler" else " and weights)")
    if not (sub / config).is_file():
        return f"has no {part}/{config}"
    if part != "scheduler" and not any(p.name.endswith(WEIGHT_SUFFIXES) for p in sub.iterdir() if p.is_file()):
        return f"has no weights in {part}/ (expected e.g. {part}/*.safetensors)"
    return None


def check_sd_folder(path: str | os.PathLike, parts: tuple[str, ...] = SD_PARTS,
                    hub_example: str = DEFAULT_HUB_EXAMPLE) -> Path:
    """``path`` as a Path if it is a diffusers SD folder with every one of ``parts``; SynthError otherwise."""
    folder = Path(path).expanduser()
    hint = download_hint(hub_example)
    if not folder.exists():
        raise SynthError(f"SD folder {folder} does not exist; {hint}")
    if not folder.is_dir():
        raise SynthError(f"{folder} is a file, not an SD folder; {hint}")
    if not (folder / "model_index.json").is_file():
        raise SynthError(f"SD folder {folder} has no model_index.json (not a diffusers pipeline folder); {hint}")
    for part in parts:
        problem = _part_problem(folder, part)
        if problem is not None:
            raise SynthError(f"SD folder {folder} {problem}; {hint}")
    return folder


def resolve_pretrained(name_or_path: str | os.PathLike, allow_download: bool = False,
                       parts: tuple[str, ...] = SD_PARTS,
                       hub_example: str = DEFAULT_HUB_EXAMPLE) -> tuple[str, bool]:
    """``(what to pass to from_pretrained, local_files_only)``.

    An existing folder is checked and loaded locally. Anything else is a hub id
    only when ``allow_download`` is set and it looks like one.
    """
    name = str(name_or_path)
    if Path(name).expanduser().exists():
        return str(check_sd_folder(name, parts, hub_example)), True
    if not allow_download:
        raise SynthError(f"{name} is not a local folder and downloads are off; {download_hint(hub_example)}")
    if not HUB_ID.match(name):
        raise SynthError(f"{name} does not exist and is not a hub id (OWNER/NAME); {download_hint(hub_example)}")
    return name, False


@dataclass
class SDComponents:
    """The loaded parts; a part that was not asked for is None."""
    tokenizer: Any = None
    text_encoder: Any = None
    vae: Any = None
    unet: Any = None
    scheduler: Any = None


def load_sd_components(name_or_path: str | os.PathLike, allow_download: bool = False, dtype=None,
                       device: str = "cpu", parts: tuple[str, ...] = SD_PARTS,
                       hub_example: str = DEFAULT_HUB_EXAMPLE) -> SDComponents:
    """Load ``parts`` of an SD folder (or, with ``allow_download``, a hub id) onto ``device``.

    The models are loaded in float32 and then cast to ``dtype`` (if given), which
    works the same across diffusers and transformers versions. The scheduler is
    the class named in its ``scheduler_config.json``.
    """
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unknown = sorted(set(parts) - set(SD_PARTS))
    if unknown:
        raise ValueError(f"unknown SD parts {unknown}; choose from {SD_PARTS}")
    source, local_only = resolve_pretrained(name_or_path, allow_download, parts, hub_example)
    out = SDComponents()

    def model(cls, part):
        m = cls.from_pretrained(source, subfolder=part, local_files_only=local_only).to(device=device)
        if dtype is not None and m.dtype != dtype:
            m = m.to(dtype=dtype)
        return m.eval()

    if "tokenizer" in parts:
        out.tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_only)
    if "text_encoder" in parts:
        out.text_encoder = model(CLIPTextModel, "text_encoder")
    if "vae" in parts:
        out.vae = model(AutoencoderKL, "vae")
    if "unet" in parts:
        out.unet = model(UNet2DConditionModel, "unet")
    if "scheduler" in parts:
        config = diffusers.DDPMScheduler.load_config(source, subfolder="scheduler", local_files_only=local_only)
        scheduler_class = getattr(diffusers, config.get("_class_name", ""), None)
        if scheduler_class is None:
            raise SynthError(f"{source}: scheduler/scheduler_config.json names {config.get('_class_name')!r}, "
                             f"which is not a diffusers scheduler")
        out.scheduler = scheduler_class.from_config(config)
    return out


def encode_prompts(tokenizer, text_encoder, prompts: list[str], device) -> torch.Tensor:
    """CLIP embeddings ``(len(prompts), max_length, width)`` as the SD pipelines compute them, without gradients."""
    import torch

    tokens = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                       truncation=True, return_tensors="pt")
    attention_mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        attention_mask = tokens.attention_mask.to(device)
    with torch.no_grad():
        return text_encoder(tokens.input_ids.to(device), attention_mask=attention_mask)[0]


def resolution_factor(vae) -> int:
    """What a resolution must be a multiple of: the VAE's downsampling, and at least 8.

    8 because diffusers' StableDiffusionPipeline and ControlNet pipelines refuse
    heights and widths that are not multiples of 8, whatever the VAE.
    """
    return max(8, 2 ** (len(vae.config.block_out_channels) - 1))


def check_resolution(vae, resolution: int, where: str) -> int:
    """``resolution`` if it is a positive multiple of :func:`resolution_factor`; a one-line SynthError naming ``where`` otherwise."""
    factor = resolution_factor(vae)
    if not isinstance(resolution, int) or resolution <= 0 or resolution % factor:
        lower = max(factor, (resolution // factor) * factor) if isinstance(resolution, int) else factor
        raise SynthError(f"{where} {resolution}: the resolution must be a positive multiple of {factor} "
                         f"(the VAE downsamples by {2 ** (len(vae.config.block_out_channels) - 1)}); "
                         f"use e.g. {lower} or {lower + factor}")
    return resolution


def make_sampler(name: str, scheduler_config):
    """``ddim``, ``pndm`` or ``dpm`` (DDIM, PNDM, DPM-Solver++ multistep) built from a pipeline's scheduler config."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

    classes = {"ddim": DDIMScheduler, "pndm": PNDMScheduler, "dpm": DPMSolverMultistepScheduler}
    if name not in classes:
        raise SynthError(f"unknown sampler {name!r}; choose from {', '.join(classes)}")
    return classes[name].from_config(scheduler_config)


def load_base_for_generation(config: dict, pretrained: str | None, half: bool, device: str,
                             parts: tuple[str, ...] = SD_PARTS):
    """(the base SD folder, its loaded ``parts``, the pipeline dtype) for a fine-tuned model's ``config.json``.

    ``pretrained`` (``generate --pretrained``) replaces the recorded base folder; a hub id is
    fetched only if the model was fitted with ``--allow-download``.
    """
    import torch

    dtype = torch.float16 if half else torch.float32
    base = pretrained or config["pretrained"]
    loaded = load_sd_components(base, allow_download=bool(config["settings"].get("allow_download")), dtype=dtype,
                                device=device, parts=parts)
    return base, loaded, dtype
