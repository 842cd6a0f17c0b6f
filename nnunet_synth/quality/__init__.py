"""The quality gate of synthetic datasets (``nnunet-synth inspect``).

One module per job: ``baseline`` (the baseline nnU-Net: fold, leakage check,
predictor and encoder features), ``consistency`` (Dice of the baseline's
prediction against the synthetic mask, the keep band), ``memorization``
(nearest real training case by NCC or DINOv2), ``fidelity`` (Fréchet
distance of encoder features, intensity Wasserstein distances), ``report``
(``inspect/report.md`` and its PNGs) and ``inspection`` (the one pass that
ties them together and writes the decisions into synthesis.json).
"""
