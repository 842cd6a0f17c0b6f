"""The environment nnU-Net and nnunet_synth need: the checks of ``nnunet-synth doctor`` and the trainer folder.

Nothing here imports torch or nnU-Net: doctor must work, and say what to do,
where they are missing or broken.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import nnunet_synth_trainers

NNUNET_FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
# The nnunetv2 versions this package is tested with (setup.cfg's install_requires says why).
NNUNET_RANGE = ">=2.8,<2.9"
# The trainer doctor asks nnU-Net's trainer search for: if it is found, the others in trainers/ are too.
TRAINER_PROBE = "nnUNetTrainerDiffBoost"
MIN_FREE_GB = 10.0


def trainer_folder() -> str:
    """The folder nnUNet_extTrainer must point to (checkout or installed wheel)."""
    return os.path.dirname(os.path.abspath(nnunet_synth_trainers.__file__))


@dataclass
class Check:
    """One line of doctor's report; ``fix`` is the shell line that repairs a failed check."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def check_torch_pair() -> Check:
    # A fresh interpreter, so a half-imported torch here cannot hide the failure.
    code = "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.is_available())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Check("torch + torchvision", False, f"they do not import together: {last}",
                     f'{sys.executable} -m pip install --force-reinstall "torch" "torchvision"')
    torch_v, tv_v, cuda = proc.stdout.split()
    return Check("torch + torchvision", True, f"torch {torch_v}, torchvision {tv_v}, CUDA available: {cuda}")


def _file_in_the_way(path: str) -> str | None:
    """The file at ``path`` or at its nearest existing parent, which would make ``mkdir -p path`` fail."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return None if os.path.isdir(path) else path


def _usable_folder(*candidates: str) -> str:
    """The first candidate that is a folder or can become one with ``mkdir -p``."""
    for c in candidates:
        if _file_in_the_way(c) is None:
            return c
    return candidates[-1]


def check_folder_variable(name: str, min_free_gb: float) -> list[Check]:
    value = os.environ.get(name)
    suggested = os.path.join(os.path.expanduser("~"), "nnUNet_data", name.split("_", 1)[1])
    if not value:
        return [Check(name, False, "not set", f'export {name}="{suggested}"')]
    if not os.path.isabs(value):
        # nnU-Net reads the variable as it is: a relative path means another folder in every working directory.
        absolute = os.path.abspath(value)
        if _file_in_the_way(absolute) is None:
            fix = f'export {name}="{absolute}"'
            return [Check(name, False, f"{value} is a relative path (nnU-Net would resolve it against each "
                                       f"working directory)", fix if os.path.isdir(absolute) else
                          f'mkdir -p "{absolute}" && {fix}')]
    blocker = _file_in_the_way(value)
    if blocker is not None:
        other = _usable_folder(suggested, os.path.abspath(value) + "_folder")
        what = "is a file, not a folder" if blocker == value else f"cannot be created: {blocker} is a file"
        return [Check(name, False, f"{value} {what}", f'mkdir -p "{other}" && export {name}="{other}"')]
    if not os.path.isdir(value):
        return [Check(name, False, f"{value} does not exist", f'mkdir -p "{value}"')]
    free_gb = shutil.disk_usage(value).free / 1024 ** 3
    checks = [Check(name, True, value)]
    checks.append(Check(f"free disk for {name}", free_gb >= min_free_gb, f"{free_gb:.1f} GB free",
                        f"free space on the disk of {value} or point {name} to a bigger disk", required=False))
    return checks


def check_ext_trainer() -> Check:
    expected = trainer_folder()
    fix = 'export nnUNet_extTrainer="$(nnunet-synth trainer-path)"'
    value = os.environ.get("nnUNet_extTrainer")
    if not value:
        return Check("nnUNet_extTrainer", False, "not set: nnUNetv2_train will not find our trainers", fix)
    paths = [os.path.realpath(p) for p in value.split(os.pathsep) if p.strip()]
    if os.path.realpath(expected) not in paths:
        return Check("nnUNet_extTrainer", False, f"{value} does not include {expected}",
                     f'export nnUNet_extTrainer="{expected}{os.pathsep}$nnUNet_extTrainer"')
    return Check("nnUNet_extTrainer", True, value)


def check_trainer_search(trainer: str = TRAINER_PROBE) -> Check:
    """Whether nnU-Net's own trainer search (what nnUNetv2_train runs) finds ``trainer`` under nnUNet_extTrainer.

    A fresh interpreter, as for torch: the search imports torch and every
    module of the trainer folders, and one broken module there stops it.
    """
    code = ("import contextlib, io, sys\n"
            "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    cls = recursive_find_trainer_class_by_name(sys.argv[1])\n"
            "print(cls.__module__)")
    name = f"nnU-Net trainer search ({trainer})"
    proc = subprocess.run([sys.executable, "-c", code, trainer], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        show = (f'{sys.executable} -c "from nnunetv2.utilities.find_objects import '
                f"recursive_find_trainer_class_by_name as find; find('{trainer}')\"")
        return Check(name, False, f"nnUNetv2_train -tr {trainer} would fail: {last}",
                     f"repair or remove the module the error names, or take its folder out of nnUNet_extTrainer "
                     f"(the whole traceback: {show})")
    return Check(name, True, f"found (module {proc.stdout.strip().splitlines()[-1]})")


def check_nnunet_version() -> Check:
    try:
        v = version("nnunetv2")
    except PackageNotFoundError:
        return Check("nnunetv2", False, "not installed", f'{sys.executable} -m pip install "nnunetv2{NNUNET_RANGE}"')
    major_minor = tuple(int(x) for x in v.split(".")[:2])
    if major_minor < (2, 8):
        return Check("nnunetv2", False, f"version {v} has no nnUNet_extTrainer support",
                     f'{sys.executable} -m pip install --upgrade "nnunetv2{NNUNET_RANGE}"')
    if major_minor >= (2, 9):
        return Check("nnunetv2", False, f"version {v} is newer than the tested range {NNUNET_RANGE} (twins calls two "
                                        f"private nnU-Net functions; tests/test_nnunet_private_api.py checks them)",
                     f'{sys.executable} -m pip install "nnunetv2{NNUNET_RANGE}"', required=False)
    return Check("nnunetv2", True, f"version {v}")


def run_checks(min_free_gb: float = MIN_FREE_GB) -> list[Check]:
    """Every check of ``nnunet-synth doctor``; free disk below ``min_free_gb`` is a warning."""
    nnunet, ext = check_nnunet_version(), check_ext_trainer()
    # The two child interpreters (torch; the trainer search) run side by side: each takes seconds.
    with ThreadPoolExecutor(2) as pool:
        torch_pair = pool.submit(check_torch_pair)
        search = pool.submit(check_trainer_search) if (nnunet.ok or not nnunet.required) and ext.ok else None
        checks = [nnunet, torch_pair.result(), ext]
        if search is not None:
            checks.append(search.result())
    for name in NNUNET_FOLDER_VARIABLES:
        checks.extend(check_folder_variable(name, min_free_gb))
    return checks

