from setuptools import find_packages, setup

# trainers/ holds the thin trainer modules that nnU-Net imports through the
# nnUNet_extTrainer variable. It ships as the top-level package
# nnunet_synth_trainers so that a wheel install has the folder too
# (`nnunet-synth trainer-path` prints where it is). dataset_conversion/ ships
# the same way as nnunet_synth_dataset_conversion (`nnunet-synth convert`).
setup(
    packages=find_packages(include=["nnunet_synth", "nnunet_synth.*"]) + ["nnunet_synth_trainers", "nnunet_synth_dataset_conversion"],
)
