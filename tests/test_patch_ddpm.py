"""The patch-wise DDPM: tiny seeded models trained for a few steps on tiny 2D and 3D cases."""
import argparse
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from nnunet_synth.atomic import new_file_mode
from nnunet_synth.commands.generator_options import add_settings_arguments, settings_from_args
from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import GenerationRequest, TrainingCase
from nnunet_synth.generators.patch_ddpm import PatchDDPMGenerator
from nnunet_synth.generators.patch_ddpm import folder
from nnunet_synth.generators.patch_ddpm.network import coordinates
from nnunet_synth.generators.patch_ddpm.sample import FullPredictor, TiledPredictor
from nnunet_synth.generators.patch_ddpm.train import PatchSampler

TINY = "--train-steps 1 --patch-size 16 --channels 8 16 --res-blocks 1 --batch-size 2 --lr 1e-3 --steps 2"


# One torch thread for every test here (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _parsed(settings_class, words: list[str]):
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, settings_class, "patch-ddpm")
    known, _ = parser.parse_known_args(words)
    return settings_from_args(settings_class, known)


def options(extra: str = "", tiny: str = TINY):
    """The fit settings of the command-line words (the words for sampling are left for ``sampling``)."""
    return _parsed(PatchDDPMGenerator.fit_settings, f"{tiny} {extra}".split())


def sampling(extra: str = "", tiny: str = TINY):
    return _parsed(PatchDDPMGenerator.generate_settings, f"{tiny} {extra}".split())


def sample(generator, seg, seed: int, settings, spacing=None):
    """The image the generator paints for ``seg`` as a twin (the source image plays no part unless --strength < 1)."""
    source = TrainingCase("src", np.zeros((1,) + seg.shape, np.float32), seg, spacing or (1.0,) * seg.ndim)
    return generator.generate(GenerationRequest(source, seg, "twins", seed, None, settings)).image


def twin(generator, case, seed: int, settings):
    return generator.generate(GenerationRequest(case, case.seg, "twins", seed, None, settings)).image


