"""DiffBoost: online patch-level mixing of real training samples with synthetic twins.

- ``twins``: preprocess a synthetic dataset's twins with the real dataset's plans
  (``nnunet-synth twins``), stored beside the real preprocessed cases.
- ``mask``: the random patch-level mixing mask.
- ``transforms``: run real and twin through nnU-Net's augmentation together.
- ``loader``: the data loader that crops real and twin with the same box.
- ``trainer``: output-level and input-level mixing inside nnU-Net's trainer.

This package's top level imports nothing heavy: the command line imports it.
"""
