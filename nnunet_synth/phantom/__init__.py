"""A built-in ultrasound phantom: simulated B-mode images with lesion masks from several devices.

``simulate(device, seed)`` makes one image; ``make_phantom_datasets(raw_root)``
writes nnU-Net raw datasets (training device A, test devices A, B, C);
``nnunet-synth phantom`` does the same from the command line. See docs/phantom.md.
"""
from nnunet_synth.phantom.anatomy import Anatomy, sample_anatomy
from nnunet_synth.phantom.datasets import make_phantom_datasets
from nnunet_synth.phantom.devices import DEVICES, Device
from nnunet_synth.phantom.simulate import simulate

__all__ = ["Anatomy", "DEVICES", "Device", "make_phantom_datasets", "sample_anatomy", "simulate"]
