"""Study configs that are refused before anything runs, one line per problem (issue 14); no step runs here."""
import json
from pathlib import Path

import pytest

from nnunet_synth.commands.main import main
from nnunet_synth.study.config import StudyConfigError, load_config

GOOD = """
[study]
dataset = 951
configuration = "2d"
folds = [0]
{study_extra}

[generators.ddpm]
name = "{generator}"
generate = {{ mode = "twins", k = 1 }}
{generator_extra}

[arms.baseline]
use = "baseline"

[arms.expanded]
use = "expansion"
generator = "ddpm"
{arm_extra}
{tests}
"""


def fake_raw(raw: Path, dataset_id: int, name: str, n_cases: int = 10, channels: int = 1) -> Path:
    """A raw dataset as far as a config check reads it: dataset.json and (empty) files with nnU-Net's names."""
    folder = raw / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for i in range(n_cases):
        for c in range(channels):
            (folder / "imagesTr" / f"case_{i:03d}_{c:04d}.png").touch()
        (folder / "labelsTr" / f"case_{i:03d}.png").touch()
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): f"ch{c}" for c in range(channels)}, "labels": {"background": 0, "lesion": 1},
        "numTraining": n_cases, "file_ending": ".png"}))
    return folder


def config(tmp_path, **parts) -> Path:
    values = dict(study_extra="", generator="patch-ddpm", generator_extra="", arm_extra="", tests="")
    values.update(parts)
    path = tmp_path / "study.toml"
    path.write_text(GOOD.format(**values))
    return path


@pytest.fixture
def real(nnunet_folders):
    return fake_raw(nnunet_folders.raw, 951, "Tiny")


def refused(path: Path) -> list[str]:
    with pytest.raises(StudyConfigError) as e:
        load_config(path)
    assert all("\n" not in p and p.startswith(f"{path}: ") for p in e.value.problems)
    return e.value.problems


def test_good_config_passes(tmp_path, real):
    study = load_config(config(tmp_path))
    assert [a.name for a in study.arms] == ["baseline", "expanded"] and study.repeats == 1
    assert study.trainer(study.arms[1]) == "nnUNetTrainerSynthExpand"


def test_unknown_key(tmp_path, real):
    problems = refused(config(tmp_path, arm_extra="synthetic_probabilty = 0.5"))
    assert len(problems) == 1 and "unknown key 'synthetic_probabilty' in [arms.expanded]" in problems[0]


def test_unknown_generator(tmp_path, real):
    problems = refused(config(tmp_path, generator="patch-dpm"))
    assert any("[generators.ddpm]: unknown generator 'patch-dpm'" in p and "patch-ddpm" in p for p in problems)


def test_unknown_generator_option(tmp_path, real):
    problems = refused(config(tmp_path, generator_extra="fit = { train_stepz = 3 }"))
    assert len(problems) == 1 and "'train_stepz' is not an option of `nnunet-synth fit patch-ddpm`" in problems[0]


def test_missing_dataset(tmp_path, nnunet_folders):
    problems = refused(config(tmp_path))
    assert len(problems) == 1 and problems[0].startswith(f"{tmp_path / 'study.toml'}: [study].dataset:")


def test_repeats_below_one(tmp_path, real):
    problems = refused(config(tmp_path, study_extra="repeats = 0"))
    assert len(problems) == 1 and "[study].repeats = 0: must be at least 1" in problems[0]


def test_test_set_with_other_channels(tmp_path, real, nnunet_folders):
    fake_raw(nnunet_folders.raw, 952, "TwoChannels", n_cases=2, channels=2)
    problems = refused(config(tmp_path, tests='[[tests]]\nname = "other"\ndataset = 952'))
    assert len(problems) == 1 and "[[tests]] other: 2 image channel(s), but Dataset951_Tiny has 1" in problems[0]


def test_arm_on_a_fold_the_generator_saw(tmp_path, real):
    # fold 1's training cases hold fold 0's validation cases: a generator fitted on them leaks into fold 0
    problems = refused(config(tmp_path, generator_extra="fit_fold = 1"))
    assert len(problems) == 1 and "[arms.expanded] fold 0: generator 'ddpm' was trained on 2 of the fold's " \
                                  "validation case(s)" in problems[0]


def test_targeted_ranking_on_the_trained_fold(tmp_path, real):
    problems = refused(config(tmp_path, arm_extra="targeted = { worst = 1, ranking_folds = [0, 1] }"))
    assert len(problems) == 1 and "ranking_folds holds fold 0" in problems[0]


def test_every_problem_one_line_each_and_nothing_runs(tmp_path, real, capsys):
    path = config(tmp_path, study_extra="repeats = 0\ncolour = 1", arm_extra="generator2 = 1")
    workdir = tmp_path / "work"
    assert main(["study", str(path), "-w", str(workdir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith(f"nnunet-synth study: error: {path}: ") for line in err)
    assert not workdir.exists()


def test_a_dataset_id_the_study_would_write_is_taken(tmp_path, real, nnunet_folders, capsys):
    fake_raw(nnunet_folders.raw, 953, "Someone", n_cases=2)  # the expanded dataset's id (951 + 2)
    assert main(["study", str(config(tmp_path)), "-w", str(tmp_path / "work"), "--device", "cpu", "--dry-run"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "dataset id 953 is taken by Dataset953_Someone" in err[0] and "first_id" in err[0]


@pytest.mark.parametrize("phantom, problem", [
    ("first_id = 700", "[study].dataset = 951: with [phantom] the real dataset is the phantom's training set, 700"),
    ("first_id = 951\nimage_size = 7", "[phantom]: image size 7: must be a whole number of rows"),
    ("first_id = 951\nn_tran = 3", "unknown key 'n_tran' in [phantom]"),
])
def test_phantom_section_is_checked_before_anything_is_written(tmp_path, nnunet_folders, phantom, problem):
    path = config(tmp_path, tests=f"[phantom]\n{phantom}")
    with pytest.raises(StudyConfigError) as e:
        load_config(path, check_data=False)
    assert len(e.value.problems) == 1 and problem in e.value.problems[0]
    assert not any(nnunet_folders.raw.iterdir())
