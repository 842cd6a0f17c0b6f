"""``MedDiffFTGenerator``: new image-mask pairs on lesion-free backgrounds (``--mode new``).

One case (source case S, seed):

1. **Background.** S itself if it has no lesion; else an image of
   ``--backgrounds`` (drawn by the seed, resized to S's shape); else S with its
   lesions repaired by the background model (guided synthesis inside the
   lesions, dilated by ``restore_dilation`` px, with the background prompt).
   Without any of these the case is refused.
2. **Mask.** A shape from the mask DDPM (cleaned: ``mask_model.clean_mask``),
   or, without one, a training shape from the lesion bank; scaled to an area
   drawn from the training lesions' areas and placed inside the background's
   imaged region (``sd.placement.place_lesion``: the SD placement rule).
3. **Guided synthesis** (``guided.guided_synthesis``) in a square window
   ``context`` times the new lesion's larger side, at the model resolution,
   with the lesion fine-tune and the trigger prompt. The window's generated
   region (the final blend mask) is pasted into the background; every other
   pixel is the background's.
4. **Filter** (with ``--filter-model``): the window's DINOv2 similarity to
   the nearest real lesion window must lie in the band (``quality_filter``).
5. **Erosion** of the lesion mask (``erosion``); a lesion that would vanish
   is written uneroded and dropped (``kept: false``, the reason in the extras).

The final mask is the background's labels (S's without its lesions when
restored, none for an image of ``--backgrounds``) plus the new lesion.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import Generator, GenerationRequest, GenerationResponse, TrainingCase
from nnunet_synth.generators.meddiff_ft import folder
from nnunet_synth.generators.meddiff_ft.settings import MedDiffFTFitOptions, MedDiffFTGenerateOptions


class MedDiffFTGenerator(Generator):
    """MedDiff-FT: masked-loss SD inpainting fine-tune, guided-mask synthesis, mask DDPM, background model,
    DINOv2 filter, mask erosion."""

    name = "meddiff-ft"
    supported_modes = ("new",)
    draws_masks = True
    uses_prompt = True
    fit_settings = MedDiffFTFitOptions
    generate_settings = MedDiffFTGenerateOptions

    def __init__(self, config: dict, bank, device: str, model_dir: Path):
        self.config = config
        self.bank = bank
        self.device = device
        self.model_dir = Path(model_dir)
        self.pipeline = None
        self.background_pipeline = None
        self.masks = None
        self.filter = None            # (model, processor, real features, real case ids, band, calibration)
        self._embeddings: dict = {}
        self._scheduler_name = None
        self._usage = None
        self._backgrounds: list | None = None

    # -- fit and load ----------------------------------------------------------------
    @classmethod
    def fit(cls, cases: list[TrainingCase], labels: list[int], model_dir: Path, settings: MedDiffFTFitOptions) -> None:
        from nnunet_synth.generators.meddiff_ft.train import fit_model

        fit_model(cases, labels, Path(model_dir), settings)

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> "MedDiffFTGenerator":
        from nnunet_synth.generators.sd.placement import BANK_FILE, LesionBank

        model_dir = Path(model_dir)
        config = folder.read_config(model_dir)
        if config["parts"]["background"]:
            folder.BACKGROUND.read_config(model_dir / folder.BACKGROUND_DIR)
        if config["parts"]["mask"]:
            folder.read_mask_config(model_dir / folder.MASK_DIR)
        return cls(config, LesionBank.load(model_dir / BANK_FILE), device, model_dir)

    def model_labels(self) -> list[int]:
        return list(self.config["labels"])

    # -- settings and the pipelines --------------------------------------------------
    def check_settings(self, settings: MedDiffFTGenerateOptions) -> MedDiffFTGenerateOptions:
        from nnunet_synth.generators.meddiff_ft import erosion
        from nnunet_synth.generators.meddiff_ft.quality_filter import check_band
        from nnunet_synth.generators.sd.loading import check_resolution

        settings = replace(settings, resolution=settings.resolution or self.config["resolution"],
                           context=settings.context or self.config["context"])
        for name in ("steps", "mask_sampling_steps", "mask_tries", "min_mask_pixels"):
            if getattr(settings, name) < 1:
                raise SynthError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(settings, name)}")
        for name in ("mask_dilation_start", "repaint_jumps", "restore_dilation"):
            if getattr(settings, name) < 0:
                raise SynthError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(settings, name)}")
        for name in ("tighten_until", "repaint_until"):
            if not 0 <= getattr(settings, name) <= 1:
                raise SynthError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(settings, name)}")
        if settings.context < 1:
            raise SynthError(f"--context must be at least 1 (the window holds the lesion), got {settings.context}")
        if settings.repaint_jumps and settings.scheduler != "ddim":
            raise SynthError("--repaint-jumps needs --scheduler ddim (its step keeps no state between calls)")
        if settings.half and not str(self.device).startswith("cuda"):
            raise SynthError("--half needs a GPU (fp16 inference on the CPU is not supported)")
        if settings.filter_band is not None:
            check_band(settings.filter_band)
            if settings.filter_model is None:
                raise SynthError("--filter-band needs --filter-model DINO_DIR (the features it is measured in)")
        self._check_erosion(settings, erosion)
        if settings.backgrounds is not None:
            self._backgrounds = self._background_files(Path(settings.backgrounds))
        elif not self.config["parts"]["background"] and not self.config["healthy_training_cases"]:
            raise SynthError(f"meddiff-ft needs lesion-free backgrounds: the model {self.model_dir} has no background "
                             f"model (fitted with --no-background-model) and its training set no label-free case; "
                             f"give --backgrounds DIR with lesion-free images, or refit with the background model")
        if self.pipeline is None:
            self._build_pipelines(settings)
        check_resolution(self.pipeline.vae, settings.resolution, "--resolution")
        self._set_scheduler(settings.scheduler)
        if settings.filter_model is not None and self.filter is None:
            self._build_filter(settings)
        return settings

    def _check_erosion(self, settings, erosion) -> None:
        """A kernel at least as large as the largest training lesion would erase every lesion: refused."""
        largest = float(self.config["largest_lesion_radius_px"])
        spacing = min((e.spacing for e in self.bank.entries), key=lambda s: min(s))
        ry, rx = erosion.radii(settings.erosion_px, settings.erosion_mm, spacing)
        if min(ry, rx) >= largest:
            what = f"{settings.erosion_mm} mm" if settings.erosion_mm is not None else f"{settings.erosion_px} px"
            raise SynthError(f"erosion kernel {what} is larger than the lesions: the largest training lesion has an "
                             f"inscribed radius of {largest:.1f} px, so every mask would vanish; choose a smaller "
                             f"--erosion-px / --erosion-mm")

    def _background_files(self, path: Path) -> list[list[Path]]:
        if not path.is_dir():
            raise SynthError(f"--backgrounds {path} is not a folder")
        channels = self.config["image_channels"]
        first = sorted(path.glob("*_0000.*"))
        groups = []
        for f in first:
            stem, ending = f.name[:-len("_0000" + "".join(f.suffixes))], "".join(f.suffixes)
            files = [path / f"{stem}_{c:04d}{ending}" for c in range(channels)]
            missing = [p for p in files if not p.is_file()]
            if missing:
                raise SynthError(f"--backgrounds {path}: {missing[0].name} is missing (the model takes {channels} "
                                 f"channel(s) per image)")
            groups.append(files)
        if not groups:
            raise SynthError(f"--backgrounds {path} holds no images named NAME_0000.<ending>")
        return groups

    def _build_pipelines(self, settings) -> None:
        import torch
        from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

        from nnunet_synth.generators.sd.loading import load_base_for_generation

        base, parts, dtype = load_base_for_generation(self.config, settings.pretrained, settings.half, self.device,
                                                      parts=("tokenizer", "text_encoder", "vae", "scheduler"))

        def pipeline(unet_dir: Path):
            unet = UNet2DConditionModel.from_pretrained(str(unet_dir), local_files_only=True)
            if unet.config.in_channels != 9:
                raise SynthError(f"{unet_dir} has {unet.config.in_channels} input channels; guided-mask synthesis "
                                 f"needs a 9-channel inpainting UNet; {folder.fit_hint(self.model_dir)}")
            if unet.config.cross_attention_dim != parts.text_encoder.config.hidden_size:
                raise SynthError(f"{unet_dir} expects text features of width {unet.config.cross_attention_dim}, but "
                                 f"the text encoder of {base} gives {parts.text_encoder.config.hidden_size}: not "
                                 f"the SD folder it was fine-tuned from")
            out = StableDiffusionInpaintPipeline(
                vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                unet=(unet if dtype == torch.float32 else unet.to(dtype=dtype)).to(self.device).eval(),
                scheduler=parts.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            out.set_progress_bar_config(disable=True)
            return out

        self.pipeline = pipeline(self.model_dir / folder.UNET_DIR)
        if self.config["parts"]["background"]:
            self.background_pipeline = pipeline(self.model_dir / folder.BACKGROUND_DIR / folder.UNET_DIR)
        if self.config["parts"]["mask"]:
            from nnunet_synth.generators.meddiff_ft.mask_model import MaskGenerator

            self.masks = MaskGenerator(self.model_dir / folder.MASK_DIR, self.device)

    def _set_scheduler(self, name: str) -> None:
        from nnunet_synth.generators.sd.loading import make_sampler

        if name != self._scheduler_name:
            for pipe in (self.pipeline, self.background_pipeline):
                if pipe is not None:
                    pipe.scheduler = make_sampler(name, pipe.scheduler.config)
            self._scheduler_name = name

    def _build_filter(self, settings) -> None:
        from nnunet_synth.generators.meddiff_ft import quality_filter as qf

        model, processor = qf.load_dinov2(settings.filter_model, self.device)
        with np.load(self.model_dir / folder.REFERENCES_FILE, allow_pickle=False) as data:
            windows, case_ids = data["windows"], [str(c) for c in data["case_ids"]]
        real = qf.features(model, processor, windows)
        calibration = {"percentiles": list(settings.filter_percentiles), "reference_windows": len(real)}
        if settings.filter_band is not None:
            band = qf.check_band(settings.filter_band)
            calibration["given"] = True
        else:
            values = qf.real_to_real(real, case_ids)
            band = qf.calibrate_band(values, settings.filter_percentiles)
            calibration.update(given=False, real_to_real=[round(float(v), 6) for v in values])
        self.filter = (model, processor, real, case_ids, band, calibration)

    def _prompt_embeddings(self, pipe, prompt: str, negative: str):
        key = (id(pipe), prompt, negative)
        if key not in self._embeddings:
            from nnunet_synth.generators.sd.loading import encode_prompts

            embeds = encode_prompts(pipe.tokenizer, pipe.text_encoder, [prompt, negative], pipe.text_encoder.device)
            self._embeddings[key] = (embeds[:1], embeds[1:])
        return self._embeddings[key]

    # -- one case ----------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> GenerationResponse:
        from nnunet_synth.generators.meddiff_ft import erosion
        from nnunet_synth.generators.sd.training import check_source_case
        from nnunet_synth.generators.sd.usage import Usage

        settings, source = request.settings, request.source
        check_source_case(source, self.config["image_channels"], "meddiff-ft")
        if self._usage is None:
            self._usage = Usage(self.device, "image")
        label = int(self.config["label"])
        prompt = request.prompt or self.config["prompt"]
        with self._usage.measure():
            background, seg, extras = self._background(source, settings, request.seed, label)
            placement, shape_info = self._place(background, seg, source, settings, request.seed, label)
            image, region, window = self._synthesise(background, placement.mask, settings, prompt, request.seed)
        painted = placement.mask & region
        extras.update({"placement": placement.info, "mask_shape": shape_info, "window": list(window.box),
                       "resolution": settings.resolution, "painted_pixels": int(region.sum())})
        kept = True
        if self.filter is not None:
            decision = self._filter(image, window, settings)
            extras["filter"] = decision
            kept = decision["kept"]
        lesion, survived, extras["erosion"] = erosion.erode_lesion(
            painted, *erosion.radii(settings.erosion_px, settings.erosion_mm, source.spacing))
        kept = kept and survived
        mask = np.where(lesion, label, seg).astype(source.seg.dtype)
        return GenerationResponse(image=image, mask=mask, extras=extras, prompt=prompt, kept=kept)

    def _background(self, source: TrainingCase, settings, seed: int, label: int):
        """(background image (C, H, W) in [-1, 1], its labels, extras)."""
        if not (source.seg == label).any():
            return source.image.astype(np.float32), source.seg, {"background": "source (label-free)"}
        if self._backgrounds is not None:
            return self._background_from_folder(source, seed)
        if self.background_pipeline is None:
            raise SynthError(f"case {source.case_id} has a lesion and there is no background model or --backgrounds "
                             f"folder to make a lesion-free background from it; give --backgrounds DIR or choose "
                             f"label-free cases with --cases")
        return self._restore(source, settings, seed, label)

    def _background_from_folder(self, source: TrainingCase, seed: int):
        from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending
        from skimage.transform import resize

        from nnunet_synth.generators.intensity import normalise_image

        files = self._backgrounds[int(np.random.default_rng([seed, 1]).integers(len(self._backgrounds)))]
        ending = "".join(files[0].suffixes)
        reader = determine_reader_writer_from_file_ending(ending, str(files[0]), allow_nonmatching_filename=True,
                                                          verbose=False)()
        try:
            image, _ = reader.read_images([str(f) for f in files])
        except Exception as e:  # a reader's own error type varies (SimpleITK, PIL, nibabel): name the file
            raise SynthError(f"--backgrounds: cannot read {files[0]} ({type(e).__name__}: {e})") from None
        image = normalise_image(np.asarray(image, dtype=np.float32).reshape(image.shape[0], *image.shape[-2:]))
        shape = source.seg.shape
        if image.shape[1:] != shape:
            image = resize(image, (image.shape[0],) + shape, order=1, preserve_range=True, anti_aliasing=True)
        return (np.clip(image, -1, 1).astype(np.float32), np.zeros(shape, dtype=source.seg.dtype),
                {"background": f"--backgrounds {files[0].name}"})

    def _restore(self, source: TrainingCase, settings, seed: int, label: int):
        """The source with its lesions repaired by the background model (guided synthesis over the whole image)."""
        from scipy import ndimage

        from nnunet_synth.generators.meddiff_ft.guided import guided_synthesis
        from nnunet_synth.generators.sd.framing import from_model, full_frame, to_model

        lesion = source.seg == label
        repair = ndimage.binary_dilation(lesion, iterations=settings.restore_dilation) if settings.restore_dilation \
            else lesion
        frame = full_frame(source.seg.shape, settings.resolution)
        window = self._rgb(to_model(source.image, frame, order=1, fill=-1.0))
        window_mask = to_model(repair, frame, order=0)
        embeds, negative = self._prompt_embeddings(self.background_pipeline, self.config["background_prompt"],
                                                   settings.negative_prompt)
        out = guided_synthesis(self.background_pipeline, window, window_mask, embeds, negative,
                               self._guided_options(settings), seed ^ 0x5EED)
        restored = self._channels(out["image"], source.image.shape[0])
        iy0, ix0, iy1, ix1 = frame.inside
        region = np.zeros(source.seg.shape, dtype=bool)
        region[iy0:iy1, ix0:ix1] = from_model(out["region"], frame, order=0)
        region |= repair  # every lesion pixel is repaired, whatever the resampling did at its edge
        image = source.image.astype(np.float32).copy()
        back = np.zeros_like(image)
        back[:, iy0:iy1, ix0:ix1] = from_model(restored, frame, order=1)
        image[:, region] = np.clip(back[:, region], -1, 1)
        seg = np.where(lesion, 0, source.seg).astype(source.seg.dtype)
        return image, seg, {"background": "restored by the background model", "restored_pixels": int(region.sum())}

    def _place(self, background, seg, source: TrainingCase, settings, seed: int, label: int):
        from nnunet_synth.generators.sd.placement import place_lesion

        shape_info: dict = {"source": "lesion bank"}
        bank = self.bank
        if self.masks is not None:
            drawn, tries = self.masks.generate(seed, settings.mask_sampling_steps, settings.mask_tries,
                                               settings.min_mask_pixels, not settings.allow_components)
            shape_info = {"source": "mask DDPM", "draws": tries}
            if drawn is None:
                shape_info = {"source": "lesion bank", "draws": tries,
                              "note": f"no drawn mask passed the cleaning in {tries} draws"}
            else:
                bank = self._bank_of(drawn, source, seed, label)
        margins = {} if settings.border_margin_mm is None else {"border_margin_mm": settings.border_margin_mm}
        placement = place_lesion(background.mean(axis=0), seg, source.spacing, bank, source.case_id, seed,
                                 label=label, **margins)
        if placement is None:
            raise SynthError(f"case {source.case_id}: no room for a new lesion inside the imaged region of its "
                             f"background (see docs/lesion_placement.md); leave the case out with --cases, or lower "
                             f"--border-margin-mm")
        return placement, shape_info

    def _bank_of(self, drawn: np.ndarray, source: TrainingCase, seed: int, label: int):
        """A one-shape bank: the drawn mask (tight crop), with an area drawn from the training lesions' areas."""
        from nnunet_synth.generators.sd.framing import mask_bbox
        from nnunet_synth.generators.sd.placement import LesionBank, LesionShape

        y0, x0, y1, x1 = mask_bbox(drawn)
        crop = drawn[y0:y1, x0:x1]
        areas = [e.area_mm2 for e in self.bank.entries if e.label == label] or [e.area_mm2 for e in self.bank.entries]
        area = float(areas[int(np.random.default_rng([seed, 2]).integers(len(areas)))])
        side = float(np.sqrt(area / crop.sum()))  # the crop's pixel spacing that gives it that area
        return LesionBank((LesionShape("generated", label, crop, (side, side), area),))

    def _synthesise(self, background, lesion, settings, prompt: str, seed: int):
        """(image (C, H, W) with the window's generated region pasted in, that region (H, W), the frame)."""
        from nnunet_synth.generators.meddiff_ft.guided import guided_synthesis
        from nnunet_synth.generators.sd.framing import from_model, mask_bbox, square_box_around, to_model
        from nnunet_synth.generators.sd_inpaint.settings import MIN_WINDOW_PX

        shape = lesion.shape
        frame = square_box_around(mask_bbox(lesion), shape, settings.context, min(MIN_WINDOW_PX, max(shape)),
                                  resolution=settings.resolution)
        window = self._rgb(to_model(background, frame, order=1, fill=-1.0))
        embeds, negative = self._prompt_embeddings(self.pipeline, prompt, settings.negative_prompt)
        out = guided_synthesis(self.pipeline, window, to_model(lesion, frame, order=0), embeds, negative,
                               self._guided_options(settings), seed)
        generated = self._channels(out["image"], background.shape[0])
        iy0, ix0, iy1, ix1 = frame.inside
        region = np.zeros(shape, dtype=bool)
        region[iy0:iy1, ix0:ix1] = from_model(out["region"], frame, order=0)
        region |= lesion
        image = background.copy()
        back = np.zeros_like(image)
        back[:, iy0:iy1, ix0:ix1] = from_model(generated, frame, order=1)
        image[:, region] = np.clip(back[:, region], -1, 1)
        return image, region, frame

    def _filter(self, image, window, settings) -> dict:
        from nnunet_synth.generators.meddiff_ft import quality_filter as qf
        from nnunet_synth.generators.meddiff_ft.train import REFERENCE_SIDE
        from nnunet_synth.generators.sd.framing import Frame, to_model

        model, processor, real, case_ids, band, _ = self.filter
        # the generated window as the references were stored: the same box, uint8 RGB at REFERENCE_SIDE
        frame = Frame(*window.box, REFERENCE_SIDE, window.image_shape)
        rgb = self._rgb(to_model(image, frame, order=1, fill=-1.0))
        feature = qf.features(model, processor, np.round((np.clip(rgb, -1, 1) + 1) * 127.5).astype(np.uint8)[None])
        similarity, index = qf.nearest_real(feature[0], real)
        return {"similarity": round(similarity, 6), "reference_case": case_ids[index],
                "band": [round(b, 6) for b in band], "kept": qf.keep(similarity, band)}

    def finish_dataset(self, dataset_folder: Path) -> None:
        """With the filter on: the similarity histogram and the report of every case (``meddiff_filter/``)."""
        if self.filter is None:
            return
        from nnunet_synth.generators.meddiff_ft import quality_filter as qf
        from nnunet_synth.manifest import Manifest

        manifest = Manifest.load(dataset_folder)
        decisions = {}
        for case_id, case in manifest.cases.items():
            decision = dict(case.extra.get("filter", {}))
            decision["kept"] = bool(case.kept)
            if "dropped" in case.extra.get("erosion", {}):
                decision["erosion"] = case.extra["erosion"]["dropped"]
            decisions[case_id] = decision
        qf.write_report(Path(dataset_folder), decisions, self.filter[4], self.filter[5])

    @staticmethod
    def _guided_options(settings):
        from nnunet_synth.generators.meddiff_ft.guided import GuidedOptions

        return GuidedOptions(steps=settings.steps, guidance_scale=settings.guidance_scale,
                             dilation_start=settings.mask_dilation_start, tighten_until=settings.tighten_until,
                             repaint_jumps=settings.repaint_jumps, repaint_until=settings.repaint_until)

    @staticmethod
    def _rgb(image: np.ndarray) -> np.ndarray:
        return (np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image).astype(np.float32)

    @staticmethod
    def _channels(rgb: np.ndarray, channels: int) -> np.ndarray:
        """Grayscale: the channel mean of the generated RGB."""
        return rgb.mean(axis=0, keepdims=True) if channels == 1 else rgb

    def summary(self) -> str | None:
        return None if self._usage is None else self._usage.line()
