"""Memory and speed of patch-ddpm sampling on this machine.

Each configuration runs in its own Python process, so peak memories do not
mix; a process reports its own peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and the resident size after
imports and model construction, so the increase caused by sampling is also
shown. The networks are randomly initialised: memory and time do not depend on
the weights.

Figures (issue 4):
  * tiled 2D peak at 1024x1024 vs 256x256 (target <= 1.2x) and vs full-size
    sampling at 1024x1024 (target <= 0.25x);
  * tiled 3D peak at 128^3 and 256^3;
  * sampler overhead: time of ``sample_image`` / time of the bare network calls
    it makes (target <= 1.1x), full and tiled;
  * images per second at 256x256 for the documented model.

``generate --strength`` (img2img): the mean absolute difference between twins
and their source images for several strengths, with a tiny 2D model trained
here for a few hundred steps on synthetic cases (not a useful generator: the
figures show how far each strength moves away from the source).

Usage: python benchmarks/bench_patch_ddpm.py [--threads 1] [--steps 5] [--only memory|speed|strength]
                                             [--out benchmarks/results/patch_ddpm.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# The benchmark model for 2D: the us2d preset's depth (4 levels, patch 128)
# with half its channels and one residual block, so that full-size sampling
# of 1024x1024 finishes in seconds on a CPU.
MODEL_2D = dict(channels=(16, 32, 64, 128), res_blocks=1, patch=(128, 128))
MODEL_3D = dict(channels=(8, 16, 32), res_blocks=1, patch=(64, 64, 64))
# The strength runs: a tiny 2D model, trained on synthetic 64x64 cases in a temporary folder.
STRENGTH_JOB = dict(shape=[64, 64], cases=6, channels=[16, 32], patch=32, batch=8, train_steps=400, lr=1e-3,
                    lr_scheduler="cosine", warmup=20, ema=0.99, sampling_steps=50, seeds=[0, 1],
                    strengths=[0.05, 0.1, 0.25, 0.5, 0.75, 1.0])


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _setup(model: dict, spatial_dims: int):
    import torch

    from nnunet_synth.generators.patch_ddpm.network import build_network, network_kwargs
    from nnunet_synth.generators.patch_ddpm.train import ddpm_scheduler_config

    torch.manual_seed(0)
    kwargs = network_kwargs(spatial_dims, 1, 1, tuple(model["channels"]), model["res_blocks"])
    network = build_network(kwargs).eval()
    config = {"labels": [0, 1], "image_channels": 1, "patch_size": list(model["patch"]), "network": kwargs,
              "scheduler": ddpm_scheduler_config(1000)}
    return network, config, sum(p.numel() for p in network.parameters())


def _mask(shape):
    import numpy as np

    mask = np.zeros(shape, np.uint8)
    mask[tuple(slice(s // 3, s // 2) for s in shape)] = 1
    return mask


def child_memory(job: dict) -> dict:
    """Peak memory of sampling one image with ``job['steps']`` steps."""
    import torch

    from nnunet_synth.generators.patch_ddpm.sample import sample_image
    from nnunet_synth.generators.patch_ddpm.settings import PatchDDPMGenerateOptions

    shape = tuple(job["shape"])
    network, config, n_params = _setup(MODEL_2D if len(shape) == 2 else MODEL_3D, len(shape))
    mask = _mask(shape)
    rss_setup = _rss_mib()
    opts = PatchDDPMGenerateOptions("ddim", job["steps"], job["sampling"], job.get("overlap", 0.5), job.get("tile_batch", 1))
    t0 = time.perf_counter()
    image = sample_image(network, config, mask, seed=0, options=opts, device="cpu")
    seconds = time.perf_counter() - t0
    assert image.shape == (1,) + shape and torch.isfinite(torch.from_numpy(image)).all()
    return dict(job, params=n_params, rss_after_setup_mib=rss_setup, peak_rss_mib=_rss_mib(),
                sampling_increase_mib=_rss_mib() - rss_setup, seconds=seconds)


def child_speed(job: dict) -> dict:
    """Sampling time vs the time of the same network calls made bare; the best of ``repeats`` for each.

    Both wall-clock and process CPU time are taken: on a shared machine the
    CPU time of a single-threaded process is the steadier of the two.
    """
    import torch

    from nnunet_synth.generators.patch_ddpm.sample import sample_image
    from nnunet_synth.generators.patch_ddpm.settings import PatchDDPMGenerateOptions

    shape = tuple(job["shape"])
    network, config, n_params = _setup(MODEL_2D, len(shape))
    calls = []

    def recording(inputs, t):
        calls.append((tuple(inputs.shape), tuple(t.shape)))
        return network(inputs, t)

    mask = _mask(shape)
    opts = PatchDDPMGenerateOptions(job["sampler"], job["steps"], job["sampling"], 0.5, job.get("tile_batch", 1))
    wall = {"sample": [], "bare": []}
    cpu = {"sample": [], "bare": []}
    with torch.inference_mode():
        sample_image(recording, config, mask, seed=0, options=opts, device="cpu")  # warm-up: every shape once
        for _ in range(job["repeats"]):
            calls.clear()
            w0, c0 = time.perf_counter(), time.process_time()
            sample_image(recording, config, mask, seed=0, options=opts, device="cpu")
            wall["sample"].append(time.perf_counter() - w0)
            cpu["sample"].append(time.process_time() - c0)
            inputs = [(torch.randn(s), torch.full(ts, 500)) for s, ts in calls]
            w0, c0 = time.perf_counter(), time.process_time()
            for x, t in inputs:
                network(x, t)
            wall["bare"].append(time.perf_counter() - w0)
            cpu["bare"].append(time.process_time() - c0)
    best = {k: min(v) for k, v in wall.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    return dict(job, params=n_params, network_calls=len(calls), sample_seconds=best["sample"],
                bare_network_seconds=best["bare"], overhead_ratio_wall=best["sample"] / best["bare"],
                sample_cpu_seconds=best_cpu["sample"], bare_network_cpu_seconds=best_cpu["bare"],
                overhead_ratio_cpu=best_cpu["sample"] / best_cpu["bare"], images_per_second=1.0 / best["sample"])


def _strength_cases(shape, n: int):
    """Smooth textured backgrounds with one brighter ellipse (label 1) each, in [-1, 1]."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from nnunet_synth.generators.base import TrainingCase

    rng = np.random.default_rng(0)
    grid = np.indices(shape).astype(np.float64)
    cases = []
    for i in range(n):
        centre = rng.uniform(0.3, 0.7, 2) * np.array(shape)
        radii = rng.uniform(0.1, 0.2, 2) * np.array(shape)
        seg = (((grid[0] - centre[0]) / radii[0]) ** 2 + ((grid[1] - centre[1]) / radii[1]) ** 2 <= 1).astype(np.uint8)
        texture = gaussian_filter(rng.normal(0, 1, shape), 2.0)
        image = -0.4 + 0.25 * texture / texture.std() + 0.9 * gaussian_filter(seg.astype(np.float64), 1.0)
        cases.append(TrainingCase(f"case_{i}", np.clip(image, -1, 1)[None].astype(np.float32), seg, (1.0, 1.0)))
    return cases


