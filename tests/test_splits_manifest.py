"""Unit tests of the manifest and the split rules (DESIGN.md contracts)."""
import json

import pytest

from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import (GeneratorRecord, Manifest, SyntheticCase, hash_model_folder, merge_manifests,
                                   parse_synthetic_case_id, sample_seed, synthetic_case_id, training_cases_hash)
from nnunet_synth.splits import (check_expanded_folds, default_folds, expanded_folds, fold_training_cases,
                                 leaked_folds, leaks_by_generator, real_folds)

CASES = [f"c{i:02d}" for i in range(10)]


def test_case_ids_follow_the_contract():
    assert synthetic_case_id("p_1(2)", "twin", 3) == "p_1(2)_syn003"
    assert synthetic_case_id("case_syn001", "new", 12) == "case_syn001_new012"
    assert parse_synthetic_case_id("case_syn001_new012") == ("case_syn001", "new", 12)
    assert parse_synthetic_case_id("case_001") is None
    with pytest.raises(ValueError):
        synthetic_case_id("a", "copy", 0)


def test_seed_depends_only_on_base_seed_case_and_k():
    assert sample_seed(0, "a", 1) == sample_seed(0, "a", 1)
    assert len({sample_seed(0, "a", 1), sample_seed(1, "a", 1), sample_seed(0, "b", 1), sample_seed(0, "a", 2)}) == 4
    assert 0 <= sample_seed(123, "x", 0) < 2 ** 32


def _manifest(trained_on=("c00",)):
    m = Manifest("Dataset001_Real")
    m.generators["g"] = GeneratorRecord("patch-ddpm", "0.1", "/m", "sha256:x", list(trained_on), {"k": 1},
                                        training_cases_hash(trained_on))
    m.cases["c01_syn000"] = SyntheticCase("g", "c01", "twin", 5)
    m.cases["c02_new000"] = SyntheticCase("g", "c02", "new", 6, kept=False)
    return m


def test_manifest_round_trip_and_views(tmp_path):
    _manifest().save(tmp_path)
    m = Manifest.load(tmp_path)
    assert m == _manifest()
    assert list(m.kept_cases()) == ["c01_syn000"]
    assert m.twins_by_source() == {"c01": ["c01_syn000"]}
    assert m.trained_on() == {"c00"}


@pytest.mark.parametrize("edit, message", [
    (lambda o: o.pop("cases"), "missing key 'cases'"),
    (lambda o: o.update(format_version=7), "format_version 7"),
    (lambda o: o["cases"]["c01_syn000"].update(kind="copy"), "kind 'copy'"),
    (lambda o: o["cases"]["c01_syn000"].update(source_case="c05"), "does not match its source case"),
    (lambda o: o["cases"]["c01_syn000"].update(generator="h"), "unknown generator 'h'"),
    (lambda o: o["cases"]["c01_syn000"].update(seed="5"), "non-integer seed"),
    (lambda o: o["cases"]["c01_syn000"].update(colour="red"), "malformed entry"),
    # trained_on edited by hand (or a manifest from before the hash): the leakage checks cannot trust it
    (lambda o: o["generators"]["g"].update(trained_on=[]), "'trained_on' does not match its training_cases_hash"),
    (lambda o: o["generators"]["g"].pop("training_cases_hash"), "training_cases_hash (missing)"),
])
def test_manifest_validation_names_the_file_and_problem(tmp_path, edit, message):
    obj = _manifest().to_json()
    edit(obj)
    (tmp_path / "synthesis.json").write_text(json.dumps(obj))
    with pytest.raises(SynthError, match="synthesis.json") as e:
        Manifest.load(tmp_path)
    assert message in str(e.value)


def test_trained_on_is_checked_against_the_model_folders_training_cases(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    obj = _manifest().to_json()
    obj["generators"]["g"]["model_folder"] = str(model)
    (tmp_path / "synthesis.json").write_text(json.dumps(obj))
    record = {"generator": "patch-ddpm", "dataset": "Dataset001_Real", "fold": None, "split": None}
    (model / "training_cases.json").write_text(json.dumps({**record, "cases": ["c00"]}))
    assert Manifest.load(tmp_path).trained_on() == {"c00"}
    (model / "training_cases.json").write_text(json.dumps({**record, "cases": ["c00", "c01"]}))  # refitted
    with pytest.raises(SynthError, match=r"synthesis.json: generator 'g': 'trained_on' differs from the cases in .*"
                                         r"training_cases.json; the model folder was retrained or replaced"):
        Manifest.load(tmp_path)
    (model / "training_cases.json").unlink()  # a model folder that is not here cannot be checked
    assert Manifest.load(tmp_path).trained_on() == {"c00"}


def test_model_hash_covers_config_and_weights_not_checkpoints(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"w")
    first = hash_model_folder(tmp_path)
    for resume_state in ("checkpoint/model.safetensors", "checkpoints/checkpoint-5/model.safetensors",
                         "checkpoint-7/optimizer.bin", "training_cases.json", ".tmp-1-config.json"):
        (tmp_path / resume_state).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / resume_state).write_bytes(b"x")
    assert hash_model_folder(tmp_path) == first
    (tmp_path / "config.json").write_text('{"steps": 2}')
    assert hash_model_folder(tmp_path) != first
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"v")
    assert hash_model_folder(tmp_path) != first
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(SynthError, match="no weight files"):  # checkpoint weights are not the model's
        hash_model_folder(tmp_path)


