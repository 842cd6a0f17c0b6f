"""The study's report.md / results.json from hand-written cross-eval and inspect outputs (issue 14); no training."""
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.comparison import compare_with_baseline
from nnunet_synth.evaluation.cross_eval import CSV_METRICS, _write_csv
from nnunet_synth.study.config import Arm, Budget, Study
from nnunet_synth.study.report import pooled_values, write_report

CASES = [f"case_{i:03d}" for i in range(8)]
ARMS = ("baseline", "steady", "flaky")
LABEL = "lesion"


def make_study(repeats: int) -> Study:
    arms = (Arm("baseline", "baseline", "nnUNetTrainer"),
            Arm("steady", "expansion", "nnUNetTrainerSynthExpand", "ddpm"),
            Arm("flaky", "expansion", "nnUNetTrainerSynthExpand", "ddpm"))
    return Study(path="tiny.toml", name="tiny", dataset="951", configuration="2d", plans="nnUNetPlans", folds=(0,),
                 repeats=repeats, first_id=None, num_processes=1, budget=Budget(1, 2, 1), tests=(), arms=arms,
                 bootstrap=200, eval_seed=3)


def dice_table(repeats: int) -> dict:
    """(repeat, arm, case) -> Dice. steady: better on every case in every repeat; flaky: better in repeat 0 only."""
    rng = np.random.default_rng(0)
    out = {}
    for r in range(repeats):
        base = rng.uniform(0.5, 0.8, len(CASES))
        gain = 0.02 + 0.01 * np.arange(len(CASES)) + rng.uniform(0, 0.004, len(CASES))
        for i, case in enumerate(CASES):
            out[(r, "baseline", case)] = float(base[i])
            out[(r, "steady", case)] = float(base[i] + gain[i])
            # repeat 0 better on every case, repeat 1 as much worse (with a little noise): no gain on average
            out[(r, "flaky", case)] = float(base[i] + (gain[i] if r == 0 else -gain[i] + rng.uniform(-0.003, 0.003)))
    return out


def hd95(r: int, arm: str, i: int, dice: float) -> float:
    if arm == "baseline" and i == 2 and r == 1:
        return float("nan")  # one repeat without a value: the case's mean is the other repeat's
    if arm == "flaky" and i == 5:
        return float("nan")  # never a value: the case is left out of the paired test
    return 20.0 * (1 - dice) + i


def write_run(work: Path, r: int, dice: dict, drop: str | None = None, extra: str | None = None) -> None:
    """cross_eval/f0_rR as cross-eval writes it: per_case.csv (its own writer and columns) and summary.json."""
    folder = work / "cross_eval" / f"f0_r{r}"
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    (folder / "plots" / "box_validation_lesion.png").write_bytes(b"")
    rows, values = [], {"validation": {}}
    for arm in ARMS:
        values["validation"][arm] = {LABEL: {}}
        for i, case in enumerate(CASES + ([extra] if extra else [])):
            if case == drop:
                continue
            d = dice[(r, arm, case)] if case in CASES else 0.5
            metrics = {k: 0.0 for k in CSV_METRICS}
            metrics.update(Dice=d, IoU=d / (2 - d), HD95=hd95(r, arm, i, d), ASSD=hd95(r, arm, i, d) / 3,
                           empty_pred=False, empty_ref=False)
            rows.append({"test_set": "validation", "model": arm, "case": case, "label": LABEL, **metrics})
            values["validation"][arm][LABEL][case] = metrics
    _write_csv(folder / "per_case.csv", rows)
    comparisons = compare_with_baseline(values, "baseline", {LABEL: LABEL}, 200, 0.95, 3)
    results = {"validation": {arm: {"foreground_mean": {
        m: float(np.nanmean([v[m] for v in values["validation"][arm][LABEL].values()])) for m in ("Dice", "HD95")}}
        for arm in ARMS}}
    (folder / "summary.json").write_text(json.dumps({"results": results, "comparisons": comparisons}))


class Runner:
    def recorded(self, name):
        return {"seconds": 1.5}


def make_chain(work: Path, study: Study, steps=()) -> SimpleNamespace:
    names = ["plan"] + [f"train-{a.name}-f0-r{r}" for a in study.arms for r in range(study.repeats)] + \
        [f"cross-eval-f0-r{r}" for r in range(study.repeats)]
    all_steps = [SimpleNamespace(name=n, writes=[]) for n in names] + list(steps) + [
        SimpleNamespace(name="report", writes=[])]
    return SimpleNamespace(study=study, work=str(work), steps=all_steps, real=SimpleNamespace(name="Dataset951_Tiny"),
                           device="cpu")


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    return tmp_path


