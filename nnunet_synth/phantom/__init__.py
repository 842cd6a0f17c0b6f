"""A built-in ultrasound phantom: simulated B-mode images with lesion masks from several devices.

``simulate(device, seed)`` makes one image; ``make_phantom_datasets(raw_root)``
writes nnU-Net raw datasets (training device A, test devices A, B, C);
``nnunet-synth phantom`` does the same from the command line. See docs/phantom.md.

The names below are imported on first use: ``nnunet-synth --help`` imports the
command module ``nnunet_synth.commands.phantom``, and with it this package, and must
not pay for numpy and scipy.
"""
import importlib

_EXPORTS = {
    "Anatomy": "nnunet_synth.phantom.anatomy",
    "sample_anatomy": "nnunet_synth.phantom.anatomy",
    "make_phantom_datasets": "nnunet_synth.phantom.datasets",
    "DEVICES": "nnunet_synth.phantom.devices",
    "Device": "nnunet_synth.phantom.devices",
    "simulate": "nnunet_synth.phantom.bmode",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'nnunet_synth.phantom' has no attribute {name!r}")
