"""DiffBoost on 3D cases where preprocessing is not the identity: twin alignment against nnU-Net, and input mix end to end.

Every case has its own zero padding (so crop boxes differ), its own anisotropic
spacing (so resampling happens), and the coarse axis is the last one (so the
plans transpose). The twins are the real image plus noise everywhere, padding
included: cropped with their own box they would keep the padding.
"""
import json

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.preprocessors import default_preprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import built_once, nnunet_command, run_command, venv_command
from nnunet_synth.diffboost.twins import preprocess_twins
from nnunet_synth.manifest import TWINS_FILE, TWINS_FOLDER
from nnunet_synth.raw_dataset import RawDataset
from nnunet_synth.testing import make_nnunet_folders, make_standin_synthetic_dataset
from test_diffboost_e2e import short

SHAPE = (24, 32, 14)                     # numpy (z, y, x); x is the coarse axis; plans of 3 stages


def make_padded_anisotropic_dataset(raw_root, dataset_id: int, n_cases: int = 5):
    folder = raw_root / f"Dataset{dataset_id}_Padded3D"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir(parents=True)
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")).astype(np.float32)
    for i in range(n_cases):
        lo = np.array([1 + i % 3, i % 2, 2 + i % 2])               # per-case zero padding before ...
        hi = np.array(SHAPE) - np.array([i % 2, 2 + i % 3, 1])     # ... and after the content, per axis
        inside = np.all([(grid[a] >= lo[a]) & (grid[a] < hi[a]) for a in range(3)], axis=0)
        centre = (lo + hi) / 2
        seg = ((((grid - centre[:, None, None, None]) / np.array([2.5, 3.5, 3.0])[:, None, None, None]) ** 2)
               .sum(0) <= 1) & inside
        img = np.where(inside, np.clip(rng.normal(100, 20, SHAPE) + 80 * seg, 1, None), 0)
        spacing_zyx = (1.0 + 0.2 * i, 0.9 - 0.1 * (i % 2), 3.0 + 0.5 * i)
        for arr, path in ((img.astype(np.int16), folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz"),
                          (seg.astype(np.uint8), folder / "labelsTr" / f"case_{i:03d}.nii.gz")):
            itk = sitk.GetImageFromArray(arr)
            itk.SetSpacing(spacing_zyx[::-1])
            sitk.WriteImage(itk, str(path))
    generate_dataset_json(str(folder), {0: "MR"}, {"background": 0, "lesion": 1}, n_cases, ".nii.gz",
                          dataset_name=folder.name)
    return folder


# Both tests read one planned 3D dataset: one xdist worker runs them, one after the other.
pytestmark = pytest.mark.xdist_group("diffboost_3d")


def predict_one(real, ending, configuration, trainer, tmp_path, monkeypatch):
    """nnUNetv2_predict, unchanged, on the first real image (in this process; -npp 0 -nps 0: nnU-Net's sequential
    path, no worker processes)."""
    images = tmp_path / "in"
    images.mkdir()
    (images / f"case_000_0000{ending}").write_bytes((real / "imagesTr" / f"case_000_0000{ending}").read_bytes())
    nnunet_command(monkeypatch, "nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "pred"), "-d", real.name,
                   "-c", configuration, "-f", "0", "-tr", trainer, "-device", "cpu", "--disable_tta",
                   "-npp", "0", "-nps", "0")
    assert (tmp_path / "pred" / f"case_000{ending}").is_file()


def _plan_3d(folder):
    folders = make_nnunet_folders(folder)
    real = make_padded_anisotropic_dataset(folders.raw, 921)
    run_command([venv_command("nnUNetv2_plan_and_preprocess"), "-d", "921", "-c", "3d_fullres", "-np", "1",
                 "-npfp", "1"], folders.env())
    make_standin_synthetic_dataset(real, folders.raw, 922, k=1, noise=15.0)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in folders.env().items():
            mp.setenv(key, value)
        preprocess_twins("921", "922", "3d_fullres", progress=False)


@pytest.fixture(scope="module")
def planned_3d(tmp_path_factory):
    """Dataset921 planned and preprocessed for 3d_fullres, with twins (Dataset922, k=1) preprocessed in process.

    Built once per session (both tests of this module may run on different xdist workers).
    """
    return make_nnunet_folders(built_once(tmp_path_factory, "planned_3d", _plan_3d))


def test_stored_twin_equals_nnunets_run_case_on_the_twin_with_the_real_crop_box(planned_3d, monkeypatch):
    base = planned_3d.preprocessed / "Dataset921_Padded3D"
    pm = PlansManager(str(base / "nnUNetPlans.json"))
    cm = pm.get_configuration("3d_fullres")
    dataset_json = load_json(str(base / "dataset.json"))
    folder = base / cm.data_identifier / TWINS_FOLDER
    twins = json.loads((folder / TWINS_FILE).read_text())["twins"]
    real_raw = RawDataset(planned_3d.raw / "Dataset921_Padded3D")
    synth_raw = RawDataset(planned_3d.raw / "Dataset922_Padded3DStandIn")
    rw = pm.image_reader_writer_class()
    axes = [0, *[i + 1 for i in pm.transpose_forward]]
    assert list(pm.transpose_forward) != [0, 1, 2]

    boxes, spacings, resampled = [], [], []
    for case, (twin_id,) in sorted(twins.items()):
        real_data, real_props = rw.read_images(real_raw.image_files(case))
        real_seg, _ = rw.read_seg(real_raw.label_file(case))
        _, real_seg_cropped, real_box = crop_to_nonzero(real_data.transpose(axes), real_seg.transpose(axes).copy())
        twin_data, _ = rw.read_images(synth_raw.image_files(twin_id))
        own_box = crop_to_nonzero(twin_data.transpose(axes))[2]
        assert own_box != real_box                          # the twin's own crop would differ
        boxes.append(real_box)
        spacings.append(tuple(real_props["spacing"]))

        def with_real_box(data, seg=None, nonzero_label=-1):
            return data[(slice(None), *bounding_box_to_slice(real_box))], real_seg_cropped.copy(), real_box

        with monkeypatch.context() as m:
            m.setattr(default_preprocessor, "crop_to_nonzero", with_real_box)
            expected, _, props = cm.preprocessor_class(verbose=False).run_case(
                synth_raw.image_files(twin_id), synth_raw.label_file(twin_id), pm, cm, dataset_json)
        resampled.append(tuple(props["shape_after_cropping_and_before_resampling"]) != expected.shape[1:])
        stored = blosc2.open(str(folder / f"{twin_id}.b2nd"), mode="r")[:]
        assert stored.shape == expected.shape
        np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-4)
    assert len(set(map(str, boxes))) == len(boxes) and len(set(spacings)) == len(spacings)
    assert sum(resampled) >= len(resampled) - 1            # only a case at the target spacing keeps its shape