def two_repeats(work: Path) -> dict:
    dice = dice_table(2)
    for r in range(2):
        write_run(work, r, dice)
    return dice


def test_per_case_means_over_repeats_are_tested(folders):
    work = folders / "work"
    dice = two_repeats(work)
    results = write_report(make_chain(work, make_study(2)), Runner())
    pooled = results["over_repeats_tests"]["0"]
    rows = {(c["model"], c["metric"]): c for c in pooled["comparisons"]}

    mean = {arm: np.array([(dice[(0, arm, c)] + dice[(1, arm, c)]) / 2 for c in CASES]) for arm in ARMS}
    means = pooled["means"]["validation"]
    for arm in ARMS:
        assert means[arm]["labels"][LABEL]["Dice"]["mean"] == pytest.approx(mean[arm].mean(), abs=1e-12)
        assert means[arm]["foreground_mean"]["Dice"] == pytest.approx(mean[arm].mean(), abs=1e-12)
    steady = rows[("steady", "Dice")]
    # one pair per case of the per-case means, not the 2 x 8 rows of both repeats
    assert steady["n"] == len(CASES) and steady["n_dropped"] == 0
    assert steady["mean_diff"] == pytest.approx((mean["steady"] - mean["baseline"]).mean(), abs=1e-12)
    assert steady["wilcoxon_p"] == pytest.approx(stats.wilcoxon(mean["steady"], mean["baseline"]).pvalue)
    assert steady["wilcoxon_p"] == pytest.approx(2 / 2 ** len(CASES))  # exact: every sign the same
    flaky = rows[("flaky", "Dice")]
    assert flaky["n"] == len(CASES)
    assert steady["wilcoxon_p_holm"] < 0.05 < flaky["wilcoxon_p_holm"]
    assert steady["mean_diff_ci_low"] > 0 and flaky["mean_diff_ci_low"] < 0 < flaky["mean_diff_ci_high"]

    # NaN: a case's mean is over the repeats with a value; a case without any is left out of the test
    values, _ = pooled_values([work / "cross_eval" / f"f0_r{r}" / "per_case.csv" for r in range(2)], "baseline")
    base_hd = values["validation"]["baseline"][LABEL]
    assert base_hd["case_002"]["HD95"] == pytest.approx(hd95(0, "baseline", 2, dice[(0, "baseline", "case_002")]))
    assert base_hd["case_003"]["HD95"] == pytest.approx(
        (hd95(0, "baseline", 3, dice[(0, "baseline", "case_003")]) + hd95(1, "baseline", 3, dice[(1, "baseline",
                                                                                                  "case_003")])) / 2)
    assert math.isnan(values["validation"]["flaky"][LABEL]["case_005"]["HD95"])
    assert means["baseline"]["labels"][LABEL]["HD95"]["n_partial"] == 1
    assert rows[("flaky", "HD95")]["n"] == len(CASES) - 1 and rows[("flaky", "HD95")]["n_dropped"] == 1

    report = (work / "report.md").read_text()
    pooled_at, run_at = report.index("## Fold 0 over 2 repeats: per-case means"), report.index("## Fold 0, repeat 0")
    assert report.index("## Arms") < pooled_at < run_at < report.index("## Environment")
    table = report[pooled_at:run_at]
    assert "| test set | arm | Dice | HD95 | label | ΔDice [95% CI] | p (Dice) | ΔHD95 [95% CI] | p (HD95) | n |" \
        in table
    assert f"| validation | steady | {mean['steady'].mean():.3f} |" in table
    assert f"{steady['wilcoxon_p_holm']:.3g} |" in table
    assert "| validation | steady |" in report[run_at:] and "](cross_eval/f0_r0/plots/" in report
    assert "train-steady-f0-r1" in report and "## Synthetic data (inspect)" not in report
    saved = json.loads((work / "results.json").read_text())
    assert saved["over_repeats_tests"]["0"]["comparisons"][0]["n"] == len(CASES) and saved["inspect"] == {}


def test_one_repeat_gives_the_single_run(folders):
    work = folders / "work"
    write_run(work, 0, dice_table(1))
    results = write_report(make_chain(work, make_study(1)), Runner())
    pooled = results["over_repeats_tests"]["0"]["comparisons"]
    run = results["runs"]["f0_r0"]["comparisons"]
    assert json.dumps(pooled, sort_keys=True) == json.dumps(run, sort_keys=True)
    assert "## Fold 0 over 1 repeat: per-case means" in (work / "report.md").read_text()


