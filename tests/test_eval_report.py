"""Report pieces: example selection, slice choice, and plots that are real images."""
import numpy as np
from PIL import Image

from nnunet_synth.evaluation.report import (ExamplePanel, boxplot_by_model, example_grid, paired_lines, pick_slice,
                                            select_examples)


def test_select_examples_takes_largest_gains_then_losses():
    base = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5, "e": float("nan")}
    other = {"a": 0.9, "b": 0.6, "c": 0.1, "d": 0.5, "e": 0.7}
    assert select_examples(base, other, 1) == ["a", "c"]
    assert select_examples(base, other, 5) == ["a", "b", "c"]  # no change (d) and NaN (e) are never examples


def test_pick_slice_prefers_reference_foreground():
    ref = np.zeros((5, 4, 4), bool)
    pred = np.zeros_like(ref)
    ref[3, :2, :2] = True
    pred[1] = True
    assert pick_slice(ref, pred) == 3
    assert pick_slice(np.zeros_like(ref), pred) == 1
    assert pick_slice(np.zeros_like(ref)) == 2


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def test_plots_are_nonempty_images(tmp_path):
    rng = np.random.default_rng(0)
    values = {m: {f"c{i}": {"Dice": rng.uniform(), "HD95": rng.uniform(0, 9)} for i in range(6)} for m in ("base", "aug")}
    values["aug"]["c0"]["Dice"] = float("nan")
    paths = [boxplot_by_model(values, "T", tmp_path / "box.png"),
             paired_lines({c: v["Dice"] for c, v in values["base"].items()},
                          {c: v["Dice"] for c, v in values["aug"].items()}, "base", "aug", "T", tmp_path / "pair.png")]
    mask = np.zeros((32, 32), bool)
    mask[8:20, 10:22] = True
    panel = ExamplePanel("c1", rng.normal(size=(32, 32)), mask, np.roll(mask, 2, 0), mask, 0.8, 1.0)
    paths.append(example_grid([panel, panel], "base", "aug", "T", tmp_path / "grid.png"))
    for path in paths:
        pixels = _pixels(path)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and np.ptp(pixels) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.png", "grid.png", "pair.png"]  # no temp files left
