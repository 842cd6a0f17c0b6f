"""controlnet (DiffBoost) with tiny random Stable Diffusion folders: fit, twins, edges, prompts, resume, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import error_lines, use_planned
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
    return {4: write_tiny_sd(root / "sd"), 9: write_tiny_sd(root / "sd_inpaint", inpainting=True)}


pytestmark = pytest.mark.usefixtures("hub_offline")


def test_fit_and_twins_commands(planned_tiny_2d, nnunet_folders, tiny_sd, tmp_path, capsys):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    use_planned(planned_tiny_2d, nnunet_folders)
    model = tmp_path / "model"
    assert cli_main(["fit", "controlnet", "-d", "901", "--fold", "0", "-o", str(model), "--pretrained",
                     str(tiny_sd[4]), *TINY_FIT, "--prompt", "Breast, Ultrasound"]) == 0
    config = json.loads((model / "config.json").read_text())
    assert config["edge_rule"]["edge"] == "canny" and config["steps_trained"] == 2
    trained_on = json.loads((model / "training_cases.json").read_text())["cases"]
    assert set(config["captions"]) == set(trained_on) and set(config["captions"].values()) == {"Breast, Ultrasound"}
    assert (model / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()

    assert cli_main(["generate", "controlnet", "-m", str(model), "-d", "901", "-o", "902", "--mode", "twins",
                     "-k", "2", "--steps", "2", "--resolution", "64", "--cases", trained_on[0], trained_on[1],
                     "--device", "cpu"]) == 0
    out = nnunet_folders.raw / "Dataset902_Tiny2DSynthTwins"
    cases = [f"{c}_syn00{k}" for c in trained_on[:2] for k in (0, 1)]
    real = RawDataset.open(901)
    check_outputs(real, out, cases)
    verify_dataset_integrity(str(out), num_processes=1)
    manifest = Manifest.load(out)
    seeds = set()
    for case in cases:
        record = manifest.cases[case]
        assert record.kind == "twin" and record.prompt == "Breast, Ultrasound"
        assert record.extra["augmentation"] in config_augmentations()
        assert record.extra["embedding_weights"] == {"prompt": 0.045, "augmentation": 0.005, "style": 0.95}
        seeds.add(record.seed)
        synth_seg = RawDataset.open(out).read_case(case)[1]
        assert np.array_equal(synth_seg, real.read_case(record.source_case)[1])  # a twin keeps the real mask
    assert len(seeds) == len(cases)
    assert manifest.generators[out.name].trained_on == trained_on

    # DiffBoost's twins step takes them
    capsys.readouterr()
    assert cli_main(["twins", "-d", "901", "-s", "902", "-c", "2d", "--allow-real-only", "-np", "1"]) == 0


def config_augmentations():
    from nnunet_synth.generators.controlnet.settings import AUGMENTATIONS

    return AUGMENTATIONS


def test_resume_equals_uninterrupted_and_prompt_csv(nnunet_folders, tiny_sd, tmp_path):
    from safetensors.torch import load_file

    from nnunet_synth.generators.controlnet.settings import ControlNetFitOptions
    from nnunet_synth.generators.fit import FitJob, fit_generator

    make_sector_dataset_2d(nnunet_folders.raw, 901, n_cases=6)
    prompts = tmp_path / "prompts.csv"
    prompts.write_text('case,prompt\ncase_000,"Thyroid, Ultrasound, left lobe"\ncase_005,"Thyroid, Ultrasound"\n')
    cases = ("case_000", "case_001", "case_002")

    def fit(folder, steps, **extra):
        options = ControlNetFitOptions(pretrained=str(tiny_sd[4]), resolution=64, train_steps=steps,
                                       checkpointing_steps=1, prompt="Thyroid, Ultrasound", prompt_csv=str(prompts),
                                       caption_dropout=0.5, use_ema=True, cpu=True, **extra)
        fit_generator(FitJob("controlnet", "901", folder, cases=cases), options)
        return load_file(str(folder / "controlnet" / "diffusion_pytorch_model.safetensors"))

    straight = fit(tmp_path / "straight", 2)
    fit(tmp_path / "resumed", 1)
    resumed = fit(tmp_path / "resumed", 2)
    assert straight.keys() == resumed.keys() and all(np.array_equal(straight[k], resumed[k]) for k in straight)
    captions = json.loads((tmp_path / "straight" / "config.json").read_text())["captions"]
    assert captions == {"case_000": "Thyroid, Ultrasound, left lobe", "case_001": "Thyroid, Ultrasound",
                        "case_002": "Thyroid, Ultrasound"}

    # --init-controlnet continues from a trained ControlNet (DiffBoost's second stage)
    fit(tmp_path / "second", 1, init_controlnet=str(tmp_path / "straight" / "controlnet"))
    assert json.loads((tmp_path / "second" / "config.json").read_text())["steps_trained"] == 1


def test_edges_prompts_and_mixed_embedding(tiny_sd):
    from nnunet_synth.generators.base import GenerationRequest, TrainingCase
    from nnunet_synth.generators.controlnet.edges import EdgeDetector, edge_rule
    from nnunet_synth.generators.controlnet.prompts import read_prompt_csv, training_captions
    from nnunet_synth.generators.controlnet.settings import ControlNetGenerateOptions
    from nnunet_synth.generators.sd.loading import encode_prompts
    from nnunet_synth.testing import _sector_case

    image, seg = _sector_case(np.random.default_rng(0), (64, 64))
    rgb01 = np.repeat(np.clip(image / 255.0, 0, 1)[None], 3, axis=0)
    from skimage.segmentation import find_boundaries

    for edge in ("canny", "sobel"):
        edges = EdgeDetector(edge_rule(edge, 2.0, None))(rgb01, seg)
        assert edges.shape == (3, 64, 64) and edges.dtype == np.float32 and 0 <= edges.min() and edges.max() <= 1
        assert (edges[0][find_boundaries(seg, mode="inner")] == 1).all()      # the lesion's outline, always
        assert (edges[0] > 0).sum() > find_boundaries(seg, mode="inner").sum()  # plus image edges
    with pytest.raises(SynthError, match="--hed-model"):
        edge_rule("hed", 2.0, None)
    with pytest.raises(SynthError, match="not a folder"):
        EdgeDetector(edge_rule("hed", 2.0, "/nonexistent/hed"))

    with pytest.raises(SynthError, match="no such file"):
        read_prompt_csv("/nonexistent/prompts.csv", ["a"])
    with pytest.raises(SynthError, match="give --prompt TEXT"):
        training_captions(["a"], None, None, ["a"])

    # the sampling embedding is the weighted sum of the three prompts' CLIP embeddings
    model = _bare_model(tiny_sd[4])
    settings = model.check_settings(ControlNetGenerateOptions(steps=2, resolution=32))
    pipe = model.pipeline
    texts = ["Thyroid, Ultrasound, best quality, extremely detailed", "high resolution", "gray, sketch"]
    e = encode_prompts(pipe.tokenizer, pipe.text_encoder, texts, "cpu")
    mixed = model.mixed_embedding("Thyroid, Ultrasound", "high resolution", settings)
    assert np.allclose(mixed.numpy(), (0.045 * e[0] + 0.005 * e[1] + 0.95 * e[2]).numpy()[None], atol=1e-6)

    case = TrainingCase("c", (np.clip(image / 127.5 - 1, -1, 1))[None].astype(np.float32), seg, (1.0, 1.0))
    request = GenerationRequest(source=case, target_mask=seg, mode="twins", seed=3, prompt="Thyroid, Ultrasound",
                                settings=settings)
    first, second = model.generate(request), model.generate(request)
    assert first.image.shape == (1, 64, 64) and np.array_equal(first.image, second.image)
    assert np.array_equal(first.mask, seg) and first.extras["augmentation"] == second.extras["augmentation"]


def _bare_model(sd_folder):
    """A ControlNetGenerator around an untrained ControlNet of ``sd_folder`` (no fit needed)."""
    import tempfile
    from pathlib import Path

    from diffusers import ControlNetModel, UNet2DConditionModel

    from nnunet_synth.generators.controlnet import ControlNetGenerator
    from nnunet_synth.generators.controlnet.edges import edge_rule

    folder = Path(tempfile.mkdtemp())
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet", local_files_only=True)
    ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32)).save_pretrained(folder / "controlnet")
    config = {"_class_name": "ControlNetGenerator", "format_version": 1, "pretrained": str(sd_folder),
              "image_channels": 1, "labels": [0, 1], "resolution": 32, "edge_rule": edge_rule("canny", 2.0, None),
              "captions": {}, "prompt": "Thyroid, Ultrasound", "settings": {}}
    (folder / "config.json").write_text(json.dumps(config))
    return ControlNetGenerator.load(folder, "cpu")


def test_bad_input_is_one_line(nnunet_folders, tiny_sd, tmp_path, capsys):
    from diffusers import ControlNetModel

    make_sector_dataset_2d(nnunet_folders.raw, 901, n_cases=6)
    make_raw_dataset_3d(nnunet_folders.raw, 911, n_cases=5, shape=(8, 16, 12))
    # a ControlNet made for another UNet (other channels per level)
    other = ControlNetModel(block_out_channels=(32, 32), layers_per_block=1, cross_attention_dim=32, norm_num_groups=8,
                            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                            conditioning_embedding_out_channels=(16, 32))
    other.save_pretrained(tmp_path / "other_controlnet")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("case,prompt\ncase_000,Thyroid\nnot_a_case,Thyroid\n")
    sd = str(tiny_sd[4])
    cases = [(["-d", "911", "--pretrained", sd, "--prompt", "x"], "2D generator"),
             (["-d", "901", "--pretrained", sd], "give --prompt TEXT"),
             (["-d", "901", "--pretrained", sd, "--prompt-csv", str(tmp_path / "missing.csv")], "no such file"),
             (["-d", "901", "--pretrained", sd, "--prompt-csv", str(unknown)], "unknown case(s) not_a_case"),
             (["-d", "901", "--pretrained", str(tiny_sd[9]), "--prompt", "x"], "4-channel UNet"),
             (["-d", "901", "--pretrained", sd, "--prompt", "x", "--init-controlnet", str(tmp_path / "other_controlnet")],
              "does not match the UNet"),
             (["-d", "901", "--pretrained", sd, "--prompt", "x", "--edge", "hed"], "--hed-model")]
    for k, (arguments, expected) in enumerate(cases):
        model = tmp_path / f"model{k}"
        code = cli_main(["fit", "controlnet", "--fold", "0", "-o", str(model), *arguments, *TINY_FIT])
        errors = error_lines(capsys)
        assert code == 2 and len(errors) == 1 and expected in errors[0], (arguments, errors)
        assert not model.exists(), arguments  # refused before anything was written
