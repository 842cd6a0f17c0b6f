"""WORK/report.md and WORK/results.json: the study's answer, from cross-eval's outputs and the step markers.

Per fold and repeat, Dice, HD95, the Holm-corrected p-values and the bootstrap
intervals are cross-eval's (one cross-eval per fold and repeat). Per fold, the
report also tests on per-case means over the repeats: each case's metric is
averaged over the repeats' ``per_case.csv`` and every arm is compared with the
baseline on those means by cross-eval's own ``compare_with_baseline`` (one
pair per case, so n is the number of cases, not cases x repeats). A case's
mean is over the repeats where its value is finite (a nanmean, as cross-eval's
means); it is NaN only where every repeat is (both masks empty each time), and
the paired test then leaves that case out, as it does in each run.

The report adds the budget (the same for every arm), each arm's measured
training time and forward passes per iteration, the mean and sd over repeats,
the summaries of ``nnunet-synth inspect`` for the inspected synthetic sets, the
environment and the time of every step.
"""
from __future__ import annotations

import csv
import math
import os
import platform
import re
import statistics
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import read_json, write_json_atomic, write_text_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.comparison import COMPARED_METRICS, compare_with_baseline

CONFIDENCE = 0.95  # cross-eval's default; the study does not change it
INSPECT_STEP = re.compile(r"inspect-(?P<generator>.+)-f(?P<fold>\d+)")
KEY_COLUMNS = ("test_set", "model", "label", "case")
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
            "over_repeats_tests": {str(f): over_repeats_test(chain, f) for f in s.folds},
            "inspect": inspect_summaries(chain), "environment": environment(chain.device), "step_seconds": steps}


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