@pytest.mark.parametrize("where", ["dropped", "added"])
def test_a_case_missing_in_one_repeat_is_refused(folders, where):
    work = folders / "work"
    dice = dice_table(2)
    write_run(work, 0, dice)
    if where == "dropped":
        write_run(work, 1, dice, drop="case_004")
        missing_in, case = "f0_r1/per_case.csv", "case_004"
    else:
        write_run(work, 1, dice, extra="case_999")
        missing_in, case = "f0_r0/per_case.csv", "case_999"
    with pytest.raises(SynthError) as error:
        write_report(make_chain(work, make_study(2)), Runner())
    message = str(error.value)
    assert message.startswith(str(work / "cross_eval" / missing_in)) and f"'{case}'" in message
    assert "\n" not in message and not (work / "report.md").exists()


def test_a_missing_per_case_csv_is_refused(folders):
    work = folders / "work"
    two_repeats(work)
    (work / "cross_eval" / "f0_r1" / "per_case.csv").unlink()
    with pytest.raises(SynthError, match="f0_r1/per_case.csv: missing"):
        write_report(make_chain(work, make_study(2)), Runner())


INSPECT = {
    "synthetic_dataset": "Dataset952_TinyDdpmF0", "real_dataset": "Dataset951_Tiny", "fold": 0,
    "baseline": "/results/Dataset951_Tiny/nnUNetTrainer__nnUNetPlans__2d", "band": [0.5, 1.0], "dropped": 3,
    "n_synthetic": 10, "n_kept": 7, "near_copies": 1, "copy_threshold": 0.95,
    "fidelity": [{"comparison": "synthetic vs real validation", "n": 10, "n_reference": 4, "frechet": 12.345,
                  "wasserstein_inside": 0.0456, "wasserstein_outside": 0.0789},
                 {"comparison": "real training vs real validation", "n": 6, "n_reference": 4, "frechet": 3.211,
                  "wasserstein_inside": 0.0123, "wasserstein_outside": 0.0234}],
    "cases": [{"case": f"case_000_syn{k:03d}"} for k in range(10)],
}


def inspect_step(name="inspect-ddpm-f0", dataset="Dataset952_TinyDdpmF0"):
    return SimpleNamespace(name=name, writes=[f"$nnUNet_raw/{dataset}/inspect"])


def test_inspect_summaries_in_the_report(folders):
    work = folders / "work"
    two_repeats(work)
    folder = folders / "raw" / "Dataset952_TinyDdpmF0" / "inspect"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(INSPECT))
    results = write_report(make_chain(work, make_study(2), [inspect_step()]), Runner())
    report = (work / "report.md").read_text()
    section = report[report.index("## Synthetic data (inspect)"):report.index("## Environment")]
    assert (f"| Dataset952_TinyDdpmF0 | inspect-ddpm-f0 | 10 | 7/10 (band 0.5:1) | 1/10 | 12.35 (3.21) | "
            f"0.05 (0.01) | 0.08 (0.02) | [inspect/report.md]({folder / 'report.md'}) |") in section
    item = json.loads((work / "results.json").read_text())["inspect"]["inspect-ddpm-f0"]
    assert item["generator"] == "ddpm" and item["fold"] == 0 and item["summary"]["n_kept"] == 7
    assert item["summary"]["fidelity"][1]["frechet"] == 3.211 and "cases" not in item["summary"]
    assert results["inspect"]["inspect-ddpm-f0"]["summary_file"] == str(folder / "summary.json")


def test_inspect_without_band_and_without_baseline(folders):
    work = folders / "work"
    two_repeats(work)
    folder = folders / "raw" / "Dataset952_TinyDdpmF0" / "inspect"
    folder.mkdir(parents=True)
    summary = dict(INSPECT, band=None, baseline=None, dropped=None, n_kept=10,
                   fidelity=[dict(row, frechet=float("nan")) for row in INSPECT["fidelity"]])
    (folder / "summary.json").write_text(json.dumps(summary))  # NaN, as inspect writes it (json's default)
    write_report(make_chain(work, make_study(2), [inspect_step()]), Runner())
    report = (work / "report.md").read_text()
    assert "| Dataset952_TinyDdpmF0 | inspect-ddpm-f0 | 10 | — (no band) | 1/10 | n/a (n/a) | 0.05 (0.01) |" in report


def test_a_missing_inspect_summary_is_refused(folders):
    work = folders / "work"
    two_repeats(work)
    with pytest.raises(SynthError) as error:
        write_report(make_chain(work, make_study(2), [inspect_step()]), Runner())
    path = folders / "raw" / "Dataset952_TinyDdpmF0" / "inspect" / "summary.json"
    assert str(error.value).startswith(f"{path}: missing") and "inspect-ddpm-f0" in str(error.value)
    assert not (work / "report.md").exists()
