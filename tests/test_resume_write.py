"""A write killed mid-way and resumed gives the same files as an uninterrupted one."""
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

from nnunet_synth.testing import make_raw_dataset_2d, make_raw_dataset_3d

WRITER = """
import sys
from nnunet_synth.testing import make_standin_synthetic_dataset
make_standin_synthetic_dataset(sys.argv[1], sys.argv[2], int(sys.argv[3]), k=2, delay=float(sys.argv[4]))
"""


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write(real, out_root, dataset_id, delay=0.0):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(real), str(out_root), str(dataset_id), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("maker", [make_raw_dataset_2d, make_raw_dataset_3d], ids=["png", "nifti"])
def test_killed_write_resumes_to_identical_files(tmp_path, maker):
    real = maker(tmp_path / "raw", 901, n_cases=5)
    reference_root, resumed_root = tmp_path / "reference", tmp_path / "resumed"

    proc = write(real, reference_root, 902)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]
    reference = next(reference_root.iterdir())

    proc = write(real, resumed_root, 902, delay=0.5)
    images = resumed_root / reference.name / "imagesTr"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(images.glob("*_0000*"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = resumed_root / reference.name
    written = file_hashes(resumed)
    assert 3 <= len([k for k in written if k.startswith("imagesTr")]) < 10, "the kill did not land mid-way"
    assert not (resumed / "synthesis.json").exists(), "the manifest is written last"

    proc = write(real, resumed_root, 902)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]
    assert file_hashes(resumed) == file_hashes(reference)
    assert not [p for p in resumed.rglob(".tmp-*")]
    verify_dataset_integrity(str(resumed), num_processes=1)