def read_per_case(path: Path) -> dict:
    """cross-eval's per_case.csv as ``(test set, arm, label, case) -> {metric: value}`` for the compared metrics.

    cross-eval writes it with ``csv.DictWriter``, so a NaN (both masks empty) is spelled ``nan``, which
    ``float`` reads back.
    """
    if not path.is_file():
        raise SynthError(f"{path}: missing; the study's cross-eval step writes it (rerun that step)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in KEY_COLUMNS + COMPARED_METRICS if c not in (reader.fieldnames or [])]
        if missing:
            raise SynthError(f"{path}: no column(s) {', '.join(missing)}; not a per_case.csv of nnunet-synth "
                             f"cross-eval")
        out = {}
        for line, row in enumerate(reader, start=2):
            key = tuple(row[c] for c in KEY_COLUMNS)
            if key in out:
                raise SynthError(f"{path} line {line}: case '{key[3]}' (test set {key[0]}, arm {key[1]}, label "
                                 f"{key[2]}) appears twice")
            try:
                out[key] = {m: float(row[m]) for m in COMPARED_METRICS}
            except (TypeError, ValueError):
                bad = next(m for m in COMPARED_METRICS if not _is_number(row[m]))
                raise SynthError(f"{path} line {line}: {bad} = {row[bad]!r} is not a number") from None
    return out


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _same_cases(tables: list[dict], paths: list[Path]) -> None:
    """Every repeat scored the same (test set, arm, label, case) rows; the first difference is refused."""
    for table, path in zip(tables[1:], paths[1:]):
        for lacking, lacking_path, having, having_path in ((table, path, tables[0], paths[0]),
                                                           (tables[0], paths[0], table, path)):
            absent = [k for k in having if k not in lacking]
            if absent:
                t, m, label, case = absent[0]
                more = f"; {len(absent) - 1} more row(s) missing" if len(absent) > 1 else ""
                raise SynthError(f"{lacking_path}: no row for case '{case}' (test set {t}, arm {m}, label {label}), "
                                 f"which {having_path} has; every repeat must score the same cases{more}")


def pooled_values(paths: list[Path], baseline: str) -> tuple[dict, dict]:
    """Per-case means over the repeats' per_case.csv files.

    Returns ``values[test][arm][label][case] = {metric: mean}`` (the layout ``compare_with_baseline`` takes)
    and ``partial[(test, arm, label, metric)]``: how many case means cover fewer repeats than there are
    (a repeat's value was NaN).
    """
    tables = [read_per_case(p) for p in paths]
    _same_cases(tables, paths)
    values, partial = {}, {}
    for key in tables[0]:
        t, arm, label, case = key
        repeats = np.array([[table[key][m] for m in COMPARED_METRICS] for table in tables], float)
        finite = np.isfinite(repeats)
        counts = finite.sum(axis=0)
        means = np.where(counts > 0, np.where(finite, repeats, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
        values.setdefault(t, {}).setdefault(arm, {}).setdefault(label, {})[case] = {
            m: float(v) for m, v in zip(COMPARED_METRICS, means)}
        for m, n in zip(COMPARED_METRICS, counts):
            partial[(t, arm, label, m)] = partial.get((t, arm, label, m), 0) + int(0 < n < len(tables))
    for t, per_arm in values.items():
        if baseline not in per_arm:
            raise SynthError(f"{paths[0]}: no rows of the baseline arm '{baseline}' on test set {t}")
        for arm, per_label in per_arm.items():
            if set(per_label) != set(per_arm[baseline]):
                raise SynthError(f"{paths[0]}: arm '{arm}' on test set {t} has label(s) {', '.join(sorted(per_label))}"
                                 f", the baseline {', '.join(sorted(per_arm[baseline]))}")
    return values, partial


def pooled_means(values: dict, partial: dict) -> dict:
    """test -> arm -> per label {metric: mean, n_valid, n_partial} of the per-case means, and their foreground mean
    (the mean of the label means that are not NaN, as cross-eval's ``foreground_mean``)."""
    out = {}
    for t, per_arm in values.items():
        out[t] = {}
        for arm, per_label in per_arm.items():
            labels = {}
            for label, cases in per_label.items():
                labels[label] = {}
                for m in COMPARED_METRICS:
                    finite = [v[m] for v in cases.values() if math.isfinite(v[m])]
                    labels[label][m] = {"mean": statistics.fmean(finite) if finite else float("nan"),
                                        "n_valid": len(finite), "n_partial": partial[(t, arm, label, m)]}
            foreground = {}
            for m in COMPARED_METRICS:
                label_means = [x[m]["mean"] for x in labels.values() if not math.isnan(x[m]["mean"])]
                foreground[m] = statistics.fmean(label_means) if label_means else float("nan")
            out[t][arm] = {"n_cases": len(next(iter(per_label.values()))), "labels": labels,
                           "foreground_mean": foreground}
    return out


def over_repeats_test(chain, fold: int) -> dict:
    """Fold ``fold``: every arm against the baseline on the per-case means over the repeats (one pair per case)."""
    s = chain.study
    paths = [Path(chain.work) / "cross_eval" / f"f{fold}_r{r}" / "per_case.csv" for r in range(s.repeats)]
    values, partial = pooled_values(paths, s.baseline.name)
    labels = {label for per_arm in values.values() for per_label in per_arm.values() for label in per_label}
    comparisons = compare_with_baseline(values, s.baseline.name, {label: label for label in labels},
                                        n_resamples=s.bootstrap, confidence=CONFIDENCE, seed=s.eval_seed)
    return {"fold": fold, "repeats": s.repeats, "per_case_csv": [str(p) for p in paths],
            "n_resamples": s.bootstrap, "confidence": CONFIDENCE, "seed": s.eval_seed,
            "means": pooled_means(values, partial), "comparisons": comparisons}


def _raw_path(text: str, step: str) -> Path:
    if not text.startswith("$nnUNet_raw"):
        return Path(text)
    root = os.environ.get("nnUNet_raw")
    if not root:
        raise SynthError(f"nnUNet_raw is not set; step {step} writes its inspection into {text}")
    return Path(root + text[len("$nnUNet_raw"):])


def inspect_summaries(chain) -> dict:
    """step name -> the summary.json of every ``inspect-G-fF`` step (without its per-case rows) and its files."""
    out = {}
    for step in chain.steps:
        m = INSPECT_STEP.fullmatch(step.name)
        if m is None:
            continue
        if not step.writes:
            raise SynthError(f"step {step.name} names no inspect folder (its writes are empty)")
        folder = _raw_path(step.writes[0], step.name)
        path = folder / "summary.json"
        summary = read_json(path, f"step {step.name} (nnunet-synth inspect) writes it; rerun that step")
        missing = [k for k in ("synthetic_dataset", "n_synthetic", "n_kept", "band", "near_copies", "fidelity")
                   if k not in summary]
        fidelity = {row.get("comparison"): row for row in summary.get("fidelity", []) if isinstance(row, dict)}
        missing += [f"fidelity row '{name}'" for name in ("synthetic vs real validation",
                                                          "real training vs real validation") if name not in fidelity]
        if missing:
            raise SynthError(f"{path}: no {', '.join(missing)}; not a summary.json of nnunet-synth inspect")
        out[step.name] = {"generator": m["generator"], "fold": int(m["fold"]), "folder": str(folder),
                          "summary_file": str(path), "report": str(folder / "report.md"),
                          "per_case_csv": str(folder / "per_case.csv"),
                          "summary": {k: v for k, v in summary.items() if k != "cases"}}
    return out


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _p(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _repeats(n: int) -> str:
    return f"{n} repeat{'s' if n != 1 else ''}"


def _comparison_table(means: dict, comparisons: list[dict], n_cases: dict | None = None) -> list[str]:
    """Arm x test set x label: the foreground means and the differences from the baseline (``comparisons``)."""
    extra = " n |" if n_cases is not None else ""
    lines = ["| test set | arm | Dice | HD95 | label | ΔDice [95% CI] | p (Dice) | ΔHD95 [95% CI] | p (HD95) |" + extra,
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if extra else "")]
    rows = {(c["test_set"], c["model"], c["label"], c["metric"]): c for c in comparisons}
    labels = sorted({c["label"] for c in comparisons}, key=str)

    def diff(r) -> str:
        return "—" if r is None else f"{_f(r['mean_diff'])} [{_f(r['mean_diff_ci_low'])}, {_f(r['mean_diff_ci_high'])}]"

    for test, per_arm in means.items():
        for arm, m in per_arm.items():
            for label in labels or ["-"]:
                d, h = rows.get((test, arm, label, "Dice")), rows.get((test, arm, label, "HD95"))
                lines.append(f"| {test} | {arm} | {_f(m.get('Dice'))} | {_f(m.get('HD95'), 2)} | {label} | "
                             f"{diff(d)} | {'—' if d is None else _p(d['wilcoxon_p_holm'])} | {diff(h)} | "
                             f"{'—' if h is None else _p(h['wilcoxon_p_holm'])} |"
                             + (f" {n_cases[test][arm]} |" if n_cases is not None else ""))
    return lines


def _inspect_table(inspected: dict) -> list[str]:
    """One row per inspected synthetic set, with the real-vs-real figures it is read against."""
    lines = ["`nnunet-synth inspect` of each synthetic set, before training on it. Fréchet: distance between the "
             "baseline encoder's features of the set and of the real validation cases; W1: Wasserstein distance of "
             "the intensities inside and outside the lesion, against the real validation cases. In brackets, the "
             "same figure for the real training cases against the real validation cases (what real data gives).", "",
             "| set | step | cases | kept | near-copies | Fréchet (real) | W1 inside (real) | W1 outside (real) | "
             "report |", "|---|---|---|---|---|---|---|---|---|"]
    for name, item in inspected.items():
        s = item["summary"]
        rows = {row["comparison"]: row for row in s["fidelity"]}
        syn, real = rows["synthetic vs real validation"], rows["real training vs real validation"]
        kept = f"{s['n_kept']}/{s['n_synthetic']} (band {s['band'][0]:g}:{s['band'][1]:g})" if s["band"] else \
            "— (no band)"

        def pair(key: str) -> str:
            return f"{_f(syn[key], 2)} ({_f(real[key], 2)})"

        lines.append(f"| {s['synthetic_dataset']} | {name} | {s['n_synthetic']} | {kept} | "
                     f"{s['near_copies']}/{s['n_synthetic']} | {pair('frechet')} | {pair('wasserstein_inside')} | "
                     f"{pair('wasserstein_outside')} | [inspect/report.md]({item['report']}) |")
    return lines


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
    for fold, pooled in results["over_repeats_tests"].items():
        lines += ["", f"## Fold {fold} over {_repeats(pooled['repeats'])}: per-case means", "",
                  f"Each case's metric averaged over the repeats' per_case.csv (cross_eval/f{fold}_rR/; over the "
                  "repeats where it is finite); Dice and HD95: foreground mean of those per-case means. Differences "
                  f"against the baseline on the per-case means (n = cases): bootstrap {pooled['confidence']:.0%} "
                  f"interval ({pooled['n_resamples']} resamples, seed {pooled['seed']}) and Wilcoxon signed-rank "
                  "p-value, Holm-corrected over the test sets and labels of each arm and metric.", ""]
        means = {t: {arm: m["foreground_mean"] for arm, m in per_arm.items()} for t, per_arm in pooled["means"].items()}
        n_cases = {t: {arm: m["n_cases"] for arm, m in per_arm.items()} for t, per_arm in pooled["means"].items()}
        lines += _comparison_table(means, pooled["comparisons"], n_cases)
    for key, run in results["runs"].items():
        lines += ["", f"## Fold {run['fold']}, repeat {run['repeat']}", "",
                  "Foreground mean per test set; differences against the baseline with cross-eval's bootstrap "
                  "95% interval and Wilcoxon p-value (Holm). "
                  f"Plots and per-case tables: [{Path(run['report']).parent.name}/report.md]"
                  f"(cross_eval/{key}/report.md).", ""]
        lines += _comparison_table(run["results"], run["comparisons"])
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
    if results["inspect"]:
        lines += ["", "## Synthetic data (inspect)", ""] + _inspect_table(results["inspect"])
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