def child_strength(job: dict) -> dict:
    """MAD(twin, source) per --strength, for every case and seed, with a tiny model trained first."""
    import tempfile

    import numpy as np

    from nnunet_synth.generators.base import GenerationRequest
    from nnunet_synth.generators.patch_ddpm import PatchDDPMGenerator
    from nnunet_synth.generators.patch_ddpm.settings import PatchDDPMFitOptions, PatchDDPMGenerateOptions

    cases = _strength_cases(tuple(job["shape"]), job["cases"])
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        t0 = time.perf_counter()
        PatchDDPMGenerator.fit(cases, [0, 1], model_dir, PatchDDPMFitOptions(
            patch_size=(job["patch"],), channels=tuple(job["channels"]), res_blocks=1, batch_size=job["batch"],
            train_steps=job["train_steps"], learning_rate=job["lr"], lr_scheduler=job["lr_scheduler"],
            lr_warmup_steps=job["warmup"], ema_decay=job["ema"], checkpoint_every=job["train_steps"], cpu=True))
        fit_seconds = time.perf_counter() - t0
        generator = PatchDDPMGenerator.load(model_dir)
        rows = {}
        for strength in job["strengths"]:
            settings = PatchDDPMGenerateOptions("ddim", job["sampling_steps"], "full", None, 4, strength)
            mads, inside = [], []
            for case in cases:
                for seed in job["seeds"]:
                    image = generator.generate(GenerationRequest(case, case.seg, "twins", seed, None, settings)).image
                    difference = np.abs(image - case.image)[0]
                    mads.append(float(difference.mean()))
                    inside.append(float(difference[case.seg > 0].mean()))
            rows[str(strength)] = dict(mad_mean=float(np.mean(mads)), mad_std=float(np.std(mads)),
                                       mad_lesion_mean=float(np.mean(inside)), samples=len(mads),
                                       denoising_steps=min(int(job["sampling_steps"] * strength),
                                                           job["sampling_steps"]))
    # For scale: how far apart two different real cases are (no model involved).
    between = [float(np.abs(a.image - b.image).mean()) for i, a in enumerate(cases) for b in cases[i + 1:]]
    return dict(job, fit_seconds=fit_seconds, by_strength=rows, mad_between_source_cases=float(np.mean(between)))