@pytest.mark.e2e
def test_3d_input_mix_train_predict_without_nnunet_raw(planned_3d, tmp_path, monkeypatch):
    # nnUNet_raw points to an empty folder: training reads everything from nnUNet_preprocessed. nnU-Net's commands
    # run in this process (conftest.nnunet_command); results go to this test's own folder, not the shared one.
    empty_raw = tmp_path / "empty_raw"
    empty_raw.mkdir()
    env = {**planned_3d.env(), "nnUNet_raw": str(empty_raw), "nnUNet_results": str(tmp_path / "results")}
    trainer = "nnUNetTrainerDiffBoostInputMixShort"
    nnunet_command(monkeypatch, "nnUNetv2_train", "921", "3d_fullres", "0", "-tr", trainer, "-device", "cpu",
                   env=short(env, 1))
    out = tmp_path / "results" / "Dataset921_Padded3D" / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    record = json.loads((out / "diffboost.json").read_text())
    assert record["settings"]["mix_mode"] == "input" and record["synthetic_dataset"] == "Dataset922_Padded3DStandIn"
    # SHAPE gives plans of 3 stages: the trainers refuse 2 (nnU-Net's deep-supervision weight is NaN there,
    # MIC-DKFZ/nnUNet#2670; training/loss_weights.py); any other NaN loss fails here
    logging = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
    assert np.isfinite(logging["train_losses"]).all() and np.isfinite(logging["val_losses"]).all(), logging

    monkeypatch.setenv("nnUNet_raw", str(planned_3d.raw))  # as before the training; results stay the test's own
    predict_one(planned_3d.raw / "Dataset921_Padded3D", ".nii.gz", "3d_fullres", trainer, tmp_path, monkeypatch)
