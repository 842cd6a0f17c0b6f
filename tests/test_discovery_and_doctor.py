"""Trainer discovery through nnUNet_extTrainer, packaging of trainers/, and `nnunet-synth doctor`."""
import os
import subprocess
import sys
import zipfile

import pytest

from nnunet_synth.commands.main import main
from nnunet_synth.environment import trainer_folder

OUR_TRAINERS = ["nnUNetTrainerSynthExpand", "nnUNetTrainerSynthExpand_syn50", "nnUNetTrainerShort"]


@pytest.mark.parametrize("name", OUR_TRAINERS)
def test_nnunet_finds_our_trainers(name, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", trainer_folder())
    cls = recursive_find_trainer_class_by_name(name)
    assert cls.__name__ == name and issubclass(cls, nnUNetTrainer)


def test_without_ext_trainer_nnunet_does_not_find_them(monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    with pytest.raises(RuntimeError, match="nnUNet_extTrainer"):
        recursive_find_trainer_class_by_name("nnUNetTrainerSynthExpand")


def test_trainer_modules_are_thin():
    """nnU-Net imports every module of the folder while it searches: classes only, no logic."""
    import ast
    from pathlib import Path

    for path in Path(trainer_folder()).glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            assert isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.Expr, ast.Assign)), \
                f"{path.name}: top-level {type(node).__name__} (keep trainer modules to imports and classes)"
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    assert not isinstance(item, ast.FunctionDef) or item.name == "__init__", \
                        f"{path.name}: {node.name}.{item.name} belongs in nnunet_synth"


def test_wheel_ships_the_trainer_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), "."], capture_output=True, text=True,
                          cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next(tmp_path.glob("nnunet_synth-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "nnunet_synth_trainers/nnUNetTrainerSynthExpand.py" in names
    assert "nnunet_synth/training/synth_expand.py" in names
    # the licence the metadata declares, and the recipe docs/recipes.md runs with `python -m`
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), [n for n in names if "dist-info" in n]
    assert "nnunet_synth_dataset_conversion/recipe_lung_patch_ddpm.py" in names


def test_doctor_prints_the_fix_for_each_problem(monkeypatch, tmp_path, capsys):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.delenv(var, raising=False)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert 'fix: export nnUNet_extTrainer="$(nnunet-synth trainer-path)"' in out
    assert "fix: export nnUNet_raw=" in out
    assert "[ok  ] torch + torchvision" in out

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("nnUNet_extTrainer", trainer_folder())
    assert main(["doctor", "--min-free-gb", "0"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "Everything nnunet_synth needs is in place." in out

    assert "[ok  ] nnU-Net trainer search (nnUNetTrainerDiffBoost): found (module nnUNetTrainerDiffBoost)" in out


def _apply_fix(check, cwd):
    """Run a failed check's fix line in bash; return the folder the variable then names."""
    assert not check.ok and check.fix, check
    proc = subprocess.run(["bash", "-c", f'{check.fix} && printf %s "${check.name}"'], cwd=cwd,
                          capture_output=True, text=True)
    assert proc.returncode == 0, (check.fix, proc.stderr)
    return proc.stdout


@pytest.mark.parametrize("kind", ["missing", "relative", "file", "below_a_file"])
def test_doctor_folder_fix_works(kind, monkeypatch, tmp_path):
    from nnunet_synth.environment import check_folder_variable

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "a_file").write_text("not a folder")
    value = {"missing": str(tmp_path / "nowhere"), "relative": "data/raw",
             "file": str(tmp_path / "a_file"), "below_a_file": str(tmp_path / "a_file" / "raw")}[kind]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("nnUNet_raw", value)
    check = check_folder_variable("nnUNet_raw", 0)[0]
    detail = {"missing": "does not exist", "relative": "is a relative path", "file": "is a file, not a folder",
              "below_a_file": f"cannot be created: {tmp_path / 'a_file'} is a file"}[kind]
    assert detail in check.detail, check
    folder = _apply_fix(check, tmp_path)
    assert os.path.isabs(folder) and os.path.isdir(folder), (check.fix, folder)
    monkeypatch.setenv("nnUNet_raw", folder)
    assert check_folder_variable("nnUNet_raw", 0)[0].ok


def test_doctor_reports_a_trainer_search_that_fails(monkeypatch, tmp_path):
    """One broken module in an nnUNet_extTrainer folder stops nnU-Net's search; doctor says so."""
    from nnunet_synth.environment import check_trainer_search

    broken = tmp_path / "other_trainers"
    broken.mkdir()
    (broken / "nnUNetTrainerBroken.py").write_text("import a_module_that_does_not_exist_here\n")
    monkeypatch.setenv("nnUNet_extTrainer", f"{broken}{os.pathsep}{trainer_folder()}")
    check = check_trainer_search()
    assert not check.ok and check.required
    assert "a_module_that_does_not_exist_here" in check.detail and "nnUNet_extTrainer" in check.fix, check


def test_trainer_path_command(capsys):
    assert main(["trainer-path"]) == 0
    assert capsys.readouterr().out.strip() == trainer_folder()


def test_make_setup_doctor_runs_as_a_module_without_importing_torch():
    """`make setup` ends with `python -m nnunet_synth.commands.doctor --require-torch`.

    torch is checked in a child interpreter, so a broken torch is reported rather than
    crashing doctor itself; doctor's own process therefore imports neither torch nor numpy.
    """
    code = ("import runpy, sys\nsys.argv = ['doctor', '--require-torch']\n"
            "try:\n    runpy.run_module('nnunet_synth.commands.doctor', run_name='__main__')\n"
            "except SystemExit as e:\n    print('EXIT', e.code)\n"
            "print('HEAVY', sorted(m for m in ('torch', 'numpy', 'nnunetv2') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[ok  ] torch + torchvision" in proc.stdout
    assert "EXIT 0" in proc.stdout and "HEAVY []" in proc.stdout