def run_child(kind: str, job: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(job)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {kind} {job} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per child (default 1)")
    parser.add_argument("--steps", type=int, default=5, help="denoising steps of the speed runs (default 5)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "patch_ddpm.json"))
    parser.add_argument("--only", choices=["memory", "speed", "strength"],
                        help="run one part; the others are kept from --out where it has them")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, job = args.child[0], json.loads(args.child[1])
        result = {"memory": child_memory, "speed": child_speed, "strength": child_strength}[kind](job)
        print(json.dumps(result))
        return 0

    out = Path(args.out)
    previous = json.loads(out.read_text()) if args.only and out.is_file() else {}
    memory_jobs = {
        "tiled_256": dict(shape=[256, 256], sampling="tiled", steps=1),
        "tiled_1024": dict(shape=[1024, 1024], sampling="tiled", steps=1),
        "full_1024": dict(shape=[1024, 1024], sampling="full", steps=1),
        "tiled_3d_128": dict(shape=[128, 128, 128], sampling="tiled", steps=1, overlap=0.0),
        "tiled_3d_256": dict(shape=[256, 256, 256], sampling="tiled", steps=1, overlap=0.0),
    }
    speed_jobs = {
        "ddim_full_256": dict(shape=[256, 256], sampling="full", sampler="ddim", steps=args.steps, repeats=3),
        "ddim_tiled_256": dict(shape=[256, 256], sampling="tiled", sampler="ddim", steps=args.steps, repeats=3),
        "dpm_full_256": dict(shape=[256, 256], sampling="full", sampler="dpm", steps=args.steps, repeats=3),
    }
    def part(name, run):
        if args.only is None or args.only == name:
            return run()
        return previous.get(name)

    memory = part("memory", lambda: {name: run_child("memory", job, args.threads)
                                     for name, job in memory_jobs.items()})
    speed = part("speed", lambda: {name: run_child("speed", job, args.threads) for name, job in speed_jobs.items()})
    strength = part("strength", lambda: run_child("strength", STRENGTH_JOB, args.threads))

    summary = {}
    if memory:
        peak = {k: v["peak_rss_mib"] for k, v in memory.items()}
        rise = {k: v["sampling_increase_mib"] for k, v in memory.items()}
        summary.update({
            "tiled_1024_over_tiled_256_peak_rss": peak["tiled_1024"] / peak["tiled_256"],
            "tiled_1024_over_full_1024_peak_rss": peak["tiled_1024"] / peak["full_1024"],
            "tiled_1024_over_full_1024_sampling_increase": rise["tiled_1024"] / rise["full_1024"],
            "tiled_3d_256_peak_rss_mib": peak["tiled_3d_256"],
            "tiled_3d_128_peak_rss_mib": peak["tiled_3d_128"],
        })
    if speed:
        summary.update({
            "max_sampler_overhead_ratio_cpu": max(v["overhead_ratio_cpu"] for v in speed.values()),
            "max_sampler_overhead_ratio_wall": max(v["overhead_ratio_wall"] for v in speed.values()),
            "images_per_second_256_ddim_full": speed["ddim_full_256"]["images_per_second"],
            "images_per_second_256_ddim_tiled": speed["ddim_tiled_256"]["images_per_second"],
        })
    if strength:
        summary["mad_twin_vs_source_by_strength"] = {s: round(v["mad_mean"], 4)
                                                     for s, v in strength["by_strength"].items()}
        summary["mad_between_source_cases"] = round(strength["mad_between_source_cases"], 4)
    result = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": args.threads,
                          "load_average_at_end": os.getloadavg()},
              "model_2d": MODEL_2D, "model_3d": MODEL_3D, "memory": memory, "speed": speed, "strength": strength,
              "summary": summary}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
