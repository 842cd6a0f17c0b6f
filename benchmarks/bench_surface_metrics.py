"""HD95 + ASSD for one case: nnunet_synth vs medpy vs MONAI (CPU).

Cases:
- 3D: one reference/prediction pair of 128 x 256 x 256 voxels (z, y, x) with
  spacing 2.5 x 0.8 x 0.8 mm: an organ-like blob (an ellipsoid whose surface is
  bent by smooth random noise) and a prediction made the same way with other
  noise, so the two overlap well but differ all along the surface;
- 2D: a batch of lesion-sized blobs on 256 x 256 images (0.5 mm pixels).

Timed per case (best of --repeats, calls interleaved so background load hits
all three alike):
- ours: ``surface_distances`` + ``hd95`` + ``assd`` (one crop, each directed distance
  computed once), with ``method="auto"`` and, for comparison, the dense EDT forced;
- medpy: ``medpy.metric.binary.hd95`` + ``assd``;
- MONAI: ``compute_hausdorff_distance(percentile=95)`` +
  ``compute_average_surface_distance(symmetric=True)`` on CPU tensors.
Values: our HD95 and ASSD against MONAI's (same definitions), our pooled HD95
against medpy's hd95, relative difference reported.

    python benchmarks/bench_surface_metrics.py [--repeats 3] [--n2d 16] [--out benchmarks/results/surface_metrics.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage


def blob(shape, spacing, seed, envelope_radii_mm, noise_mm, centre_frac=(0.5, 0.5, 0.5)):
    """An ellipsoid (radii in mm) whose surface is displaced by smooth noise of about ``noise_mm``."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=[max(4, s // 16) for s in shape])
    noise = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=3)[tuple(slice(0, s) for s in shape)]
    grid = np.meshgrid(*[(np.arange(n) - f * n) * sp for n, f, sp in zip(shape, centre_frac, spacing)], indexing="ij")
    radius = np.sqrt(sum((g / r) ** 2 for g, r in zip(grid, envelope_radii_mm)))  # 1 on the ellipsoid
    mean_radius = float(np.mean(envelope_radii_mm))
    return (1 - radius) * mean_radius + noise_mm * noise > 0


def ours(pred, ref, spacing, method="auto"):
    from nnunet_synth.evaluation.metrics import assd, hd95, hd95_pooled, surface_distances

    d = surface_distances(pred, ref, spacing, method=method)
    return {"HD95": hd95(d), "ASSD": assd(d), "HD95_pooled": hd95_pooled(d)}


def auto_choice(pred, ref):
    """Which exact method ``method="auto"`` picks for this pair (same rule as metrics.surface_distances)."""
    from nnunet_synth.evaluation.metrics import DENSE_CROP_RATIO, _union_crop, surface

    box = _union_crop(pred, ref)
    n_surface = int(surface(pred[box]).sum() + surface(ref[box]).sum())
    return "edt" if pred[box].size < DENSE_CROP_RATIO * n_surface else "kdtree"


def medpy_metrics(pred, ref, spacing):
    from medpy.metric import binary

    return {"HD95_pooled": float(binary.hd95(pred, ref, voxelspacing=spacing)),
            "ASSD": float(binary.assd(pred, ref, voxelspacing=spacing))}