def make_cases(shape, n=3, labels=(1, 2)):
    rng = np.random.default_rng(len(shape))
    cases = []
    for i in range(n):
        seg = np.zeros(shape, np.uint8)
        lo = [int(rng.integers(0, s // 2)) for s in shape]
        seg[tuple(slice(a, a + s // 3) for a, s in zip(lo, shape))] = labels[i % len(labels)]
        image = np.clip(rng.normal(-0.3, 0.2, (1,) + shape) + 0.8 * (seg > 0), -1, 1).astype(np.float32)
        cases.append(TrainingCase(f"case_{i}", image, seg, (1.0,) * len(shape)))
    return cases


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory):
    torch.set_num_threads(1)
    model_dir = tmp_path_factory.mktemp("ddpm2d") / "model"
    cases = make_cases((40, 36))
    PatchDDPMGenerator.fit(cases, [0, 1, 2], model_dir, options("--train-steps 3 --checkpoint-every 2"))
    return model_dir, cases


@pytest.fixture(scope="module")
def model_3d(tmp_path_factory):
    torch.set_num_threads(1)
    model_dir = tmp_path_factory.mktemp("ddpm3d") / "model"
    cases = make_cases((20, 18, 24), labels=(1,))
    PatchDDPMGenerator.fit(cases, [0, 1], model_dir, options("--train-steps 2"))
    return model_dir, cases


@pytest.mark.parametrize("which", ["model_2d", "model_3d"])
@pytest.mark.parametrize("which_sampling", ["full", "tiled"])
def test_fit_save_load_generate(which, which_sampling, request):
    model_dir, cases = request.getfixturevalue(which)
    assert (model_dir / folder.CONFIG_NAME).is_file() and (model_dir / folder.WEIGHTS_PATH).is_file()
    config = json.loads((model_dir / folder.CONFIG_NAME).read_text())
    assert config["steps_trained"] == config["settings"]["train_steps"]
    generator = PatchDDPMGenerator.load(model_dir)
    assert generator.model_labels() == ([0, 1, 2] if which == "model_2d" else [0, 1])
    case = cases[0]
    image = sample(generator, case.seg, 3, sampling(f"--sampling {which_sampling}"))
    assert image.shape == case.image.shape and image.dtype == np.float32
    assert np.isfinite(image).all() and image.min() >= -1 and image.max() <= 1
    assert image.std() > 0


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_seed_determines_the_image(model_2d, sampler):
    model_dir, cases = model_2d
    generator = PatchDDPMGenerator.load(model_dir)
    settings = sampling(f"--sampler {sampler} --sampling tiled")
    a = sample(generator, cases[1].seg, 11, settings)
    b = sample(PatchDDPMGenerator.load(model_dir), cases[1].seg, 11, settings)
    c = sample(generator, cases[1].seg, 12, settings)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.05


def test_one_tile_covering_the_image_equals_full_sampling(model_2d):
    model_dir, _ = model_2d
    generator = PatchDDPMGenerator.load(model_dir)
    mask = np.zeros((16, 16), np.uint8)  # the patch size and a multiple of the downsampling factor
    mask[4:9, 6:12] = 2
    full = sample(generator, mask, 5, sampling("--sampling full"))
    tiled = sample(generator, mask, 5, sampling("--sampling tiled"))
    np.testing.assert_allclose(tiled, full, atol=1e-5)


def test_tiled_blend_is_a_weighted_average_of_the_tiles():
    """A network that outputs its first coordinate channel must give back exactly the global coordinate field."""
    shape, patch = (37, 50), (16, 16)

    def network(inputs, t):
        return inputs[:, -2:-1] * 1.0  # channels: image, one label, 2 coordinates

    mask = torch.zeros(shape, dtype=torch.int16)
    predictor = TiledPredictor(network, mask, [1], patch, overlap=0.5, tile_batch=3, device="cpu")
    assert len(predictor.starts) > 4 and predictor.calls == 0
    eps = predictor(torch.zeros((1, 1) + shape), torch.tensor(7))
    expected = coordinates([(0, 0)], shape, shape)[:, :1]
    torch.testing.assert_close(eps, expected, atol=1e-5, rtol=0)
    assert predictor.calls == len(predictor.batches)
    # the image corners are covered and coordinates span [-1, 1]
    assert float(eps.min()) == pytest.approx(-1) and float(eps.max()) == pytest.approx(1)


def test_full_predictor_pads_and_crops():
    seen = []

    def network(inputs, t):
        seen.append(tuple(inputs.shape))
        return inputs[:, -1:] * 1.0

    predictor = FullPredictor(network, torch.zeros((13, 10), dtype=torch.int16), [1], factor=4, device="cpu")
    eps = predictor(torch.zeros((1, 1, 13, 10)), torch.tensor(3))
    assert seen == [(1, 4, 16, 12)] and eps.shape == (1, 1, 13, 10)
    torch.testing.assert_close(eps, coordinates([(0, 0)], (13, 10), (13, 10))[:, 1:])


@pytest.mark.parametrize("schedule", ["", "--lr-scheduler cosine --lr-warmup-steps 1"])
def test_resumed_fit_equals_uninterrupted_fit(tmp_path, monkeypatch, schedule):
    from safetensors.torch import load_file

    from nnunet_synth.generators.patch_ddpm import train

    cases = make_cases((24, 24), n=2)
    fit = lambda name, extra: PatchDDPMGenerator.fit(cases, [0, 1, 2], tmp_path / name,  # noqa: E731
                                                     options(f"{extra} {schedule}"))
    weights = lambda name: load_file(str(tmp_path / name / folder.WEIGHTS_PATH))  # noqa: E731
    progress = lambda name: json.loads((tmp_path / name / "checkpoint" / "progress.json").read_text())  # noqa: E731
    fit("once", "--train-steps 4")

    # a run that dies right after its step-2 checkpoint, then is rerun unchanged
    save = train._save_checkpoint

    def save_then_die(accelerator, model_dir, step):
        save(accelerator, model_dir, step)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit("crashed", "--train-steps 4 --checkpoint-every 2")
    monkeypatch.undo()
    assert progress("crashed") == {"step": 2}
    with pytest.raises(SynthError, match="incomplete"):
        PatchDDPMGenerator.load(tmp_path / "crashed")
    fit("crashed", "--train-steps 4 --checkpoint-every 2")

    # a finished 2-step model trained further to 4 steps
    fit("extended", "--train-steps 2")
    two = weights("extended")
    if schedule:
        # the cosine schedule of a 2-step run has decayed to 0; 4 steps would be another schedule
        with pytest.raises(SynthError, match=r"settings.train_steps: 2 there, 4 now \(--lr-scheduler cosine is laid"):
            fit("extended", "--train-steps 4")
        fit("extended", "--train-steps 2")  # the same schedule: nothing to do
        np.testing.assert_equal({k: v.numpy() for k, v in weights("extended").items()},
                                {k: v.numpy() for k, v in two.items()})
    else:
        fit("extended", "--train-steps 4")
        assert progress("extended") == {"step": 4}
        assert json.loads((tmp_path / "extended" / folder.CONFIG_NAME).read_text())["steps_trained"] == 4

    once = weights("once")
    for name in (("crashed",) if schedule else ("crashed", "extended")):
        resumed = weights(name)
        for key in once:
            torch.testing.assert_close(resumed[key], once[key], atol=1e-6, rtol=1e-5)
    if not schedule:
        assert any(not torch.equal(two[k], once[k]) for k in once)  # steps 3 and 4 did change the weights


def test_a_folder_without_its_checkpoint_is_never_retrained(model_2d, tmp_path):
    """After rm -r MODEL/checkpoint the trained weights stay: the same command has nothing to do, others are refused."""
    model_dir, cases = model_2d
    trained = json.loads((model_dir / folder.CONFIG_NAME).read_text())["steps_trained"]
    copy = tmp_path / "no_checkpoint"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("checkpoint"))
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}

    def unchanged():
        assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before

    PatchDDPMGenerator.fit(cases, [0, 1, 2], copy, options(f"--train-steps {trained}"))
    unchanged()
    with pytest.raises(SynthError, match=f"already trained for {trained} steps, more than --train-steps 1"):
        PatchDDPMGenerator.fit(cases, [0, 1, 2], copy, options("--train-steps 1"))
    unchanged()
    with pytest.raises(SynthError, match=f"trained for {trained} steps but no checkpoint/ to continue from"):
        PatchDDPMGenerator.fit(cases, [0, 1, 2], copy, options(f"--train-steps {trained + 2}"))
    unchanged()


def test_rerun_with_other_settings_is_refused(model_2d, tmp_path):
    model_dir, cases = model_2d
    with pytest.raises(SynthError, match="different settings.*network"):
        PatchDDPMGenerator.fit(cases, [0, 1, 2], model_dir, options("--train-steps 3", tiny=TINY.replace("8 16", "16 32")))


def test_missing_or_incomplete_model_folder(model_2d, tmp_path):
    with pytest.raises(SynthError, match="does not exist.*nnunet-synth fit patch-ddpm"):
        PatchDDPMGenerator.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthError, match="config.json: missing"):
        PatchDDPMGenerator.load(tmp_path / "empty")
    model_dir, _ = model_2d
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial, ignore=shutil.ignore_patterns(folder.WEIGHTS_NAME, "checkpoint"))
    with pytest.raises(SynthError, match="incomplete"):
        PatchDDPMGenerator.load(partial)
    (partial / folder.WEIGHTS_PATH).write_bytes(b"not safetensors")
    with pytest.raises(SynthError, match="cannot be read"):
        PatchDDPMGenerator.load(partial)
    # weights of another network: from_pretrained would initialise the missing tensors randomly
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_dir / folder.WEIGHTS_PATH))
    state.pop("unet.out.2.conv.bias")
    save_file(state, str(partial / folder.WEIGHTS_PATH))
    with pytest.raises(SynthError, match=r"does not match .*unet/config.json \(1 missing, e.g. unet.out.2.conv.bias"):
        PatchDDPMGenerator.load(partial)
    (partial / folder.SCHEDULER_FOLDER / folder.SCHEDULER_CONFIG_NAME).unlink()
    with pytest.raises(SynthError, match="scheduler_config.json: missing; train it with"):
        PatchDDPMGenerator.load(partial)
    (partial / folder.CONFIG_NAME).write_text("{")
    with pytest.raises(SynthError, match="not valid JSON"):
        PatchDDPMGenerator.load(partial)