def test_manifest_sources_must_be_real_cases():
    with pytest.raises(SynthError, match="c02"):
        _manifest().check_sources(["c00", "c01"])


def test_merge_prefixes_generators_and_refuses_duplicate_ids():
    merged = merge_manifests("Dataset001_Real", {"Dataset002_A": _manifest(), "Dataset003_B": Manifest("Dataset001_Real")})
    assert set(merged.generators) == {"Dataset002_A:g"}
    assert merged.cases["c01_syn000"].generator == "Dataset002_A:g"
    with pytest.raises(SynthError, match="unique"):
        merge_manifests("Dataset001_Real", {"Dataset002_A": _manifest(), "Dataset003_B": _manifest()})


def test_default_folds_are_nnunets():
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    assert default_folds(CASES) == generate_crossval_split(CASES, seed=12345, n_splits=5)
    with pytest.raises(SynthError, match="at least 5 cases"):
        default_folds(CASES[:3])


def test_real_folds_prefer_splits_final(tmp_path):
    (tmp_path / "Dataset001_Real").mkdir()
    custom = [{"train": CASES[:8], "val": CASES[8:]}]
    (tmp_path / "Dataset001_Real" / "splits_final.json").write_text(json.dumps(custom))
    folds, origin = real_folds("Dataset001_Real", CASES, tmp_path)
    assert folds == custom and origin.endswith("splits_final.json")
    assert real_folds("Dataset009_Other", CASES, tmp_path)[0] == default_folds(CASES)
    assert fold_training_cases(custom, 0) == CASES[:8]
    with pytest.raises(SynthError, match="fold 3 does not exist"):
        fold_training_cases(custom, 3)


def test_expanded_folds_follow_the_rules():
    folds = default_folds(CASES)
    sources = {f"{c}_syn000": c for c in CASES}
    for mode in (False, True):
        expanded = expanded_folds(folds, sources, synthetic_only=mode)
        assert check_expanded_folds(expanded, CASES, sources) == []
        for real, fold in zip(folds, expanded):
            assert fold["val"] == sorted(real["val"])
            synthetic = [c for c in fold["train"] if c in sources]
            assert sorted(sources[c] for c in synthetic) == sorted(real["train"])
            assert (set(fold["train"]) - set(synthetic) == set()) == mode
        # a refused fold holds its real training cases and no synthetic case, whichever mode
        refused = expanded_folds(folds, sources, synthetic_only=mode, refused={1, 3})
        for i, (real, fold) in enumerate(zip(folds, refused)):
            assert fold == (expanded[i] if i not in (1, 3) else {"train": sorted(real["train"]), "val": sorted(real["val"])})


def test_broken_splits_are_reported_per_fold():
    sources = {"c00_syn000": "c00", "c01_syn000": "c01"}
    broken = [{"train": ["c02", "c00_syn000"], "val": ["c00", "c01_syn000"]},
              {"train": ["c03", "zz"], "val": ["c01"]}]
    messages = [(p.fold, p.message) for p in check_expanded_folds(broken, CASES, sources)]
    assert (0, "synthetic case(s) in validation: c01_syn000") in messages
    assert any(f == 0 and "source case is validated in this fold: c00_syn000" in m for f, m in messages)
    assert (1, "unknown case(s) zz") in messages
    assert len(messages) == 3
    assert leaked_folds(broken, {"c01"}) == {1: ["c01"]}


def test_leakage_is_decided_per_generator():
    folds = [{"train": CASES[2:], "val": CASES[:2]}, {"train": CASES[:8], "val": CASES[8:]},
             {"train": CASES[:2] + CASES[4:], "val": CASES[2:4]}]
    leaks = leaks_by_generator(folds, {"a": CASES[2:], "b": ["c09", "c03", "c00"], "clean": []})
    assert leaks == {"a": {1: ["c08", "c09"], 2: ["c02", "c03"]}, "b": {0: ["c00"], 1: ["c09"], 2: ["c03"]}}
    assert list(leaks) == ["a", "b"]
    assert leaks_by_generator(folds, {"a": CASES[2:4]}) == {"a": {2: ["c02", "c03"]}}
    assert leaks_by_generator(folds, {}) == {}
