"""Trainer logic. The thin modules in ``trainers/`` bind these classes to names nnU-Net finds."""
