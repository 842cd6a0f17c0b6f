"""A built-in ultrasound phantom: simulated B-mode images with lesion masks from several scanners.

``simulate(scanner, seed)`` makes one image; ``make_phantom_datasets(raw_root)``
writes nnU-Net raw datasets (training scanner A, test scanners A, B, C);
``nnunet-synth phantom`` does the same from the command line. See docs/phantom.md.
"""
from nnunet_synth.phantom.anatomy import Anatomy, sample_anatomy
from nnunet_synth.phantom.bmode import simulate
from nnunet_synth.phantom.datasets import make_phantom_datasets
from nnunet_synth.phantom.scanners import SCANNERS, Scanner

__all__ = ["Anatomy", "SCANNERS", "Scanner", "make_phantom_datasets", "sample_anatomy", "simulate"]
