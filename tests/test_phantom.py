"""The ultrasound phantom: determinism, physics that the masks depend on, scanner differences, datasets, CLI."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from nnunet_synth.commands.main import main
from nnunet_synth.errors import SynthError
from nnunet_synth.phantom import SCANNERS, make_phantom_datasets, sample_anatomy, simulate
from nnunet_synth.phantom import datasets as phantom_datasets

from conftest import run_command, venv_command

SMALL = 48  # rows: enough for the statistics below, fast on a shared CPU


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    image, mask, spacing = simulate("A", 3, image_size=SMALL)
    again = simulate("A", 3, image_size=SMALL)
    other = simulate("A", 4, image_size=SMALL)
    assert image.dtype == np.uint8 and mask.dtype == np.uint8
    assert np.array_equal(image, again[0]) and np.array_equal(mask, again[1]) and spacing == again[2]
    assert not np.array_equal(image, other[0])
    assert set(np.unique(mask)) == {0, 1}
    assert spacing == pytest.approx((40.0 / SMALL, 40.0 / SMALL))


def with_lesion(anatomy, **changes):
    return dataclasses.replace(anatomy, lesion=dataclasses.replace(anatomy.lesion, **changes))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hypoechoic_lesion_is_darker_than_its_surroundings(seed):
    anatomy = sample_anatomy(np.random.default_rng(seed), kind="hypoechoic", posterior="none")
    image, mask, _ = simulate("A", seed, image_size=64, anatomy=anatomy)
    ring = ndimage.binary_dilation(mask, iterations=3) & (mask == 0)
    assert image[mask == 1].mean() < image[ring].mean() - 15


def test_dark_halo_of_an_isoechoic_lesion_lies_on_the_mask_boundary():
    anatomy = with_lesion(sample_anatomy(np.random.default_rng(5), kind="isoechoic_rim", posterior="none"),
                          rim_echo=0.05, rim_mm=1.2, echo=1.0, radius_mm=6.0)
    image, mask, _ = simulate("A", 5, anatomy=anatomy)  # 0.31 mm pixels: the 1.2 mm rim is ~4 pixels
    m = mask.astype(bool)
    core = ndimage.binary_erosion(m, iterations=6)
    rim = m & ~ndimage.binary_erosion(m, iterations=3)
    assert image[rim].mean() < image[core].mean() - 15


def test_attenuating_lesion_shadows_and_fluid_enhances_what_lies_behind_it():
    base = sample_anatomy(np.random.default_rng(7), kind="hypoechoic", posterior="none")
    _, mask, (sy, _) = simulate("A", 7, image_size=64, anatomy=base)
    rows, cols = np.nonzero(mask)
    below = slice(rows.max() + 2, min(rows.max() + 2 + int(6 / sy), mask.shape[0]))
    centre = slice(int(np.percentile(cols, 30)), int(np.percentile(cols, 70)) + 1)
    means = {}
    for effect, attenuation in (("shadowing", 2.0), ("none", base.tissue_attenuation), ("enhancement", 0.0)):
        image, _, _ = simulate("A", 7, image_size=64, anatomy=with_lesion(base, attenuation=attenuation))
        means[effect] = image[below, centre].mean()  # same seed: same speckle, only the attenuation differs
    assert means["shadowing"] < means["none"] - 20
    assert means["enhancement"] > means["none"] + 3


def test_cyst_walls_cast_edge_shadows_only_below_their_sides(monkeypatch):
    from nnunet_synth.phantom import bmode

    anatomy = sample_anatomy(np.random.default_rng(3), kind="hypoechoic", shape="round", posterior="enhancement")
    image, mask, _ = simulate("A", 3, anatomy=anatomy)
    monkeypatch.setattr(bmode, "EDGE_ATTENUATION", 0.0)
    plain, _, _ = simulate("A", 3, anatomy=anatomy)  # same speckle, no refraction at the wall
    rows, cols = np.nonzero(mask)
    below = slice(rows.max() + 2, rows.max() + 22)
    sides = [cols.min(), cols.min() + 1, cols.max() - 1, cols.max()]
    middle = slice(cols.min() + 4, cols.max() - 3)
    assert image[below][:, sides].mean() < plain[below][:, sides].mean() - 15
    assert image[below, middle].mean() == pytest.approx(plain[below, middle].mean(), abs=1.0)


def lateral_correlation_mm(image, spacing):
    """Lag (mm) at which the lateral autocorrelation of the central region falls to one half."""
    p = image[image.shape[0] // 4: 3 * image.shape[0] // 4, image.shape[1] // 4: 3 * image.shape[1] // 4].astype(float)
    p -= p.mean(axis=1, keepdims=True)
    corr = [1.0] + [(p[:, lag:] * p[:, :-lag]).mean() / (p * p).mean() for lag in range(1, 20)]
    lag = next(i for i, c in enumerate(corr) if c < 0.5)
    return (lag - 1 + (corr[lag - 1] - 0.5) / (corr[lag - 1] - corr[lag])) * spacing[1]


def test_scanners_differ_in_spacing_geometry_and_speckle_size():
    ratios = []
    for seed in (0, 1):
        anatomy = sample_anatomy(np.random.default_rng(seed))
        images = {name: simulate(name, seed, anatomy=anatomy) for name in SCANNERS}
        spacings = {name: images[name][2][0] for name in SCANNERS}
        assert len(set(spacings.values())) == len(SCANNERS)
        # The sector's corners lie outside the fan: black. Linear images have tissue there.
        assert (images["B"][0][:4, :4] == 0).all() and (images["B"][0][:4, -4:] == 0).all()
        assert images["A"][0][:4, :4].mean() > 20 and images["C"][0][:4, :4].mean() > 20
        ratios.append(lateral_correlation_mm(*images["B"][::2]) / lateral_correlation_mm(*images["A"][::2]))
    assert min(ratios) > 1.3, ratios  # the convex probe's coarse PSF gives larger speckle (in mm)


def dataset_files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make(root, **kw):
    args = dict(first_id=950, n_train=3, n_test=2, image_size=40, progress=False)
    args.update(kw)
    return make_phantom_datasets(root, **args)


def test_datasets_pass_nnunet_checks_and_are_byte_identical_for_a_seed(tmp_path):
    from nnunetv2.experiment_planning import verify_dataset_integrity as vdi
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    verify_dataset_integrity = vdi.verify_dataset_integrity  # in threads (conftest's integrity_check_in_threads)

    written = make(tmp_path / "one")
    assert list(written) == ["Dataset950_PhantomA", "Dataset951_PhantomTestA", "Dataset952_PhantomTestB",
                             "Dataset953_PhantomTestC"]
    for folder in written.values():
        verify_dataset_integrity(str(folder), num_processes=1)
        labels = sorted(folder.glob("labelsTr/*.nii.gz"))
        for label in labels:
            seg, props = SimpleITKIO().read_seg(str(label))
            assert set(np.unique(seg)) == {0, 1}
    assert (written["Dataset950_PhantomA"] / "imagesTr" / "phA_0002_0000.nii.gz").is_file()
    _, props = SimpleITKIO().read_images([str(written["Dataset952_PhantomTestB"] / "imagesTr" / "phB_test_0001_0000.nii.gz")])
    assert props["spacing"][1:] == pytest.approx(list(simulate("B", 0, image_size=40)[2]))

    make(tmp_path / "two")
    assert dataset_files(tmp_path / "one") == dataset_files(tmp_path / "two")
    make(tmp_path / "three", seed=1, n_train=1, n_test=1, scanners=["B"])
    one, three = dataset_files(tmp_path / "one"), dataset_files(tmp_path / "three")
    for image in ("Dataset950_PhantomA/imagesTr/phA_0000_0000.nii.gz",
                  "Dataset952_PhantomTestB/imagesTr/phB_test_0000_0000.nii.gz"):
        assert one[Path(image)] != three[Path(image)]


def test_rerun_skips_complete_datasets_and_refuses_other_parameters(tmp_path):
    written = make(tmp_path, scanners=["C"])
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert make(tmp_path, scanners=["C"]) == written
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamp
    with pytest.raises(SynthError, match="Dataset950_PhantomA.*other parameters"):
        make(tmp_path, scanners=["C"], seed=3)
    (tmp_path / "Dataset951_Other").mkdir()
    with pytest.raises(SynthError, match="Dataset951_Other.*id 951 is taken"):
        make(tmp_path, scanners=["A"])
    # The stored parameters keep the keys of datasets written before "device" became "scanner".
    stored = json.loads((written["Dataset953_PhantomTestC"] / "dataset.json").read_text())["phantom"]
    assert stored["device"] == "C" and stored["device_parameters"]["name"] == "C" and "scanner" not in stored


def test_interrupted_run_resumes_to_the_same_files(tmp_path, monkeypatch):
    real_write_case = phantom_datasets.write_case
    calls = []

    def write_two_then_fail(dataset, i, folder):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(i)
        return real_write_case(dataset, i, folder)

    monkeypatch.setattr(phantom_datasets, "write_case", write_two_then_fail)
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "resumed", scanners=["A"])
    assert not (tmp_path / "resumed" / "Dataset950_PhantomA").exists()  # nothing half-written in place
    monkeypatch.setattr(phantom_datasets, "write_case", real_write_case)
    make(tmp_path / "resumed", scanners=["A"])
    make(tmp_path / "fresh", scanners=["A"])
    assert dataset_files(tmp_path / "resumed") == dataset_files(tmp_path / "fresh")
    assert not list((tmp_path / "resumed").glob(".*partial"))


@pytest.mark.parametrize("args, message", [
    (["--scanners", "A,X"], "scanners A,X"),
    (["--n-train", "0"], "number of training cases 0"),
    (["--first-id", "998"], "first id 998"),
    (["--image-size", "8"], "image size 8"),
    (["--preview", "p.jpg"], "p.jpg"),
])
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, args, message):
    assert main(["phantom", "-o", str(tmp_path / "raw"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "raw").exists()


def test_no_output_folder_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert main(["phantom"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no output folder" in err


def test_command_writes_datasets_and_a_preview(tmp_path):
    from PIL import Image

    proc = run_command([venv_command("nnunet-synth"), "phantom", "-o", str(tmp_path / "raw"), "--first-id", "960",
                        "--n-train", "1", "--n-test", "1", "--scanners", "B", "--image-size", "32", "--workers", "1",
                        "--preview", str(tmp_path / "preview.png"), "--quiet"], env=None)
    assert "Dataset962_PhantomTestB" in proc.stdout
    assert json.loads((tmp_path / "raw" / "Dataset960_PhantomA" / "dataset.json").read_text())["numTraining"] == 1
    with Image.open(tmp_path / "preview.png") as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 300
