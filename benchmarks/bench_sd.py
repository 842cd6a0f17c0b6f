"""Overhead of the Stable Diffusion generators: ``generate`` against the bare network calls it cannot avoid.

Random SD 1.x components (``nnunet_synth.testing.tiny_sd``, block channels
``--channels``) on the CPU, one torch thread. For one image each:

- sd-inpaint: ``SDInpaintGenerator.generate`` (placement, framing, the
  inpainting pipeline, paste) against VAE-encoding the masked window,
  ``--steps`` UNet calls on the guidance batch of 2, and one VAE decode;
- controlnet: ``ControlNetGenerator.generate`` (framing, edge map, mixed text
  embedding, the ControlNet pipeline) against ``--steps`` ControlNet + UNet
  calls on the guidance batch of 2 and one VAE decode.

Text embeddings are computed once on both sides (the generators cache them).
Both sides run alternately, ``--n`` times, and are summarised by the median
process CPU time; the target is an overhead ratio ``generate / bare <= 1.1``.
Peak memory: a fresh process loads both generators and runs one side once; reported are
its peak resident set and how much the one image raised it over the loading.

    .venv/bin/python benchmarks/bench_sd.py [--resolution 128] [--steps 10] [--n 5] [--channels 64 128]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_results import write_result

HERE = Path(__file__).resolve().parent
TARGET = 1.1


def build(workdir: Path, channels: tuple[int, int], resolution: int):
    """Both generators around random SD components, and a source case (a sector image with one lesion)."""
    import json as _json

    import numpy as np
    from diffusers import ControlNetModel, UNet2DConditionModel

    from nnunet_synth.generators.base import TrainingCase
    from nnunet_synth.generators.controlnet import ControlNetGenerator
    from nnunet_synth.generators.controlnet.edges import edge_rule
    from nnunet_synth.generators.controlnet.settings import ControlNetGenerateOptions
    from nnunet_synth.generators.sd.placement import BANK_FILE, LesionBank
    from nnunet_synth.generators.sd_inpaint import SDInpaintGenerator
    from nnunet_synth.generators.sd_inpaint.settings import SDInpaintFitOptions, SDInpaintGenerateOptions
    from nnunet_synth.generators.sd_inpaint.train import build_config
    from nnunet_synth.testing import _sector_case
    from nnunet_synth.testing.tiny_sd import write_tiny_sd

    rng = np.random.default_rng(0)
    cases = []
    for i in range(4):
        image, seg = _sector_case(rng, (resolution, resolution))
        cases.append(TrainingCase(f"c{i}", np.clip(image[None] / 127.5 - 1, -1, 1).astype(np.float32), seg, (1.0, 1.0)))
    sd, sd9 = workdir / "sd", workdir / "sd9"
    if not (sd9 / "model_index.json").is_file():
        write_tiny_sd(sd, channels=channels)
        write_tiny_sd(sd9, inpainting=True, channels=channels)

    inpaint_dir = workdir / "inpaint_model"
    (inpaint_dir / "unet").mkdir(parents=True, exist_ok=True)
    UNet2DConditionModel.from_pretrained(sd9, subfolder="unet").save_pretrained(inpaint_dir / "unet")
    config = build_config(cases, [0, 1], SDInpaintFitOptions(pretrained=str(sd9), resolution=resolution), str(sd9), 9)
    (inpaint_dir / "config.json").write_text(_json.dumps(config))
    LesionBank.from_cases(cases, 1).save(inpaint_dir / BANK_FILE)
    inpaint = SDInpaintGenerator.load(inpaint_dir, "cpu")
    inpaint_settings = inpaint.check_settings(SDInpaintGenerateOptions(steps=STEPS[0], context=2.0))

    control_dir = workdir / "controlnet_model"
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32)).save_pretrained(control_dir / "controlnet")
    (control_dir / "config.json").write_text(_json.dumps({
        "_class_name": "ControlNetGenerator", "format_version": 1, "pretrained": str(sd), "image_channels": 1,
        "labels": [0, 1], "resolution": resolution, "edge_rule": edge_rule("canny", 2.0, None), "captions": {},
        "prompt": "Thyroid, Ultrasound", "settings": {}}))
    control = ControlNetGenerator.load(control_dir, "cpu")
    control_settings = control.check_settings(ControlNetGenerateOptions(steps=STEPS[0], resolution=resolution))
    return cases, (inpaint, inpaint_settings), (control, control_settings)


STEPS = [10]


def ours(generator, settings, case, seed):
    from nnunet_synth.generators.base import GenerationRequest

    mode = "inpaint" if type(generator).__name__ == "SDInpaintGenerator" else "twins"
    generator.generate(GenerationRequest(source=case, target_mask=case.seg, mode=mode, seed=seed,
                                         prompt="Thyroid, Ultrasound", settings=settings))


def bare_inpaint(generator, settings, resolution: int, seed: int):
    """The network calls of one inpainting: encode the masked image, steps x UNet(batch 2), decode."""
    import torch

    pipe = generator.pipeline
    embeds, negative = generator._prompt_embeddings("Thyroid, Ultrasound", settings.negative_prompt)
    hidden = torch.cat([negative, embeds])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        image = torch.rand((1, 3, resolution, resolution), generator=g) * 2 - 1
        masked = pipe.vae.encode(image).latent_dist.mode() * pipe.vae.config.scaling_factor
        side = masked.shape[-1]
        latents = torch.randn((1, 4, side, side), generator=g)
        mask = torch.zeros((1, 1, side, side))
        pipe.scheduler.set_timesteps(settings.steps)
        for t in pipe.scheduler.timesteps:
            x = torch.cat([latents] * 2)
            x = torch.cat([x, torch.cat([mask] * 2), torch.cat([masked] * 2)], dim=1)
            noise = pipe.unet(x, t, encoder_hidden_states=hidden).sample
            uncond, cond = noise.chunk(2)
            latents = pipe.scheduler.step(uncond + settings.guidance_scale * (cond - uncond), t, latents).prev_sample
        pipe.vae.decode(latents / pipe.vae.config.scaling_factor)


def bare_controlnet(generator, settings, resolution: int, seed: int):
    """The network calls of one twin: steps x (ControlNet + UNet)(batch 2), decode."""
    import torch

    pipe = generator.pipeline
    embeds = generator.mixed_embedding("Thyroid, Ultrasound", settings.augmentations[0], settings)
    hidden = torch.cat([generator._embedding(settings.negative_prompt), embeds])
    g = torch.Generator().manual_seed(seed)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    with torch.no_grad():
        condition = torch.rand((2, 3, resolution, resolution), generator=g)
        latents = torch.randn((1, 4, resolution // factor, resolution // factor), generator=g)
        pipe.scheduler.set_timesteps(settings.steps)
        for t in pipe.scheduler.timesteps:
            x = torch.cat([latents] * 2)
            down, mid = pipe.controlnet(x, t, encoder_hidden_states=hidden, controlnet_cond=condition,
                                        return_dict=False)
            noise = pipe.unet(x, t, encoder_hidden_states=hidden, down_block_additional_residuals=down,
                              mid_block_additional_residual=mid).sample
            uncond, cond = noise.chunk(2)
            latents = pipe.scheduler.step(uncond + settings.guidance_scale * (cond - uncond), t, latents).prev_sample
        pipe.vae.decode(latents / pipe.vae.config.scaling_factor)


def cpu_time(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def one_side(args) -> int:
    """Run one side once in this (fresh) process and print its peak resident memory in MiB."""
    import torch

    torch.set_num_threads(1)
    cases, inpaint, control = build(args.workdir, tuple(args.channels), args.resolution)
    generator, settings = inpaint if args.side.startswith("inpaint") else control
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.side.endswith("ours"):
        ours(generator, settings, cases[0], 0)
    elif args.side == "inpaint-bare":
        bare_inpaint(generator, settings, args.resolution, 0)
    else:
        bare_controlnet(generator, settings, args.resolution, 0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mib": after / 1024, "peak_rss_increase_mib": (after - before) / 1024}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--n", type=int, default=5, help="alternating repetitions per generator")
    parser.add_argument("--channels", type=int, nargs=2, default=[64, 128], help="UNet/VAE block channels")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "sd.json")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: one side, for its memory
    args = parser.parse_args(argv)
    STEPS[0] = args.steps
    if args.workdir is None:
        args.workdir = Path(tempfile.mkdtemp(prefix="bench_sd_"))
    if args.side:
        return one_side(args)

    import torch

    torch.set_num_threads(1)
    cases, inpaint, control = build(args.workdir, tuple(args.channels), args.resolution)
    result = {"resolution": args.resolution, "steps": args.steps, "channels": args.channels, "n": args.n,
              "threads": 1, "target_ratio": TARGET}
    for name, (generator, settings), bare in (("sd-inpaint", inpaint, bare_inpaint),
                                              ("controlnet", control, bare_controlnet)):
        ours(generator, settings, cases[1], 99)  # warm-up: first calls allocate
        bare(generator, settings, args.resolution, 99)
        times = {"ours": [], "bare": []}
        for i in range(args.n):
            times["ours"].append(cpu_time(lambda: ours(generator, settings, cases[i % len(cases)], i)))
            times["bare"].append(cpu_time(lambda: bare(generator, settings, args.resolution, i)))
        median = {k: statistics.median(c for c, _ in v) for k, v in times.items()}
        result[name] = {"generate_cpu_s": round(median["ours"], 4), "bare_cpu_s": round(median["bare"], 4),
                        "generate_wall_s": round(statistics.median(w for _, w in times["ours"]), 4),
                        "bare_wall_s": round(statistics.median(w for _, w in times["bare"]), 4),
                        "overhead_ratio": round(median["ours"] / median["bare"], 4)}
        result[name]["meets_target"] = result[name]["overhead_ratio"] <= TARGET
        prefix = "inpaint" if name == "sd-inpaint" else "controlnet"
        for side in ("ours", "bare"):
            out = subprocess.run([sys.executable, __file__, "--side", f"{prefix}-{side}", "--workdir", str(args.workdir),
                                  "--resolution", str(args.resolution), "--steps", str(args.steps),
                                  "--channels", *map(str, args.channels)], capture_output=True, text=True, check=True)
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            result[name][f"peak_rss_mib_{side}"] = round(measured["peak_rss_mib"], 1)
            # what one image adds to the peak, over loading both generators (the same on both sides)
            result[name][f"peak_rss_increase_mib_{side}"] = round(measured["peak_rss_increase_mib"], 1)
    write_result(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
