"""``ControlNetGenerator``: DiffBoost's twins, new appearances for the same mask, from a ControlNet on SD 1.x.

Generation of one twin (``--mode twins``):

1. **Frame** the whole source image: padded to a square and resized to
   ``--resolution`` (384 by default), never stretched (``sd.framing.full_frame``).
2. **Condition** on the edge map of the framed image plus its mask's boundary,
   by the rule recorded at fit time (``controlnet.edges``).
3. **Text**: DiffBoost's mixed embedding,
   ``w_p E(prompt + ", best quality, extremely detailed") + w_a E(augmentation
   phrase) + w_s E("gray, sketch")`` (0.045, 0.005, 0.95 by default), with
   Stable Diffusion's usual negative prompt and guidance 9. The augmentation
   phrase is drawn per twin from its seed; both are recorded in the manifest.
   Each distinct text's embedding is computed once.
4. **Sample** with diffusers' ``StableDiffusionControlNetPipeline`` (DDIM, 20
   steps by default), then undo the framing; grayscale data take the mean of
   the RGB channels.

The mask is the source's own (a twin).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import Generator, GenerationRequest, GenerationResponse, TrainingCase
from nnunet_synth.generators.controlnet import folder
from nnunet_synth.generators.controlnet.settings import (QUALITY_SUFFIX, STYLE_PROMPT, ControlNetFitOptions,
                                                         ControlNetGenerateOptions)


class ControlNetGenerator(Generator):
    """DiffBoost: a ControlNet on a frozen Stable Diffusion 1.x, conditioned on edges plus the mask boundary and text."""

    name = "controlnet"
    supported_modes = ("twins",)
    uses_prompt = True
    fit_settings = ControlNetFitOptions
    generate_settings = ControlNetGenerateOptions

    def __init__(self, config: dict, device: str, model_dir: Path):
        self.config = config
        self.device = device
        self.model_dir = Path(model_dir)
        self.pipeline = None
        self.detector = None
        self._embeddings: dict[str, object] = {}
        self._scheduler_name = None
        self._usage = None

    @classmethod
    def fit(cls, cases: list[TrainingCase], labels: list[int], model_dir: Path,
            settings: ControlNetFitOptions) -> None:
        from nnunet_synth.generators.controlnet.train import fit_model

        fit_model(cases, labels, Path(model_dir), settings)

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> "ControlNetGenerator":
        """The model's config; the pipeline is built by check_settings (which may name another SD folder)."""
        return cls(folder.read_config(Path(model_dir)), device, Path(model_dir))

    def model_labels(self) -> list[int]:
        return list(self.config["labels"])

    def check_settings(self, settings: ControlNetGenerateOptions) -> ControlNetGenerateOptions:
        from nnunet_synth.generators.controlnet.edges import EdgeDetector
        from nnunet_synth.generators.sd.loading import check_resolution

        if settings.steps < 1:
            raise SynthError(f"--steps must be at least 1, got {settings.steps}")
        if not settings.augmentations:
            raise SynthError("--augmentations needs at least one phrase")
        weights = (settings.prompt_weight, settings.augmentation_weight, settings.style_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise SynthError(f"the embedding weights must be non-negative with a positive sum, got {weights}")
        if settings.half and not str(self.device).startswith("cuda"):
            raise SynthError("--half needs a GPU (fp16 inference on the CPU is not supported)")
        if self.pipeline is None:
            self._build_pipeline(settings)
            self.detector = EdgeDetector(self.config["edge_rule"])
        check_resolution(self.pipeline.vae, settings.resolution, "--resolution")
        self._set_scheduler(settings.scheduler)
        return settings

    def _build_pipeline(self, settings: ControlNetGenerateOptions) -> None:
        import torch
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

        from nnunet_synth.generators.controlnet.train import check_compatible
        from nnunet_synth.generators.sd.loading import load_base_for_generation

        base, parts, dtype = load_base_for_generation(self.config, settings.pretrained, settings.half, self.device)
        controlnet = ControlNetModel.from_pretrained(str(self.model_dir / folder.CONTROLNET_DIR), local_files_only=True)
        check_compatible(controlnet, parts.unet, f"{self.model_dir / folder.CONTROLNET_DIR} with {base}")
        if dtype != torch.float32:
            controlnet = controlnet.to(dtype=dtype)
        pipeline = StableDiffusionControlNetPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
            controlnet=controlnet.to(self.device).eval(), scheduler=parts.scheduler, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline

    def _set_scheduler(self, name: str) -> None:
        from nnunet_synth.generators.sd.loading import make_sampler

        if name != self._scheduler_name:
            self.pipeline.scheduler = make_sampler(name, self.pipeline.scheduler.config)
            self._scheduler_name = name

    def _embedding(self, text: str):
        if text not in self._embeddings:
            from nnunet_synth.generators.sd.loading import encode_prompts

            encoder = self.pipeline.text_encoder
            self._embeddings[text] = encode_prompts(self.pipeline.tokenizer, encoder, [text], encoder.device)
        return self._embeddings[text]

    def mixed_embedding(self, prompt: str, augmentation: str, settings: ControlNetGenerateOptions):
        """DiffBoost's sampling embedding: a weighted sum of three prompts' CLIP embeddings."""
        return (settings.prompt_weight * self._embedding(prompt + QUALITY_SUFFIX)
                + settings.augmentation_weight * self._embedding(augmentation)
                + settings.style_weight * self._embedding(STYLE_PROMPT))

    def generate(self, request: GenerationRequest) -> GenerationResponse:
        import torch

        from nnunet_synth.generators.controlnet.train import framed
        from nnunet_synth.generators.sd.framing import from_model, full_frame
        from nnunet_synth.generators.sd.training import check_source_case

        settings, source = request.settings, request.source
        check_source_case(source, self.config["image_channels"], "controlnet")
        mask = np.asarray(request.target_mask)
        rgb, framed_mask = framed(source.image, mask, settings.resolution)
        condition = self.detector((rgb + 1) / 2, framed_mask)
        prompt = request.prompt or self.config["captions"].get(source.case_id) or self.config["prompt"]
        if not prompt:
            raise SynthError(f"case {source.case_id} has no prompt (it was not a training case and the model has "
                             f"no default --prompt); give --prompt")
        rng = np.random.default_rng(request.seed)
        augmentation = settings.augmentations[int(rng.integers(len(settings.augmentations)))]
        dtype = self.pipeline.unet.dtype
        embeds = self.mixed_embedding(prompt, augmentation, settings).to(dtype)
        negative = self._embedding(settings.negative_prompt).to(dtype)
        generator = torch.Generator(device="cpu").manual_seed(int(request.seed) % 2 ** 63)
        if self._usage is None:
            from nnunet_synth.generators.sd.usage import Usage

            self._usage = Usage(self.device, "image")
        with torch.no_grad(), self._usage.measure():
            out = self.pipeline(
                prompt_embeds=embeds, negative_prompt_embeds=negative,
                image=torch.from_numpy(np.ascontiguousarray(condition[None])).to(dtype),
                height=settings.resolution, width=settings.resolution, num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale, controlnet_conditioning_scale=settings.conditioning_scale,
                generator=generator, output_type="np").images[0]          # (R, R, 3) in [0, 1]
        painted = np.moveaxis(out.astype(np.float32), -1, 0) * 2 - 1
        if source.image.shape[0] == 1:
            painted = painted.mean(axis=0, keepdims=True)
        image = from_model(painted, full_frame(mask.shape, settings.resolution), order=1)
        extras = {"augmentation": augmentation, "edge_rule": self.config["edge_rule"],
                  "resolution": settings.resolution,
                  "embedding_weights": {"prompt": settings.prompt_weight, "augmentation": settings.augmentation_weight,
                                        "style": settings.style_weight}}
        return GenerationResponse(image=np.clip(image, -1, 1).astype(np.float32), mask=mask, extras=extras,
                                  prompt=prompt)

    def summary(self) -> str | None:
        """The pipeline's time per image, and its peak GPU memory on CUDA."""
        return None if self._usage is None else self._usage.line()
