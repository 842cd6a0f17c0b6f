"""A tiny deterministic generator for testing the framework without a diffusion model.

``fit`` learns one mean intensity per label (in [-1, 1]) and saves it in the
Hugging Face layout (config.json + model.safetensors); ``generate`` paints the
target mask with those means and adds seeded, smoothed noise; ``inpaint``
paints one new lesion (a seeded box of label 1 away from the source's
foreground) into the source image and returns the union mask. Subprocesses find it
through ``NNUNET_SYNTH_GENERATORS=test-blur=test_generators_blur:BlurTestGenerator``
with this folder on PYTHONPATH (see ``blur_env``).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import Generator, GenerationRequest, GenerationResponse, TrainingCase

NAME = "test-blur"
TARGET = "test_generators_blur:BlurTestGenerator"


@dataclass(frozen=True)
class BlurFitSettings:
    fail_in_fit: bool = field(default=False, metadata={"help": "raise SynthError before writing anything"})


@dataclass(frozen=True)
class BlurGenerateSettings:
    noise: float = field(default=0.3, metadata={"help": "noise amplitude"})
    sleep_per_case: float = field(default=0.0, metadata={"help": "seconds to sleep per sample"})


class BlurTestGenerator(Generator):
    """Label means plus seeded smoothed noise (a test double, not a model)."""

    name = NAME
    supported_modes = ("twins", "new", "inpaint")
    uses_prompt = True  # recorded, not used: lets tests check that prompts reach the manifest
    fit_settings = BlurFitSettings
    generate_settings = BlurGenerateSettings

    def __init__(self, config: dict, means: np.ndarray):
        self.config = config
        self.means = means

    @classmethod
    def fit(cls, cases: list[TrainingCase], labels: list[int], model_dir: Path, settings: BlurFitSettings) -> None:
        from safetensors.numpy import save_file

        if settings.fail_in_fit:
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

    def generate(self, request: GenerationRequest) -> GenerationResponse:
        time.sleep(request.settings.sleep_per_case)
        rng = np.random.default_rng(request.seed)
        if request.mode == "inpaint":
            return self._inpaint(request, rng)
        mask = request.target_mask
        image = self.means[:, mask] + self._noise(rng, mask.shape, request.settings.noise)
        return GenerationResponse(np.clip(image, -1, 1).astype(np.float32), mask, extras={"noise": request.settings.noise})

    def _noise(self, rng, shape, amplitude):
        from scipy.ndimage import gaussian_filter

        noise = gaussian_filter(rng.normal(size=(self.config["channels"],) + shape), sigma=(0,) + (1.0,) * len(shape))
        return amplitude * noise / max(noise.std(), 1e-6)

    def _inpaint(self, request, rng) -> GenerationResponse:
        source = request.source
        shape = source.seg.shape
        size = tuple(max(1, s // 4) for s in shape)
        for _ in range(100):
            start = tuple(int(rng.integers(0, s - n + 1)) for s, n in zip(shape, size))
            box = tuple(slice(a, a + n) for a, n in zip(start, size))
            if not source.seg[box].any():
                break
        else:
            raise SynthError(f"case '{source.case_id}': no room for a new lesion outside the existing ones")
        changed = np.zeros(shape, bool)
        changed[box] = True
        mask = np.where(changed, 1, source.seg).astype(source.seg.dtype)
        image = np.where(changed, self.means[:, 1:2].reshape((-1,) + (1,) * len(shape))
                         + self._noise(rng, shape, request.settings.noise), source.image)
        return GenerationResponse(np.clip(image, -1, 1).astype(np.float32), mask, changed=changed,
                                  extras={"lesion_box": [[a, a + n] for a, n in zip(start, size)]})


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
    case = TrainingCase("a", np.where(seg, 0.5, -0.5)[None].astype(np.float32), seg, (1.0, 1.0))

    BlurTestGenerator.fit([case], [0, 1], tmp_path, BlurFitSettings())
    gen = BlurTestGenerator.load(tmp_path)
    a, b, c = (gen.generate(GenerationRequest(case, seg, "twins", s, None, BlurGenerateSettings())).image
               for s in (1, 1, 2))
    assert a.shape == (1, 12, 10) and a.min() >= -1 and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[0][seg == 1].mean() > a[0][seg == 0].mean()