def test_patch_larger_than_image_is_refused(model_2d, tmp_path):
    cases = make_cases((24, 12), n=2)
    with pytest.raises(SynthError, match="case_0 is 24x12 but the patch is 16x16"):
        PatchDDPMGenerator.fit(cases, [0, 1, 2], tmp_path / "m", options("--train-steps 1"))
    assert not (tmp_path / "m").exists()
    generator = PatchDDPMGenerator.load(model_2d[0])
    with pytest.raises(SynthError, match="smaller than the model's patch 16x16.*--sampling full"):
        sample(generator, np.zeros((24, 12), np.uint8), 0, sampling("--sampling tiled"))


def test_mask_labels_outside_the_model_are_refused(model_3d):
    generator = PatchDDPMGenerator.load(model_3d[0])
    mask = np.zeros((20, 18, 24), np.uint8)
    mask[2:5, 2:5, 2:5] = 2
    with pytest.raises(SynthError, match=r"label value\(s\) \[2\] are not among the values allowed by the model"):
        sample(generator, mask, 0, sampling())
    with pytest.raises(SynthError, match="2 axes but the model .* is 3D"):
        sample(generator, mask[0], 0, sampling())


@pytest.mark.parametrize("extra, message", [
    ("--preset ct3d", "--preset ct3d is for 3D images"),
    ("--patch-size 15", "multiple of 2"),
    ("--patch-size 16 16 16", "3 values but the images have 2"),
    ("--fg-fraction 1.5", "--fg-fraction"),
    ("--lr-warmup-steps 1", "no effect with --lr-scheduler constant; use --lr-scheduler constant_with_warmup"),
    ("--lr-scheduler cosine --lr-warmup-steps 2", r"--lr-warmup-steps must be between 0 and --train-steps \(1\)"),
])
def test_bad_fit_options(extra, message, tmp_path):
    with pytest.raises(SynthError, match=message):
        PatchDDPMGenerator.fit(make_cases((24, 24), n=1), [0, 1, 2], tmp_path / "m", options(extra))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("extra, message", [
    ("--steps 0", "--steps must be"), ("--tile-overlap 1", "--tile-overlap"),
    ("--strength 0", r"--strength must be in \(0, 1\], got 0.0"), ("--strength 1.5", r"--strength must be in \(0, 1\]"),
    ("--strength -0.2", r"--strength must be in \(0, 1\]"), ("--strength nan", r"--strength must be in \(0, 1\]"),
    ("--strength 0.4", r"--strength 0.4 with --steps 2 leaves no denoising step \(int\(steps x strength\) = 0\)"),
])
def test_bad_generate_options(model_2d, extra, message):
    generator = PatchDDPMGenerator.load(model_2d[0])
    with pytest.raises(SynthError, match=message):
        sample(generator, model_2d[1][0].seg, 0, sampling(extra))


