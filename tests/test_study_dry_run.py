"""`nnunet-synth study --builtin NAME --dry-run`: the built-in studies' steps, a stable snapshot (issue 14).

The datasets are stand-ins (dataset.json and empty files with nnU-Net's names): a dry run reads no image.
After an intended change, rewrite the snapshots with NNUNET_SYNTH_UPDATE_SNAPSHOTS=1 and review the diff.
"""
import os
from pathlib import Path

import pytest

from nnunet_synth.commands.main import main
from nnunet_synth.study.config import builtin_names, builtin_path, load_config
from test_study_config import fake_raw

SNAPSHOTS = Path(__file__).parent / "study_snapshots"
# the datasets the built-in configs name, as the converters write them
DATASETS = {504: ("LIDC", ".nii.gz"), 505: ("TN3K", ".png"), 501: ("DDTI", ".png"), 503: ("TUCC", ".png"),
            502: ("BUSI", ".png")}


@pytest.fixture
def converted(nnunet_folders, tmp_path, monkeypatch):
    for dataset_id, (name, ending) in DATASETS.items():
        folder = fake_raw(nnunet_folders.raw, dataset_id, name)
        if ending != ".png":
            for path in sorted(folder.rglob("*.png")):
                path.rename(path.with_name(path.name[:-len(".png")] + ending))
            text = (folder / "dataset.json").read_text().replace('".png"', f'"{ending}"')
            (folder / "dataset.json").write_text(text)
        if name == "LIDC":  # the lung study tests on the converted imagesTs/labelsTs
            (folder / "imagesTs").mkdir()
            (folder / "labelsTs").mkdir()
    monkeypatch.chdir(tmp_path)
    return nnunet_folders


def test_builtin_configs_are_shipped():
    assert builtin_names() == ["busi", "demo", "lung", "thyroid"]


@pytest.mark.parametrize("name", ["lung", "thyroid", "busi", "demo"])
def test_builtin_dry_run_snapshot(name, converted, tmp_path, capsys):
    assert main(["study", "--builtin", name, "--dry-run", "--device", "cpu", "-w", "work"]) == 0
    out = capsys.readouterr().out.replace(str(tmp_path), "<tmp>")
    assert "<tmp>" not in out  # work paths are shown as given (-w work), nnU-Net's as $nnUNet_raw/...
    assert not (tmp_path / "work").exists()  # a dry run writes nothing
    snapshot = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("NNUNET_SYNTH_UPDATE_SNAPSHOTS"):
        snapshot.write_text(out)
    assert out == snapshot.read_text()


def test_lung_study_is_the_recipes_chain(converted):
    """The recipe's four models, its targeted arm (the 10 worst cases of folds 1-4's real-only models) and its
    generator preset."""
    study = load_config(builtin_path("lung"))
    assert [(a.name, a.use, a.synthetic_only, a.targeted and a.targeted.worst) for a in study.arms] == [
        ("real_only", "baseline", False, None), ("synthetic_only", "expansion", True, None),
        ("real_synthetic", "expansion", False, None), ("real_targeted", "expansion", False, 10)]
    assert study.generators["ddpm"].fit == {"preset": "ct3d"} and study.configuration == "3d_fullres"


def test_lung_recipe_script_is_the_builtin_study(converted, tmp_path, capsys):
    """dataset_conversion/recipe_lung_patch_ddpm.py passes its options on to `nnunet-synth study --builtin lung`."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "dataset_conversion" / "recipe_lung_patch_ddpm.py"
    spec = importlib.util.spec_from_file_location("recipe_lung_patch_ddpm_under_test", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    assert recipe.main(["--dry-run", "--device", "cpu", "-w", "work"]) == 0
    assert capsys.readouterr().out.replace(str(tmp_path), "<tmp>") == (SNAPSHOTS / "lung.txt").read_text()
    assert recipe.main(["other.toml"]) == 2
    assert "this recipe is the built-in lung study" in capsys.readouterr().err
