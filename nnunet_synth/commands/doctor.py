"""Check the environment that nnU-Net and nnunet_synth need.

Checks the nnU-Net folder variables (nnUNet_raw, nnUNet_preprocessed,
nnUNet_results: set, absolute, and folders rather than files), that
nnUNet_extTrainer points at this package's trainers and that nnU-Net's own
trainer search (what nnUNetv2_train runs) finds nnUNetTrainerDiffBoost there,
that torch and torchvision import together, whether CUDA is present, and the
free disk space in the nnU-Net folders. Each problem is printed with the exact
line that fixes it. Exits 1 when something must be fixed.
"""
from __future__ import annotations

import sys

from nnunet_synth.environment import MIN_FREE_GB, Check, check_torch_pair, run_checks


def add_arguments(parser) -> None:
    parser.add_argument("--require-torch", action="store_true",
                        help="only check that torch and torchvision import together (used by 'make setup')")
    parser.add_argument("--min-free-gb", type=float, default=MIN_FREE_GB,
                        help=f"warn below this much free disk in an nnU-Net folder (default {MIN_FREE_GB})")


def run(args) -> int:
    return report([check_torch_pair()] if args.require_torch else run_checks(args.min_free_gb))


def report(checks: list[Check]) -> int:
    """Print one line per check (and the fix of each failed one); 1 if a required check failed."""
    for c in checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        print(f"[{mark}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            print(f"       fix: {c.fix}")
    failed = [c for c in checks if not c.ok and c.required]
    print(f"{len(failed)} problem(s) to fix." if failed else "Everything nnunet_synth needs is in place.")
    return 1 if failed else 0


if __name__ == "__main__":
    # `python -m nnunet_synth.commands.doctor --require-torch` ends `make setup`.
    from nnunet_synth.commands.runner import standalone

    sys.exit(standalone("doctor", __doc__, add_arguments, run))
