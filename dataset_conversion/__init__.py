"""Converters from public datasets, as downloaded, to nnU-Net raw datasets.

Installed as the package ``nnunet_synth_dataset_conversion``; run them with
``nnunet-synth convert NAME SOURCE_DIR -d ID`` or as scripts
(``python dataset_conversion/ddti.py SOURCE_DIR -d ID``).
"""
