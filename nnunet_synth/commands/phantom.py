"""Write the built-in ultrasound phantom as nnU-Net raw datasets.

Simulated B-mode images (speckle from scatterers and a point-spread function,
log compression, depth attenuation with time-gain compensation, organ
boundaries, hypoechoic or isoechoic-with-rim lesions with posterior enhancement
or shadowing) with lesion masks, from three simulated scanners:

  A  linear 7.5 MHz, fine PSF, 0.31 mm pixels           (training scanner)
  B  convex 3.5 MHz sector, coarse PSF, darker far field, 0.49 mm pixels
  C  portable linear 5 MHz, narrow dynamic range, noisy, 0.4 mm pixels

It writes Dataset{ID}_PhantomA (training cases of scanner A) and
Dataset{ID+1}_PhantomTestA, {ID+2}_PhantomTestB, {ID+3}_PhantomTestC (test
cases, kept in imagesTr/labelsTr so nnU-Net's tools accept them). The same
arguments give byte-identical files; a rerun skips complete datasets.

Example:
  nnunet-synth phantom -o "$nnUNet_raw" --first-id 700 --n-train 60 --n-test 30 \\
      --preview phantom.png
  nnUNetv2_plan_and_preprocess -d 700 -c 2d
  nnunet-synth phantom --preview phantom.png      # only the preview image
"""
from __future__ import annotations

import argparse
import os

from nnunet_synth.commands.options import add_output_argument
from nnunet_synth.errors import SynthError
from nnunet_synth.phantom.datasets import TRAIN_SCANNER, check_arguments, make_phantom_datasets
from nnunet_synth.phantom.preview import write_preview
from nnunet_synth.phantom.scanners import SCANNERS


def add_arguments(parser) -> None:
    add_output_argument(parser, "dir", "RAW_DIR", "the nnU-Net raw folder to write the datasets into "
                        "(default: $nnUNet_raw)", "--output")
    parser.add_argument("--first-id", type=int, default=700, help="dataset id of the training set (default 700)")
    parser.add_argument("--n-train", type=int, default=60, help="training cases of scanner A (default 60)")
    parser.add_argument("--n-test", type=int, default=30, help="test cases per scanner (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--scanners", default=",".join(SCANNERS),
                        help="comma-separated scanners to write test sets for (default A,B,C)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="rows of every image; the field of view in mm stays (default: each scanner's own)")
    parser.add_argument("-np", "--num-processes", dest="workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes that simulate in parallel (default: 2 or the CPU count if smaller)")
    # The option's earlier name; scripts written for it keep working.
    parser.add_argument("--workers", dest="workers", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--preview", metavar="PNG", help="also write a PNG grid of examples per scanner with mask contours")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    scanners = [s.strip() for s in args.scanners.split(",") if s.strip()]
    output = args.output or os.environ.get("nnUNet_raw")
    if output is None and args.preview is None:
        raise SynthError("no output folder: give -o RAW_DIR, set nnUNet_raw, or ask only for --preview PNG")
    if args.preview is not None and not args.preview.lower().endswith(".png"):
        raise SynthError(f"{args.preview}: the preview is a PNG image; give a file name ending in .png")

    check_arguments(args.first_id, args.n_train, args.n_test, args.seed, args.image_size, scanners)
    if output is not None:
        written = make_phantom_datasets(output, first_id=args.first_id, n_train=args.n_train, n_test=args.n_test,
                                        seed=args.seed, image_size=args.image_size, scanners=scanners,
                                        workers=args.workers, progress=not args.quiet)
        for name, path in written.items():
            print(f"{name}: {path}")
    if args.preview is not None:
        preview_scanners = list(dict.fromkeys([TRAIN_SCANNER] + scanners))
        print(f"preview: {write_preview(args.preview, preview_scanners, seed=args.seed, image_size=args.image_size)}")
    return 0
