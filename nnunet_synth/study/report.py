"""WORK/report.md and WORK/results.json: the study's answer, from cross-eval's summaries and the step markers.

Nothing is recomputed here: Dice, HD95, the Holm-corrected p-values and the
bootstrap intervals are cross-eval's (one cross-eval per fold and repeat). The
report adds the budget (the same for every arm), each arm's measured training
time and forward passes per iteration, the mean and sd over repeats, the
environment and the time of every step.
"""
from __future__ import annotations

import math
import platform
import statistics
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nnunet_synth.atomic import read_json, write_json_atomic, write_text_atomic

PACKAGES = ("nnunet-synth", "nnunetv2", "torch", "diffusers", "monai", "scipy", "SimpleITK", "numpy")


def environment(device: str) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    env = {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
           "device": device}
    if device.startswith("cuda"):
        import torch

        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def plans_batch_size(chain) -> int | None:
    import os

    path = Path(os.environ.get("nnUNet_preprocessed", "")) / chain.real.name / f"{chain.study.plans}.json"
    if not path.is_file():
        return None
    return read_json(path).get("configurations", {}).get(chain.study.configuration, {}).get("batch_size")


def collect(chain, runner) -> dict:
    s = chain.study
    b = s.budget
    steps = {}
    for step in chain.steps:
        recorded = runner.recorded(step.name)
        steps[step.name] = None if recorded is None else recorded.get("seconds")
    budget = {"epochs": b.epochs or 1000, "iterations_per_epoch": b.iterations or 250,
              "val_iterations_per_epoch": b.val_iterations or 50, "batch_size": plans_batch_size(chain),
              "schedule": "short trainers (nnUNetSynth_* variables)" if b.short else "nnU-Net's"}
    arms = {}
    for arm in s.arms:
        times = [steps.get(f"train-{arm.name}-f{f}-r{r}") for f in s.folds for r in range(s.repeats)]
        arms[arm.name] = {"use": arm.use, "trainer": s.trainer(arm), "generator": arm.generator,
                          "forward_passes_per_iteration": arm.forward_passes,
                          "training_seconds": [t for t in times if t is not None],
                          "total_training_seconds": round(sum(t for t in times if t is not None), 1)}
    runs = {}
    for f in s.folds:
        for r in range(s.repeats):
            path = Path(chain.work) / "cross_eval" / f"f{f}_r{r}" / "summary.json"
            summary = read_json(path)
            runs[f"f{f}_r{r}"] = {"fold": f, "repeat": r, "summary": str(path),
                                  "report": str(path.parent / "report.md"), "plots": str(path.parent / "plots"),
                                  "results": {t: {m: v["foreground_mean"] for m, v in per_model.items()}
                                              for t, per_model in summary["results"].items()},
                                  "comparisons": summary["comparisons"]}
    return {"study": s.name, "config": s.path, "settings": s.settings(), "real_dataset": chain.real.name,
            "budget": budget, "arms": arms, "runs": runs, "over_repeats": over_repeats(runs, s),
            "environment": environment(chain.device), "step_seconds": steps}


def over_repeats(runs: dict, study) -> dict:
    """fold -> test set -> arm -> metric -> {mean, sd, n} of the foreground mean over the repeats."""
    out = {}
    for f in study.folds:
        per_fold = [runs[f"f{f}_r{r}"]["results"] for r in range(study.repeats)]
        out[str(f)] = {t: {m: {metric: _mean_sd([run[t][m][metric] for run in per_fold])
                               for metric in ("Dice", "HD95")}
                           for m in per_fold[0][t]} for t in per_fold[0]}
    return out


