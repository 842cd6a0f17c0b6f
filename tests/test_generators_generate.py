"""fit + generate with the test generator, in process: outputs, manifest, seeds, resume rules, bad input."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_generators_blur import blur_registered  # noqa: F401  (fixture)

from nnunet_synth.commands.main import main as cli_main
from nnunet_synth.manifest import Manifest, sample_seed
from nnunet_synth.raw_dataset import RawDataset
from nnunet_synth.splits import default_folds
from nnunet_synth.testing import make_raw_dataset_2d, make_raw_dataset_3d


def fit(*args) -> int:
    return cli_main(["fit", "test-blur", *map(str, args)])


def generate(*args) -> int:
    return cli_main(["generate", "test-blur", *map(str, args)])


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def tiny2d(nnunet_folders, blur_registered, tmp_path):  # noqa: F811
    make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=5, shape=(24, 20))
    model = tmp_path / "model2d"
    assert fit("-d", 901, "--fold", 0, "-o", model) == 0
    return nnunet_folders, model


def test_fit_records_the_folds_training_cases(tiny2d):
    folders, model = tiny2d
    record = json.loads((model / "training_cases.json").read_text())
    real = RawDataset.open(901)
    assert record["cases"] == default_folds(real.case_ids())[0]["train"] and record["fold"] == 0
    assert record["dataset"] == "Dataset901_Tiny2D" and record["generator"] == "test-blur"
    # a rerun with other cases into the same folder is refused
    assert fit("-d", 901, "--cases", "case_000", "-o", model) == 2
    # splits_final.json in nnUNet_preprocessed takes precedence over the default split
    split = folders.preprocessed / "Dataset901_Tiny2D" / "splits_final.json"
    split.parent.mkdir(parents=True)
    split.write_text(json.dumps([{"train": ["case_001", "case_003"], "val": ["case_000"]}]))
    assert fit("-d", 901, "--fold", 0, "-o", model.parent / "m2") == 0
    assert json.loads((model.parent / "m2" / "training_cases.json").read_text())["cases"] == ["case_001", "case_003"]


def test_twins_and_new_2d(tiny2d, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from skimage import io

    folders, model = tiny2d
    real = RawDataset.open(901)
    assert generate("-m", model, "-d", 901, "-o", 902, "--mode", "twins", "-k", 2) == 0
    assert generate("-m", model, "-d", 901, "-o", 903, "--mode", "new", "-k", 1, "--cases", "case_001", "case_004") == 0
    twins, new = folders.raw / "Dataset902_Tiny2DSynthTwins", folders.raw / "Dataset903_Tiny2DSynthNew"
    assert not (twins / ".synthesis_parts").exists()
    verify_dataset_integrity(str(twins), num_processes=1)
    dataset_json = json.loads((twins / "dataset.json").read_text())
    assert dataset_json["numTraining"] == 10 and dataset_json["labels"] == real.labels
    assert dataset_json["file_ending"] == ".png" and dataset_json["channel_names"] == real.dataset_json["channel_names"]

    manifest = Manifest.load(twins)
    record = manifest.generators["Dataset902_Tiny2DSynthTwins"]
    assert record.trained_on == json.loads((model / "training_cases.json").read_text())["cases"]
    assert record.parameters["k"] == 2 and record.parameters["mode"] == "twins"
    for case in real.case_ids():
        real_image, real_seg = io.imread(real.image_files(case)[0]), io.imread(real.label_file(case))
        for k in range(2):
            entry = manifest.cases[f"{case}_syn{k:03d}"]
            assert entry.source_case == case and entry.kind == "twin" and entry.seed == sample_seed(0, case, k)
            image = io.imread(twins / "imagesTr" / f"{case}_syn{k:03d}_0000.png")
            label = io.imread(twins / "labelsTr" / f"{case}_syn{k:03d}.png")
            assert image.dtype == real_image.dtype == np.uint8 and image.shape == real_image.shape
            assert np.array_equal(label, real_seg)  # a twin keeps the real mask
            # intensities follow the source case's distribution (quantile mapping)
            assert abs(np.median(image.astype(float)) - np.median(real_image.astype(float))) <= 2
        a, b = (io.imread(twins / "imagesTr" / f"{case}_syn{k:03d}_0000.png") for k in range(2))
        assert not np.array_equal(a, b)  # different k, different image

    assert sorted(Manifest.load(new).cases) == ["case_001_new000", "case_004_new000"]
    entry = Manifest.load(new).cases["case_001_new000"]
    deformation = entry.extra["mask_deformation"]
    assert entry.extra["mask_source"] == "case_001" and deformation["seed"] == entry.seed
    label = io.imread(new / "labelsTr" / "case_001_new000.png")
    assert set(np.unique(label)) == {0, 1} and not np.array_equal(label, io.imread(real.label_file("case_001")))


def test_same_seed_same_files_rerun_resumes_other_parameters_refused(tiny2d):
    folders, model = tiny2d
    base = ["-m", model, "-d", 901, "--mode", "new", "-k", 1, "--cases", "case_000", "case_002"]
    assert generate(*base, "-o", 904) == 0
    assert generate(*base, "-o", 905, "--name", "Again") == 0
    first, second = folders.raw / "Dataset904_Tiny2DSynthNew", folders.raw / "Dataset905_Again"
    images = lambda d: {k: v for k, v in files_of(d).items() if k.endswith(".png")}  # noqa: E731
    assert images(first) == images(second) and len(images(first)) == 4
    before = files_of(first)
    assert generate(*base, "-o", 904) == 0  # same command again: already complete, nothing changes
    reordered = ["-m", model, "-d", 901, "--mode", "new", "-k", 1, "--cases", "case_002", "case_000"]
    assert generate(*reordered, "-o", 904) == 0  # the order of --cases is not a parameter
    assert files_of(first) == before
    assert generate(*base, "-o", 904, "--seed", 1) == 2  # other parameters: refused
    assert files_of(first) == before
    assert generate(*base, "-o", 904, "--seed", 1, "--overwrite") == 0
    assert images(first) != images(second)
    assert generate(*base, "-o", 901) == 2  # the real dataset's id


def test_3d_twins_keep_geometry_and_dtype(nnunet_folders, blur_registered, tmp_path):  # noqa: F811
    import SimpleITK as sitk

    make_raw_dataset_3d(nnunet_folders.raw, 911, n_cases=5, shape=(6, 12, 10))
    model = tmp_path / "model3d"
    assert fit("-d", 911, "--cases", "case_000", "case_001", "-o", model) == 0
    assert generate("-m", model, "-d", 911, "-o", 912, "--mode", "twins", "-k", 1, "--cases", "case_003") == 0
    assert generate("-m", model, "-d", 911, "-o", 913, "--mode", "new", "-k", 1, "--cases", "case_003") == 0
    real = RawDataset.open(911)
    src = sitk.ReadImage(real.image_files("case_003")[0])
    for out, case in ((nnunet_folders.raw / "Dataset912_Tiny3DSynthTwins", "case_003_syn000"),
                      (nnunet_folders.raw / "Dataset913_Tiny3DSynthNew", "case_003_new000")):
        image = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
        label = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))
        for written in (image, label):
            assert written.GetSize() == src.GetSize() and written.GetSpacing() == src.GetSpacing()
            assert written.GetOrigin() == src.GetOrigin() and written.GetDirection() == src.GetDirection()
        assert image.GetPixelID() == src.GetPixelID() == sitk.sitkInt16
        assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1}
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(nnunet_folders.raw / "Dataset913_Tiny3DSynthNew"), num_processes=1)


def test_worst_cases_from_a_baseline(tiny2d, tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import save_summary_json

    folders, model = tiny2d
    baseline = tmp_path / "results"
    for fold, cases in enumerate((["case_000", "case_001"], ["case_002", "case_003", "case_004"])):
        (baseline / f"fold_{fold}" / "validation").mkdir(parents=True)
        per_case = [{"reference_file": f"/x/{c}.png", "metrics": {1: {"Dice": 0.1 * (i + 3 * fold)}}}
                    for i, c in enumerate(cases)]
        save_summary_json({"metric_per_case": per_case, "mean": {}}, str(baseline / f"fold_{fold}" / "validation" / "summary.json"))
    assert generate("-m", model, "-d", 901, "-o", 906, "--mode", "twins", "-k", 1, "--worst", 2) == 2  # no --baseline
    assert generate("-m", model, "-d", 901, "-o", 906, "--mode", "twins", "-k", 1,
                    "--worst", 2, "--baseline", baseline) == 0
    manifest = Manifest.load(folders.raw / "Dataset906_Tiny2DSynthTwins")
    assert sorted(manifest.cases) == ["case_000_syn000", "case_001_syn000"]
    selection = manifest.generators["Dataset906_Tiny2DSynthTwins"].parameters["selection"]
    assert selection["by"] == "worst" and selection["baseline_dice"] == {"case_000": 0.0, "case_001": 0.1}


def test_bad_input_gives_one_line_and_writes_nothing(tiny2d, tmp_path, capsys):
    folders, model = tiny2d
    raw_before = sorted(p.name for p in folders.raw.iterdir())

    def refused(*args, match):
        capsys.readouterr()
        assert generate(*args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, err
        assert sorted(p.name for p in folders.raw.iterdir()) == raw_before

    common = ["-d", 901, "-o", 907, "--mode", "twins"]
    refused("-m", tmp_path / "nowhere", *common, "-k", 1, match="does not exist; run `nnunet-synth fit test-blur")
    refused("-m", model, "-d", 999, "-o", 907, "--mode", "twins", "-k", 1, match="dataset id 999 does not exist")
    refused("-m", model, *common, "-k", 0, match="-k must be at least 1")
    refused("-m", model, *common, "-k", 1, "--cases", "case_999", match="case_999 are not in")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    refused("-m", incomplete, *common, "-k", 1, match="training_cases.json: missing")
    (model / "model.safetensors").rename(tmp_path / "weights")
    refused("-m", model, *common, "-k", 1, match="missing model.safetensors")
    (tmp_path / "weights").rename(model / "model.safetensors")

    # a mask with a label the model never saw
    from skimage import io

    real = RawDataset.open(901)
    seg = io.imread(real.label_file("case_002"))
    seg[0, 0] = 2
    io.imsave(real.label_file("case_002"), seg, check_contrast=False)
    dataset_json = json.loads((real.folder / "dataset.json").read_text())
    dataset_json["labels"]["other"] = 2
    (real.folder / "dataset.json").write_text(json.dumps(dataset_json))
    refused("-m", model, *common, "-k", 1, match="(case 'case_002'): label value(s) [2] are not among the values allowed by the model")


def test_fit_that_fails_leaves_no_model_folder(tiny2d, tmp_path, capsys):
    assert cli_main(["fit", "test-blur", "-d", "901", "--fold", "0", "-o", str(tmp_path / "m"), "--fail-in-fit"]) == 2
    assert "refused by --fail-in-fit" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    assert fit("-d", 901, "--fold", 7, "-o", tmp_path / "m") == 2
    assert not (tmp_path / "m").exists()


def test_help_lists_generators_and_their_own_options(blur_registered, capsys):  # noqa: F811
    from nnunet_synth.commands.main import main

    for argv, expected in ((["generate", "--help"], ["patch-ddpm", "test-blur", "--mode twins"]),
                           (["generate", "test-blur", "--help"], ["--sleep-per-case", "--worst N", "test-blur: Label means"]),
                           (["fit", "test-blur", "--help"], ["--fail-in-fit", "--fold F"])):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        out = capsys.readouterr().out
        assert exit_info.value.code == 0 and all(text in out for text in expected), (argv, out)


def test_inpaint_keeps_the_source_outside_the_new_lesion_and_records_prompt_and_extras(tiny2d):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from skimage import io

    folders, model = tiny2d
    real = RawDataset.open(901)
    assert generate("-m", model, "-d", 901, "-o", 908, "--mode", "inpaint", "-k", 2, "--cases", "case_001",
                    "--prompt", "a hypoechoic nodule") == 0
    out = folders.raw / "Dataset908_Tiny2DSynthInpaint"
    verify_dataset_integrity(str(out), num_processes=1)
    manifest = Manifest.load(out)
    assert sorted(manifest.cases) == ["case_001_inp000", "case_001_inp001"]
    assert manifest.generators[out.name].parameters["prompt"] == "a hypoechoic nodule"
    source_image, source_seg = io.imread(real.image_files("case_001")[0]), io.imread(real.label_file("case_001"))
    for k in range(2):
        entry = manifest.cases[f"case_001_inp{k:03d}"]
        assert entry.kind == "inpaint" and entry.prompt == "a hypoechoic nodule"
        (y0, y1), (x0, x1) = entry.extra["lesion_box"]
        painted = np.zeros(source_seg.shape, bool)
        painted[y0:y1, x0:x1] = True
        image = io.imread(out / "imagesTr" / f"case_001_inp{k:03d}_0000.png")
        label = io.imread(out / "labelsTr" / f"case_001_inp{k:03d}.png")
        # the label is the union: the source's lesion kept, the new one added where it was painted
        assert np.array_equal(label[~painted], source_seg[~painted]) and np.all(label[painted] == 1)
        assert not source_seg[painted].any()
        # untouched voxels keep the source's own intensities exactly
        assert np.array_equal(image[~painted], source_image[~painted])
        assert not np.array_equal(image[painted], source_image[painted])


def test_modes_and_prompts_a_generator_does_not_support_are_refused(tiny2d, capsys):
    folders, model = tiny2d
    with pytest.raises(SystemExit) as exit_info:  # not a mode at all: argparse's usage error
        generate("-m", model, "-d", 901, "-o", 909, "--mode", "paint", "-k", 1)
    assert exit_info.value.code == 2
    patch_ddpm = ["generate", "patch-ddpm", "-m", str(model), "-d", "901", "-o", "909", "-k", "1"]
    capsys.readouterr()
    assert cli_main([*patch_ddpm, "--mode", "inpaint"]) == 2
    assert "generator patch-ddpm supports --mode twins or new, not inpaint" in capsys.readouterr().err
    assert cli_main([*patch_ddpm, "--mode", "twins", "--prompt", "a nodule"]) == 2
    assert "generator patch-ddpm takes no prompt" in capsys.readouterr().err
    assert not list(folders.raw.glob("Dataset909_*"))


def test_a_response_that_breaks_the_contract_is_an_error(tiny2d, monkeypatch, capsys):
    from test_generators_blur import BlurTestGenerator

    from nnunet_synth.generators.base import GenerationResponse

    folders, model = tiny2d
    original = BlurTestGenerator.generate

    def refused(message, *args):
        """One line naming the generator and the case, exit 2, and (the first sample failed) no folder."""
        capsys.readouterr()
        assert generate(*args) == 2
        err = capsys.readouterr().err.strip().replace("\r", "\n").splitlines()[-1]
        assert re.search(message, err) and "generator BlurTestGenerator" in err and "case_001" in err, err
        assert not list(folders.raw.glob(f"Dataset{args[args.index('-o') + 1]}_*"))

    def other_mask(self, request):
        response = original(self, request)
        return GenerationResponse(response.image, np.zeros_like(response.mask))

    monkeypatch.setattr(BlurTestGenerator, "generate", other_mask)
    refused("returned a mask other than the target mask",
            "-m", model, "-d", 901, "-o", 910, "--mode", "twins", "-k", 1, "--cases", "case_001")
    monkeypatch.setattr(BlurTestGenerator, "generate",
                        lambda self, request: GenerationResponse(original(self, request).image * 3, request.target_mask))
    refused(r"values outside \[-1, 1\]", "-m", model, "-d", 901, "-o", 911, "--mode", "twins", "-k", 1, "--cases", "case_001")
    monkeypatch.setattr(BlurTestGenerator, "generate", lambda self, request: GenerationResponse(
        np.where(request.target_mask > 0, np.nan, original(self, request).image), request.target_mask))
    refused("returned NaN or infinite values", "-m", model, "-d", 901, "-o", 911, "--mode", "twins", "-k", 1,
            "--cases", "case_001")

    # inpaint: the painted voxels must be given, and outside them the mask must be the source's
    def without_changed(self, request):
        response = original(self, request)
        return GenerationResponse(response.image, response.mask)

    def erases_a_lesion(self, request):
        response = original(self, request)
        mask = response.mask.copy()
        mask[(request.source.seg != 0) & ~response.changed] = 0
        return GenerationResponse(response.image, mask, changed=response.changed)

    def paints_over_a_lesion(self, request):
        response = original(self, request)
        everywhere = np.ones_like(response.changed)
        return GenerationResponse(response.image, np.zeros_like(response.mask), changed=everywhere)

    for broken, message, output in ((without_changed, "must say which voxels it painted", 912),
                                    (erases_a_lesion, "changed the source's labels outside the voxels it painted", 913),
                                    (paints_over_a_lesion, "erased labels of the source", 914)):
        monkeypatch.setattr(BlurTestGenerator, "generate", broken)
        refused(message, "-m", model, "-d", 901, "-o", output, "--mode", "inpaint", "-k", 1, "--cases", "case_001")
