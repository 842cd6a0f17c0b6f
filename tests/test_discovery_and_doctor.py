"""Trainer discovery through nnUNet_extTrainer, packaging of trainers/, and `nnunet-synth doctor`."""
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

    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nowhere"))
    assert main(["doctor", "--min-free-gb", "0"]) == 1
    assert f'fix: mkdir -p "{tmp_path / "nowhere"}"' in capsys.readouterr().out


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