def _mean_sd(values: list[float]) -> dict:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _p(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def render(results: dict) -> str:
    b = results["budget"]
    lines = [f"# Study {results['study']}", "",
             f"Config: `{results['config']}`. Real dataset: {results['real_dataset']}. Every arm trains with the same "
             f"budget: {b['epochs']} epochs x {b['iterations_per_epoch']} iterations x batch "
             f"{b['batch_size'] if b['batch_size'] is not None else '(plans)'} ({b['schedule']} schedule).", "",
             "## Arms", "", "| arm | use | trainer | generator | forward passes / iteration | training time (s) |",
             "|---|---|---|---|---|---|"]
    for name, a in results["arms"].items():
        lines.append(f"| {name} | {a['use']} | {a['trainer']} | {a['generator'] or '-'} | "
                     f"{a['forward_passes_per_iteration']} | {a['total_training_seconds']:.0f} |")
    for key, run in results["runs"].items():
        lines += ["", f"## Fold {run['fold']}, repeat {run['repeat']}", "",
                  "Foreground mean per test set; differences against the baseline with cross-eval's bootstrap "
                  "95% interval and Wilcoxon p-value (Holm). "
                  f"Plots and per-case tables: [{Path(run['report']).parent.name}/report.md]"
                  f"(cross_eval/{key}/report.md).", "",
                  "| test set | arm | Dice | HD95 | label | ΔDice [95% CI] | p (Dice) | ΔHD95 [95% CI] | p (HD95) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        rows = {(c["test_set"], c["model"], c["label"], c["metric"]): c for c in run["comparisons"]}
        labels = sorted({c["label"] for c in run["comparisons"]}, key=str)
        for test, per_arm in run["results"].items():
            for arm, means in per_arm.items():
                for label in labels or ["-"]:
                    d, h = rows.get((test, arm, label, "Dice")), rows.get((test, arm, label, "HD95"))
                    diff = lambda r: "—" if r is None else (  # noqa: E731
                        f"{_f(r['mean_diff'])} [{_f(r['mean_diff_ci_low'])}, {_f(r['mean_diff_ci_high'])}]")
                    lines.append(f"| {test} | {arm} | {_f(means.get('Dice'))} | {_f(means.get('HD95'), 2)} | {label} | "
                                 f"{diff(d)} | {'—' if d is None else _p(d['wilcoxon_p_holm'])} | {diff(h)} | "
                                 f"{'—' if h is None else _p(h['wilcoxon_p_holm'])} |")
        plots = sorted(Path(run["plots"]).glob("*.png"))
        if plots:
            lines += ["", "Plots (cross-eval):", ""]
            lines += [f"![{p.stem}](cross_eval/{key}/plots/{p.name})" for p in plots]
    lines += ["", "## Over repeats (mean ± sd of the foreground mean)", "",
              "| fold | test set | arm | Dice | HD95 | repeats |", "|---|---|---|---|---|---|"]
    for fold, per_test in results["over_repeats"].items():
        for test, per_arm in per_test.items():
            for arm, m in per_arm.items():
                lines.append(f"| {fold} | {test} | {arm} | {_f(m['Dice']['mean'])} ± {_f(m['Dice']['sd'])} | "
                             f"{_f(m['HD95']['mean'], 2)} ± {_f(m['HD95']['sd'], 2)} | {m['Dice']['n']} |")
    env = results["environment"]
    lines += ["", "## Environment", "", f"Python {env['python']} on {env['platform']}; device {env['device']}"
              + (f" ({env['gpu']})" if env.get("gpu") else "") + ".", "",
              ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v), "",
              "## Step times", "", "| step | seconds |", "|---|---|"]
    for name, seconds in results["step_seconds"].items():
        lines.append(f"| {name} | {'—' if seconds is None else f'{seconds:.1f}'} |")
    return "\n".join(lines) + "\n"


def write_report(chain, runner) -> dict:
    results = collect(chain, runner)
    work = Path(chain.work)
    write_json_atomic(work / "results.json", results)
    write_text_atomic(work / "report.md", render(results))
    print(f"wrote {work / 'report.md'} and {work / 'results.json'}", flush=True)
    return results