def monai_metrics(pred_t, ref_t, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(pred_t, ref_t, include_background=True, percentile=95, spacing=spacing)
        asd = compute_average_surface_distance(pred_t, ref_t, include_background=True, symmetric=True, spacing=spacing)
    return {"HD95": float(hd.item()), "ASSD": float(asd.item())}


def time_cases(pairs, spacing, repeats):
    """Best-of-``repeats`` seconds for the whole list of pairs, per method, and the values of the last run."""
    import torch

    tensors = [(torch.from_numpy(p)[None, None].float(), torch.from_numpy(r)[None, None].float()) for p, r in pairs]
    methods = {"ours": lambda i: ours(*pairs[i], spacing), "ours_edt_only": lambda i: ours(*pairs[i], spacing, "edt"),
               "medpy": lambda i: medpy_metrics(*pairs[i], spacing),
               "monai": lambda i: monai_metrics(*tensors[i], spacing)}
    best = {m: float("inf") for m in methods}
    values = {m: [] for m in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            values[name] = [fn(i) for i in range(len(pairs))]
            best[name] = min(best[name], time.perf_counter() - start)
    return best, values


def rel_diff(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def summarize(name, pairs, spacing, repeats):
    seconds, values = time_cases(pairs, spacing, repeats)
    agreement = {
        "HD95_vs_monai": max(rel_diff(o["HD95"], m["HD95"]) for o, m in zip(values["ours"], values["monai"])),
        "ASSD_vs_monai": max(rel_diff(o["ASSD"], m["ASSD"]) for o, m in zip(values["ours"], values["monai"])),
        "HD95_pooled_vs_medpy": max(rel_diff(o["HD95_pooled"], m["HD95_pooled"])
                                    for o, m in zip(values["ours"], values["medpy"])),
        "ASSD_vs_medpy": max(rel_diff(o["ASSD"], m["ASSD"]) for o, m in zip(values["ours"], values["medpy"])),
    }
    n = len(pairs)
    result = {
        "cases": n, "shape": list(pairs[0][0].shape), "spacing_mm": list(spacing), "repeats": repeats,
        "foreground_fraction_ref": float(np.mean([r.mean() for _, r in pairs])),
        "seconds_per_case": {m: s / n for m, s in seconds.items()},
        "speedup_vs_medpy": seconds["medpy"] / seconds["ours"],
        "speedup_vs_monai": seconds["monai"] / seconds["ours"],
        "edt_only_speedup_vs_medpy": seconds["medpy"] / seconds["ours_edt_only"],
        "edt_only_speedup_vs_monai": seconds["monai"] / seconds["ours_edt_only"],
        "auto_method": sorted({auto_choice(p, r) for p, r in pairs}),
        "max_relative_difference": agreement,
        "example_values": {m: v[0] for m, v in values.items()},
    }
    print(f"\n{name}: {n} case(s) of shape {tuple(pairs[0][0].shape)}, spacing {tuple(spacing)} mm, best of {repeats}")
    for m in ("ours", "ours_edt_only", "medpy", "monai"):
        print(f"  {m:13s} {result['seconds_per_case'][m] * 1000:10.1f} ms/case")
    print(f"  speed-up (ours, auto = {'/'.join(result['auto_method'])}): {result['speedup_vs_medpy']:.1f}x vs medpy, "
          f"{result['speedup_vs_monai']:.2f}x vs MONAI")
    print(f"  speed-up (EDT only): {result['edt_only_speedup_vs_medpy']:.1f}x vs medpy, "
          f"{result['edt_only_speedup_vs_monai']:.2f}x vs MONAI")
    print("  max relative difference: " + ", ".join(f"{k} {v:.1e}" for k, v in agreement.items()))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n2d", type=int, default=16, help="number of 2D cases")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "surface_metrics.json"))
    args = parser.parse_args(argv)

    spacing3d = (2.5, 0.8, 0.8)
    shape3d = (128, 256, 256)
    radii = (90.0, 70.0, 60.0)  # mm: a liver-sized object
    ref3d = blob(shape3d, spacing3d, seed=1, envelope_radii_mm=radii, noise_mm=6.0)
    pred3d = blob(shape3d, spacing3d, seed=2, envelope_radii_mm=radii, noise_mm=6.0)

    spacing2d = (0.5, 0.5)
    pairs2d = []
    rng = np.random.default_rng(7)
    for i in range(args.n2d):
        centre = tuple(rng.uniform(0.35, 0.65, size=2))
        radii2d = tuple(rng.uniform(10, 30, size=2))
        pairs2d.append((blob((256, 256), spacing2d, 100 + i, radii2d, 2.0, centre),
                        blob((256, 256), spacing2d, 200 + i, radii2d, 2.0, centre)))

    results = {
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "load_average_at_start": list(os.getloadavg())},
        "3d": summarize("3D pair", [(pred3d, ref3d)], spacing3d, args.repeats),
        "2d": summarize("2D batch", pairs2d, spacing2d, args.repeats),
    }
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}"
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
