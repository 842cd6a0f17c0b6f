"""Inspect a synthetic dataset before training on it: consistency, memorization, fidelity, one report.

- Consistency (needs --baseline): a baseline nnU-Net trained on the real
  training cases of the generator's fold segments every synthetic image; the
  Dice against the synthetic mask says whether the image shows the lesion its
  label claims. --filter LOW[:HIGH] writes every case's figures into
  synthesis.json and marks the cases outside the band "kept": false, which
  expand and twins honour. A baseline trained on another dataset, or on a
  case that the fold validates, is refused.
- Memorization: the most similar real training case of each synthetic case
  (NCC at reduced resolution, or DINOv2 features with --dinov2 DIR); cases at
  or above --copy-threshold are flagged as near-copies.
- Fidelity: Fréchet distance in the baseline encoder's feature space and
  Wasserstein distances of intensities inside and outside the lesion, with
  the same figures for real training vs real validation cases.

Writes SYNTH_FOLDER/inspect/report.md (with PNGs, summary.json, per_case.csv).
Run it before expand and twins: they copy synthesis.json when they run.
A rerun with another baseline, fold, band or TTA setting than the one that
made the recorded decisions needs --overwrite.

Example:

    nnunet-synth inspect 704 -d 700 \\
        --baseline $nnUNet_results/Dataset700_PhantomA/nnUNetTrainer__nnUNetPlans__2d --filter 0.5
"""
from __future__ import annotations

from nnunet_synth.quality.consistency import parse_band
from nnunet_synth.quality.inspection import InspectSettings, inspect_dataset


def add_arguments(parser) -> None:
    parser.add_argument("synthetic", metavar="SYNTH", help="synthetic raw dataset (id, name or folder)")
    parser.add_argument("-d", "--dataset", help="its real raw dataset (default: the one synthesis.json names)")
    parser.add_argument("--baseline", metavar="RESULTS_FOLDER",
                        help="nnU-Net training output folder (TRAINER__PLANS__CONFIGURATION) of the real dataset")
    parser.add_argument("--filter", metavar="LOW[:HIGH]",
                        help="keep cases whose consistency lies in [LOW, HIGH] (HIGH defaults to 1); needs --baseline")
    parser.add_argument("-f", "--fold", type=int, help="fold of the real split (default: the generator's fold)")
    parser.add_argument("--disable-tta", "--disable_tta", dest="disable_tta", action="store_true",
                        help="predict without mirroring (faster)")
    parser.add_argument("--dinov2", metavar="DIR", help="a local DINOv2 model folder for memorization (default: NCC)")
    parser.add_argument("--copy-threshold", type=float, default=0.95,
                        help="similarity at which a synthetic case counts as a near-copy (default 0.95)")
    parser.add_argument("--examples", type=int, default=4, help="cases per direction in the grids (default 4)")
    parser.add_argument("-device", "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the decisions of an inspection made with other settings")


def run(args) -> int:
    settings = InspectSettings(args.synthetic, real=args.dataset, baseline=args.baseline,
                               band=parse_band(args.filter) if args.filter is not None else None, fold=args.fold,
                               use_mirroring=not args.disable_tta, device=args.device, dinov2=args.dinov2,
                               copy_threshold=args.copy_threshold, n_examples=args.examples,
                               overwrite=args.overwrite)
    summary = inspect_dataset(settings)
    n = summary["n_synthetic"]
    if summary["band"] is not None:
        print(f"kept {summary['n_kept']} of {n} cases (band {summary['band'][0]:g}:{summary['band'][1]:g}); "
              f"decisions written to synthesis.json")
    print(f"near-copies: {summary['near_copies']} of {n} ({summary['similarity_measure']} >= "
          f"{summary['copy_threshold']:g})")
    print(f"wrote {summary['report']}")
    return 0