def test_input_outside_minus_one_one_is_refused(tmp_path):
    cases = make_cases((24, 24), n=1)
    cases[0].image[0, 0, 0] = 3.0
    with pytest.raises(SynthError, match="case_0 has intensities up to 3"):
        PatchDDPMGenerator.fit(cases, [0, 1, 2], tmp_path / "m", options())


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_foreground_biased_patches(fraction):
    shape = (64, 64)
    seg = np.zeros(shape, np.uint8)
    seg[50:54, 5:9] = 1
    case = TrainingCase("c", np.zeros((1,) + shape, np.float32), seg, (1.0, 1.0))
    sampler = PatchSampler([case], (16, 16), fraction, seed=0)
    rng = np.random.default_rng(0)
    images, segs, coords = sampler.batch(rng, 200)
    assert images.shape == (200, 1, 16, 16) and coords.shape == (200, 2, 16, 16)
    with_fg = (segs.flatten(1).amax(1) > 0).float().mean().item()
    if fraction == 1.0:
        assert with_fg == 1.0
    else:
        assert with_fg < 0.25  # uniform crops rarely meet a 4x4 lesion
    assert coords.min() >= -1 and coords.max() <= 1


def test_importing_the_generator_does_not_import_torch():
    code = ("import sys, argparse; from nnunet_synth.generators.patch_ddpm import PatchDDPMGenerator as G; "
            "from nnunet_synth.commands.generator_options import add_settings_arguments as add; "
            "p = argparse.ArgumentParser(); add(p, G.fit_settings, 'fit'); add(p, G.generate_settings, 'gen'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("shape, patch, overlap", [((37, 50), (16, 16), 0.5), ((20, 18, 24), (8, 8, 16), 0.25)])
def test_tiles_are_placed_and_weighted_like_nnunets_sliding_window(shape, patch, overlap):
    """Tile origins are nnU-Net's sliding-window steps; the blend is the Gaussian-weighted mean of the tiles."""
    import itertools

    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    calls = []

    def network(inputs, t):
        # every tile predicts its own number, so the blend shows each tile's weight at every voxel
        first = sum(calls)
        calls.append(len(inputs))
        values = torch.arange(first, first + len(inputs), dtype=torch.float32) + 1
        return values.reshape((-1, 1) + (1,) * len(shape)).expand((len(inputs), 1) + patch).clone()

    predictor = TiledPredictor(network, torch.zeros(shape, dtype=torch.int16), [1], patch, overlap=overlap,
                               tile_batch=2, device="cpu")
    steps = compute_steps_for_sliding_window(shape, patch, 1 - overlap)
    expected_starts = [tuple(int(v) for v in s) for s in itertools.product(*steps)]
    assert predictor.starts == expected_starts

    blended = predictor(torch.zeros((1, 1) + shape), torch.tensor(1))[0, 0].numpy()
    gaussian = compute_gaussian(patch, sigma_scale=1. / 8, value_scaling_factor=1, dtype=torch.float32,
                                device="cpu").numpy().astype(np.float64)
    numerator, weights = np.zeros(shape), np.zeros(shape)
    for value, start in enumerate(expected_starts, start=1):
        window = tuple(slice(s, s + p) for s, p in zip(start, patch))
        numerator[window] += value * gaussian
        weights[window] += gaussian
    np.testing.assert_allclose(blended, numerator / weights, rtol=1e-5)
    assert sum(calls) == len(expected_starts) and max(calls) == 2


def test_each_part_of_the_model_folder_loads_with_from_pretrained(model_2d):
    from diffusers import DDPMScheduler

    from nnunet_synth.generators.patch_ddpm.network import PatchDDPMUNet

    model_dir, _ = model_2d
    index = json.loads((model_dir / folder.INDEX_NAME).read_text())
    assert index["unet"] == ["nnunet_synth.generators.patch_ddpm.network", "PatchDDPMUNet"]
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    unet = PatchDDPMUNet.from_pretrained(model_dir, subfolder="unet", local_files_only=True)
    scheduler = DDPMScheduler.from_pretrained(model_dir, subfolder="scheduler", local_files_only=True)
    generator = PatchDDPMGenerator.load(model_dir)
    loaded = generator.network.state_dict()
    assert unet.state_dict().keys() == loaded.keys()
    assert all(torch.equal(v, loaded[k]) for k, v in unet.state_dict().items())
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.timestep_spacing == "trailing"
    assert scheduler.config.clip_sample and scheduler.config.prediction_type == "epsilon"
    assert "network" not in json.loads((model_dir / folder.CONFIG_NAME).read_text())  # one home per part
    x = torch.zeros((1, 5, 16, 16))
    torch.testing.assert_close(unet(x, torch.tensor([3])), generator.network(x, torch.tensor([3])))


def test_weights_and_checkpoint_files_get_the_umask_mode(model_2d, tmp_path):
    """safetensors writes 0600; the model folder's files get what open() gives (0644 under umask 022)."""
    model_dir, _ = model_2d
    modes = {p.relative_to(model_dir).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in model_dir.rglob("*") if p.is_file()}
    assert {folder.WEIGHTS_PATH, "checkpoint/model.safetensors"} <= set(modes)
    assert set(modes.values()) == {new_file_mode()}, modes

    from nnunet_synth.generators.patch_ddpm.network import build_network, network_kwargs

    network = build_network(network_kwargs(2, 1, 1, (4, 8), 1))
    for umask, expected in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(umask)
        try:
            folder.save_weights(tmp_path / str(umask), network)
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / str(umask) / folder.WEIGHTS_PATH).stat().st_mode) == expected


