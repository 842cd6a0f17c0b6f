"""The baseline nnU-Net of ``inspect --baseline RESULTS_FOLDER``: which fold, whether it leaks, and its network.

The baseline is the training output folder that targeted generation reads
(``generators/targeting.py``): ``fold_F/checkpoint_final.pth`` and
``fold_F/validation/summary.json``. Its fold F is the fold the synthetic
dataset's generator was trained on (``model_fold`` in synthesis.json) unless
the user names one. What the baseline trained on is read from that fold's
validation summary: every case of the real dataset that fold F did not
validate. Leakage is judged with the split rule of ``splits.leaked_folds``:
a baseline whose training cases include any case that the real dataset's
fold F validates is refused, because consistency and fidelity would then be
measured with a network that has seen the cases it is compared against.

``BaselineNetwork`` is nnU-Net's own ``nnUNetPredictor``, built once. It
preprocesses with the model's plans, predicts (sliding window, optional
mirroring) and converts the logits back to the input's geometry, in this
process (no worker pools: for the small images of the tests and the demo,
starting them costs more than predicting). ``features`` runs only the encoder
on the same sliding-window tiles and returns the global-average-pooled output
of its last stage, captured by a forward hook; it ignores mirroring, so the
features do not depend on ``--disable-tta``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import read_json
from nnunet_synth.errors import SynthError
from nnunet_synth.generators.targeting import validation_scores_by_fold
from nnunet_synth.splits import leaked_folds


@dataclass
class Baseline:
    folder: Path
    fold: int
    trained_on: list[str]            # real cases the fold trained on
    validation_dice: dict[str, float]  # the fold's own validation Dice per case


def generator_fold(manifest) -> int | None:
    """The fold every generator of the manifest was trained on; None when none records one."""
    folds = {g.parameters.get("model_fold") for g in manifest.generators.values()}
    folds.discard(None)
    folds.discard("all")
    if len(folds) > 1:
        raise SynthError(f"the generators of this synthetic dataset were trained on different folds "
                         f"({', '.join(map(str, sorted(folds, key=str)))}); give --fold")
    return int(folds.pop()) if folds else None


def open_baseline(results_folder, real, fold: int, folds: list[dict], folds_source: str,
                  synthetic_sources: set[str]) -> Baseline:
    """Check the baseline folder against the real dataset and its fold ``fold``; refuse a leaky one."""
    folder = Path(results_folder).resolve()
    plans = read_json(folder / "plans.json", "--baseline must be an nnU-Net training output folder "
                                             "(nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION)")
    trained_dataset = plans.get("dataset_name") if isinstance(plans, dict) else None
    if trained_dataset != real.name:
        raise SynthError(f"--baseline {folder}: trained on {trained_dataset}, not on {real.name}; "
                         f"consistency needs a baseline of the synthetic cases' real dataset")
    by_fold = validation_scores_by_fold(folder, real.file_ending)
    unknown = sorted({c for scores in by_fold.values() for c in scores} - set(real.case_ids()))
    if unknown:
        raise SynthError(f"--baseline {folder}: case(s) {', '.join(unknown[:5])} are not in {real.name}; "
                         f"was the baseline trained on another dataset?")
    if not 0 <= fold < len(folds):
        raise SynthError(f"--fold {fold}: the split of {real.name} ({folds_source}) has folds 0 to {len(folds) - 1}")
    if str(fold) not in by_fold or not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
        raise SynthError(f"--baseline {folder}: fold {fold} is not trained and validated "
                         f"(need fold_{fold}/checkpoint_final.pth and fold_{fold}/validation/summary.json)")
    validated = by_fold[str(fold)]
    trained_on = sorted(set(real.case_ids()) - set(validated))
    leaks = leaked_folds([folds[fold]], trained_on)
    if leaks:
        leaked = leaks[0]
        sources = sorted(set(leaked) & synthetic_sources)
        detail = f"; {len(sources)} of them are synthetic cases' sources ({', '.join(sources[:5])})" if sources else ""
        raise SynthError(f"--baseline {folder}: fold {fold} trained on {len(leaked)} case(s) that fold {fold} of "
                         f"{folds_source} validates ({', '.join(leaked[:5])}){detail}; use a baseline trained "
                         f"on that fold's training cases")
    return Baseline(folder, fold, trained_on, {c: round(v, 6) for c, v in sorted(validated.items())})


class BaselineNetwork:
    """nnU-Net's predictor for one fold of the baseline, built once."""

    def __init__(self, baseline: Baseline, device, use_mirroring: bool):
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        self.device = device
        self.predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                         perform_everything_on_device=device.type == "cuda", device=device,
                                         verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        try:
            self.predictor.initialize_from_trained_model_folder(str(baseline.folder), use_folds=(baseline.fold,),
                                                                checkpoint_name="checkpoint_final.pth")
        except (RuntimeError, KeyError, FileNotFoundError) as e:
            raise SynthError(f"--baseline {baseline.folder}: nnU-Net cannot load fold {baseline.fold} "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        self.network = self.predictor.network.to(device).eval()
        encoder = getattr(self.network, "encoder", None)
        if encoder is None or not hasattr(encoder, "stages"):
            raise SynthError(f"--baseline {baseline.folder}: the network {type(self.network).__name__} has no "
                             f"encoder.stages, so its bottleneck features cannot be read")
        self.encoder = encoder
        self.preprocessor = self.predictor.configuration_manager.preprocessor_class(verbose=False)
        self._torch = torch

    def preprocess(self, images: np.ndarray, properties: dict):
        """(data tensor, properties) after nnU-Net's preprocessing with the baseline's plans."""
        p = self.predictor
        data, _, props = self.preprocessor.run_case_npy(images, None, copy.deepcopy(properties), p.plans_manager,
                                                        p.configuration_manager, p.dataset_json)
        return self._torch.from_numpy(np.ascontiguousarray(data)), props

    def predict(self, data, props) -> np.ndarray:
        """The segmentation of one preprocessed case, in the geometry of the image it came from."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        p = self.predictor
        logits = p.predict_logits_from_preprocessed_data(data).cpu()
        return np.asarray(convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, p.plans_manager, p.configuration_manager, p.label_manager, props, return_probabilities=False))

    def features(self, data) -> np.ndarray:
        """The encoder's last-stage output, averaged over space and over the sliding-window tiles."""
        from acvl_utils.cropping_and_padding.padding import pad_nd_image

        torch = self._torch
        captured = []

        def hook(_module, _inputs, output):
            captured.append(output.float().mean(dim=tuple(range(2, output.ndim))).cpu())

        patch = tuple(self.predictor.configuration_manager.patch_size)
        padded, _ = pad_nd_image(data, patch, "constant", {"value": 0}, True, None)
        handle = self.encoder.stages[-1].register_forward_hook(hook)
        try:
            with torch.inference_mode():
                for tile in tiles(padded.shape[1:], patch, self.predictor.tile_step_size):
                    self.encoder(padded[tile][None].to(self.device))
        finally:
            handle.remove()
        return torch.cat(captured).mean(dim=0).numpy().astype(np.float64)


def tiles(spatial: tuple[int, ...], patch: tuple[int, ...], step: float) -> list[tuple]:
    """Index tuples of nnU-Net's sliding-window tiles (a 2D patch on a 3D array tiles every slice)."""
    import itertools

    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    leading = len(spatial) - len(patch)
    steps = compute_steps_for_sliding_window(spatial[leading:], patch, step)
    out = []
    for z in itertools.product(*(range(n) for n in spatial[:leading])):
        for origin in itertools.product(*steps):
            out.append((slice(None), *z, *(slice(o, o + p) for o, p in zip(origin, patch))))
    return out
