"""One tiny study end to end (2 arms, 1 fold, a tiny patch-DDPM, 2 iterations), a rerun that does nothing and a
rerun after one arm's setting changed, which reruns only the steps that depend on it (issue 14)."""
import json
import re

import pytest

from conftest import run_command, venv_command
from nnunet_synth.testing import make_raw_dataset_2d

CONFIG = """
[study]
name = "tiny"
dataset = 951
configuration = "2d"
folds = [0]
num_processes = 1
first_id = 960

[budget]
epochs = 1
iterations = 2
val_iterations = 1

[evaluation]
disable_tta = true
bootstrap = 200

[generators.ddpm]
name = "patch-ddpm"
fit = {{ patch_size = 16, channels = [8, 16], res_blocks = 1, batch_size = 2, train_steps = 3 }}
generate = {{ mode = "twins", k = 1, steps = 2, sampling = "full" }}

[arms.baseline]
use = "baseline"

[arms.expanded]
use = "expansion"
generator = "ddpm"
synthetic_only = {synthetic_only}
"""


STEP_LINE = re.compile(r"^\[\d+/\d+\] ([^:]+?)(:|$)", re.M)


def ran_steps(stdout: str) -> list[str]:
    """The steps that started (a skipped step's line says so; a finished one's line repeats its name)."""
    return [m.group(1) for m in STEP_LINE.finditer(stdout)
            if not m.string[m.end():].startswith((" done before", " finished in"))]


@pytest.mark.e2e
def test_tiny_study_runs_resumes_and_reruns_what_changed(nnunet_folders, tmp_path):
    env = nnunet_folders.env()
    env["nnUNet_def_n_proc"] = "1"
    make_raw_dataset_2d(nnunet_folders.raw, 951, name="Tiny", n_cases=6, shape=(48, 48))
    config, workdir = tmp_path / "tiny.toml", tmp_path / "work"
    config.write_text(CONFIG.format(synthetic_only="false"))
    command = [venv_command("nnunet-synth"), "study", str(config), "-w", str(workdir), "--device", "cpu"]
    first = run_command(command, env, timeout=1200).stdout
    assert "done before, skipped" not in first

    results = json.loads((workdir / "results.json").read_text())
    assert set(results["arms"]) == {"baseline", "expanded"}
    assert results["arms"]["baseline"]["trainer"] == "nnUNetTrainerShort"
    assert results["arms"]["expanded"]["trainer"] == "nnUNetTrainerSynthExpandShort"
    assert all(a["forward_passes_per_iteration"] == 1 and a["total_training_seconds"] > 0
               for a in results["arms"].values())
    assert results["budget"]["epochs"] == 1 and results["budget"]["iterations_per_epoch"] == 2
    assert isinstance(results["budget"]["batch_size"], int)
    run = results["runs"]["f0_r0"]
    assert set(run["results"]) == {"validation"} and set(run["results"]["validation"]) == {"baseline", "expanded"}
    assert {(c["model"], c["metric"]) for c in run["comparisons"]} >= {("expanded", "Dice"), ("expanded", "HD95")}
    splits = json.loads((nnunet_folders.preprocessed / "Dataset951_Tiny" / "splits_final.json").read_text())
    validation = sorted(p.name for p in (workdir / "tests" / "validation_f0" / "labels").iterdir())
    assert validation == sorted(f"{c}.png" for c in splits[0]["val"])  # the in-domain test: fold 0's validation
    report = (workdir / "report.md").read_text()
    assert "| validation | expanded |" in report and "## Environment" in report and "train-expanded-f0-r0" in report
    assert "](cross_eval/f0_r0/plots/" in report  # cross-eval's plots, shown in the study's report
    # each repeat trains into its own nnUNet_results root; the user's stays empty
    assert (workdir / "results" / "r0" / "Dataset961_TinyExpandedF0").is_dir()
    assert not any(nnunet_folders.results.iterdir())
    all_steps = ran_steps(first)
    assert all_steps[0] == "plan" and all_steps[-1] == "report" and "train-expanded-f0-r0" in all_steps

    again = run_command(command, env, timeout=600).stdout
    assert again.count("done before, skipped") == len(all_steps)
    assert "finished in" not in again

    predictions = workdir / "cross_eval" / "f0_r0" / "predictions"

    def stamps(arm):
        return {p.name: p.stat().st_mtime_ns for p in sorted((predictions / arm / "validation").glob("*.png"))}
    baseline_before, expanded_before = stamps("baseline"), stamps("expanded")
    assert baseline_before and expanded_before

    config.write_text(CONFIG.format(synthetic_only="true"))
    changed = run_command(command, env, timeout=900).stdout
    reran = ran_steps(changed)
    assert reran == ["expand-expanded-f0 (changed since its last run)", "train-expanded-f0-r0 (changed since its last run)",
                     "cross-eval-f0-r0 (changed since its last run)", "report"]
    assert changed.count("done before, skipped") == len(all_steps) - 4
    fold0 = json.loads((nnunet_folders.preprocessed / "Dataset961_TinyExpandedF0" / "splits_final.json").read_text())[0]
    assert all("_syn" in c for c in fold0["train"])  # synthetic-only now
    # cross-eval predicted the retrained arm again and reused the baseline's predictions
    assert stamps("baseline") == baseline_before
    expanded_after = stamps("expanded")
    assert set(expanded_after) == set(expanded_before)
    assert all(expanded_after[c] > expanded_before[c] for c in expanded_after)