def _format_1_copy(model_dir, target):
    """The folder as the format-1 code wrote it: everything in config.json, MONAI's keys at the top."""
    from safetensors.torch import load_file, save_file

    config = json.loads((model_dir / folder.CONFIG_NAME).read_text())
    config["format_version"] = 1
    config["network"] = {k: v for k, v in json.loads((model_dir / "unet" / "config.json").read_text()).items()
                         if not k.startswith("_")}
    config["scheduler"] = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    target.mkdir()
    (target / folder.CONFIG_NAME).write_text(json.dumps(config))
    state = load_file(str(model_dir / folder.WEIGHTS_PATH))
    save_file({k.removeprefix("unet."): v for k, v in state.items()}, str(target / folder.WEIGHTS_NAME))


def test_a_format_1_folder_is_read_for_generation_and_refused_by_fit(model_2d, tmp_path):
    model_dir, cases = model_2d
    old = tmp_path / "old"
    _format_1_copy(model_dir, old)
    settings = sampling("--sampling tiled")
    np.testing.assert_array_equal(sample(PatchDDPMGenerator.load(old), cases[0].seg, 4, settings),
                                  sample(PatchDDPMGenerator.load(model_dir), cases[0].seg, 4, settings))
    with pytest.raises(SynthError, match="format-1 layout .*`generate` still reads it, but `fit` cannot continue "
                                         "it: .*train into a new -o folder"):
        PatchDDPMGenerator.fit(cases, [0, 1, 2], old, options("--train-steps 3 --checkpoint-every 2"))
    assert sorted(p.name for p in old.iterdir()) == [folder.CONFIG_NAME, folder.WEIGHTS_NAME]  # untouched


