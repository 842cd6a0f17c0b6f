"""``SDInpaintGenerator``: new lesions inpainted into real 2D images with a fine-tuned Stable Diffusion.

Generation of one case (``--mode inpaint``):

1. **Place** a new lesion (``nnunet_synth.generators.sd.placement``): a shape
   from the model's lesion bank (another training case's lesion, deformed and
   scaled to the training lesions' sizes), inside the imaged region (or
   ``--region-label``), away from the border and from existing lesions.
2. **Frame** a square window around it, ``context`` times its larger side,
   and resize it to the model resolution (``sd.framing``; padded, never
   stretched). Grayscale is repeated to RGB.
3. **Inpaint** the window with diffusers' ``StableDiffusionInpaintPipeline``:
   the repainted region is the new lesion dilated by ``mask_dilation`` px at
   model resolution, minus the existing lesions. The pipeline blends latents
   itself for a 4-channel UNet and feeds mask latents to a 9-channel one.
4. **Paste** the result back (channel mean for grayscale), only inside the
   repainted region: every other pixel is the source's, exactly.

The final mask is the source mask with the new lesion's pixels set to the
lesion label; ``changed`` is the repainted region.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import Generator, GenerationRequest, GenerationResponse, TrainingCase
from nnunet_synth.generators.sd_inpaint import folder
from nnunet_synth.generators.sd_inpaint.settings import MIN_WINDOW_PX, SDInpaintFitOptions, SDInpaintGenerateOptions


class SDInpaintGenerator(Generator):
    """Stable Diffusion 1.x fine-tuned on lesion crops; inserts new lesions into real images by inpainting."""

    name = "sd-inpaint"
    supported_modes = ("inpaint",)
    uses_prompt = True
    fit_settings = SDInpaintFitOptions
    generate_settings = SDInpaintGenerateOptions

    def __init__(self, config: dict, pipeline, bank, device: str, model_dir: Path):
        self.config = config
        self.pipeline = pipeline
        self.bank = bank
        self.device = device
        self.model_dir = Path(model_dir)
        self._embeddings: dict[tuple[str, str], tuple] = {}
        self._scheduler_name = None
        self._usage = None

    @classmethod
    def fit(cls, cases: list[TrainingCase], labels: list[int], model_dir: Path, settings: SDInpaintFitOptions) -> None:
        from nnunet_synth.generators.sd_inpaint.train import fit_model

        fit_model(cases, labels, Path(model_dir), settings)

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> "SDInpaintGenerator":
        """The model's config and lesion bank; the pipeline is built by check_settings (it may name the SD folder)."""
        from nnunet_synth.generators.sd.placement import BANK_FILE, LesionBank

        model_dir = Path(model_dir)
        config = folder.read_config(model_dir)
        bank = LesionBank.load(model_dir / BANK_FILE)
        return cls(config, None, bank, device, model_dir)

    def _build_pipeline(self, settings: SDInpaintGenerateOptions) -> None:
        import torch
        from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

        from nnunet_synth.generators.sd.loading import load_base_for_generation

        # the base folder's UNet is not loaded: the fine-tuned one takes its place
        base, parts, dtype = load_base_for_generation(self.config, settings.pretrained, settings.half, self.device,
                                                      parts=("tokenizer", "text_encoder", "vae", "scheduler"))
        unet = UNet2DConditionModel.from_pretrained(str(self.model_dir / folder.UNET_DIR), local_files_only=True)
        if unet.config.in_channels != self.config["unet_in_channels"]:
            raise SynthError(f"{self.model_dir / folder.UNET_DIR} has {unet.config.in_channels} input channels, "
                             f"config.json says {self.config['unet_in_channels']}; {folder.fit_hint(self.model_dir)}")
        if unet.config.cross_attention_dim != parts.text_encoder.config.hidden_size:
            raise SynthError(f"{self.model_dir / folder.UNET_DIR} expects text features of width "
                             f"{unet.config.cross_attention_dim}, but the text encoder of {base} gives "
                             f"{parts.text_encoder.config.hidden_size}: not the SD folder it was fine-tuned from")
        pipeline = StableDiffusionInpaintPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
            unet=(unet if dtype == torch.float32 else unet.to(dtype=dtype)).to(self.device).eval(),
            scheduler=parts.scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline

    def model_labels(self) -> list[int]:
        return list(self.config["labels"])

    def check_settings(self, settings: SDInpaintGenerateOptions) -> SDInpaintGenerateOptions:
        """Options left at None take the model's values; the pipeline is built once, here."""
        from nnunet_synth.generators.sd.loading import check_resolution

        settings = replace(settings,
                           resolution=settings.resolution or self.config["resolution"],
                           context=settings.context or self.config["context"],
                           mask_dilation=(self.config["mask_dilation"] if settings.mask_dilation is None
                                          else settings.mask_dilation))
        if settings.steps < 1:
            raise SynthError(f"--steps must be at least 1, got {settings.steps}")
        if settings.context < 1:
            raise SynthError(f"--context must be at least 1 (the window holds the lesion), got {settings.context}")
        if settings.mask_dilation < 0:
            raise SynthError(f"--mask-dilation must be at least 0, got {settings.mask_dilation}")
        if settings.half and not str(self.device).startswith("cuda"):
            raise SynthError("--half needs a GPU (fp16 inference on the CPU is not supported)")
        if settings.region_label is not None and settings.region_label not in self.model_labels():
            raise SynthError(f"--region-label {settings.region_label} is not a label of the model "
                             f"({self.model_labels()})")
        if self.pipeline is None:
            self._build_pipeline(settings)
        check_resolution(self.pipeline.vae, settings.resolution, "--resolution")
        self._set_scheduler(settings.scheduler)
        return settings

    def _set_scheduler(self, name: str) -> None:
        from nnunet_synth.generators.sd.loading import make_sampler

        if name != self._scheduler_name:
            self.pipeline.scheduler = make_sampler(name, self.pipeline.scheduler.config)
            self._scheduler_name = name

    def _prompt_embeddings(self, prompt: str, negative: str):
        """(prompt, negative) CLIP embeddings, computed once per pair of texts."""
        key = (prompt, negative)
        if key not in self._embeddings:
            from nnunet_synth.generators.sd.loading import encode_prompts

            encoder = self.pipeline.text_encoder
            embeds = encode_prompts(self.pipeline.tokenizer, encoder, [prompt, negative], encoder.device)
            self._embeddings[key] = (embeds[:1], embeds[1:])
        return self._embeddings[key]

    def generate(self, request: GenerationRequest) -> GenerationResponse:
        import torch
        from scipy import ndimage

        from nnunet_synth.generators.sd.framing import from_model, mask_bbox, square_box_around, to_model
        from nnunet_synth.generators.sd.placement import place_lesion
        from nnunet_synth.generators.sd.training import check_source_case

        settings = request.settings
        source = request.source
        check_source_case(source, self.config["image_channels"], "sd-inpaint")
        label = int(self.config["label"])
        margins = {k: getattr(settings, k) for k in ("border_margin_mm", "lesion_margin_mm")
                   if getattr(settings, k) is not None}
        placement = place_lesion(source.image[0], source.seg, source.spacing, self.bank, source.case_id,
                                 request.seed, region_label=settings.region_label, label=label, **margins)
        if placement is None:
            raise SynthError(f"case {source.case_id}: no room for a new lesion inside the imaged region (see "
                             f"docs/lesion_placement.md); leave the case out with --cases, or lower "
                             f"--border-margin-mm / --lesion-margin-mm")
        shape = source.seg.shape
        frame = square_box_around(mask_bbox(placement.mask), shape, settings.context,
                                  min(MIN_WINDOW_PX, max(shape)), resolution=settings.resolution)
        image = to_model(source.image, frame, order=1, fill=-1.0).astype(np.float32)
        rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
        lesion_window = to_model(placement.mask, frame, order=0)
        repaint = ndimage.binary_dilation(lesion_window, iterations=settings.mask_dilation) \
            if settings.mask_dilation > 0 else lesion_window
        keep = to_model(self._protected(source.seg, settings.region_label), frame, order=0)
        repaint = repaint & ~keep
        prompt = request.prompt or self.config["prompt"]
        embeds, negative = self._prompt_embeddings(prompt, settings.negative_prompt)
        dtype = self.pipeline.unet.dtype
        generator = torch.Generator(device="cpu").manual_seed(int(request.seed) % 2 ** 63)
        if self._usage is None:
            from nnunet_synth.generators.sd.usage import Usage

            self._usage = Usage(self.device, "image")
        with torch.no_grad(), self._usage.measure():
            out = self.pipeline(
                prompt_embeds=embeds.to(dtype), negative_prompt_embeds=negative.to(dtype),
                image=torch.from_numpy((rgb[None] + 1) / 2).to(dtype),
                mask_image=torch.from_numpy(repaint[None, None].astype(np.float32)).to(dtype),
                height=settings.resolution, width=settings.resolution, strength=1.0,
                num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                generator=generator, output_type="np").images[0]        # (R, R, 3) in [0, 1]
        painted = np.moveaxis(out.astype(np.float32), -1, 0) * 2 - 1
        if source.image.shape[0] == 1:
            painted = painted.mean(axis=0, keepdims=True)
        # Back to the window and into the image, only where the region was repainted (source pixels elsewhere).
        window = from_model(painted, frame, order=1)
        region = from_model(repaint, frame, order=0)
        iy0, ix0, iy1, ix1 = frame.inside
        changed = np.zeros(shape, dtype=bool)
        changed[iy0:iy1, ix0:ix1] = region
        result = source.image.astype(np.float32).copy()
        result[:, iy0:iy1, ix0:ix1][:, region] = np.clip(window[:, region], -1, 1)
        lesion = placement.mask & changed
        mask = np.where(lesion, label, source.seg).astype(source.seg.dtype)
        extras = {"placement": placement.info, "window": list(frame.box), "resolution": settings.resolution,
                  "repainted_pixels": int(changed.sum()), "lesion_pixels": int(lesion.sum())}
        return GenerationResponse(image=result, mask=mask, changed=changed, extras=extras,
                                  prompt=prompt)

    @staticmethod
    def _protected(seg: np.ndarray, region_label: int | None) -> np.ndarray:
        """Pixels that must not be repainted: every existing lesion (the region label is not a lesion)."""
        lesions = seg != 0
        if region_label is not None:
            lesions &= seg != region_label
        return lesions

    def summary(self) -> str | None:
        """The pipeline's time per image, and its peak GPU memory on CUDA."""
        return None if self._usage is None else self._usage.line()