@pytest.mark.parametrize("schedule", ["", "--lr-scheduler cosine --lr-warmup-steps 2",
                                      "--lr-scheduler constant_with_warmup --lr-warmup-steps 3"])
def test_learning_rate_follows_diffusers_get_scheduler(tmp_path, monkeypatch, schedule):
    from diffusers.optimization import get_scheduler

    seen = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    settings = options(f"--train-steps 6 --lr 0.002 {schedule}")
    PatchDDPMGenerator.fit(make_cases((16, 16), n=1), [0, 1, 2], tmp_path / "m", settings)
    monkeypatch.undo()

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.002)
    reference = get_scheduler(settings.lr_scheduler, optimizer, num_warmup_steps=settings.lr_warmup_steps,
                              num_training_steps=6)
    expected = []
    for _ in range(6):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert seen == pytest.approx(expected, rel=1e-12, abs=0)
    if schedule:
        assert seen[0] == 0 and max(seen) == pytest.approx(0.002) and len(set(seen)) > 2
    else:
        assert seen == [0.002] * 6


@pytest.mark.parametrize("which, which_sampling, sampler", [
    ("model_2d", "full", "ddim"), ("model_2d", "tiled", "dpm"), ("model_3d", "tiled", "ddim")])
def test_strength_img2img_converges_to_the_source(which, which_sampling, sampler, request):
    """Smaller --strength starts from a less noised source image, so the twin stays closer to it."""
    model_dir, cases = request.getfixturevalue(which)
    generator = PatchDDPMGenerator.load(model_dir)
    case = cases[0]
    common = f"--steps 20 --sampling {which_sampling} --sampler {sampler}"
    mad = [float(np.abs(twin(generator, case, 7, sampling(f"{common} --strength {s}")) - case.image).mean())
           for s in (0.3, 0.15, 0.05)]   # 6, 3 and 1 of the 20 steps
    assert mad[0] > mad[1] > mad[2], mad
    assert mad[2] < 0.2, mad   # one step from t = 49 of 1000 (noise std 0.17): about 0.14 for these tiny models


def test_strength_one_starts_from_pure_noise(model_2d):
    """--strength 1 is today's sampling; the pinned bytes (test_patch_ddpm_pinned.py) are checked with it too."""
    generator = PatchDDPMGenerator.load(model_2d[0])
    case = model_2d[1][1]
    default = twin(generator, case, 2, sampling("--sampling full"))
    np.testing.assert_array_equal(twin(generator, case, 2, sampling("--sampling full --strength 1")), default)
    np.testing.assert_array_equal(sample(generator, case.seg, 2, sampling("--sampling full")), default)
    assert not np.array_equal(twin(generator, case, 2, sampling("--sampling full --strength 0.5")), default)


def test_strength_needs_a_source_image_of_the_masks_shape(model_2d):
    generator = PatchDDPMGenerator.load(model_2d[0])
    case = model_2d[1][0]
    wrong = TrainingCase("src", np.zeros((1, 8, 8), np.float32), case.seg, (1.0, 1.0))
    with pytest.raises(SynthError, match=r"--strength 0.5: source case src has an image of shape \(1, 8, 8\)"):
        generator.generate(GenerationRequest(wrong, case.seg, "twins", 0, None, sampling("--steps 4 --strength 0.5")))
