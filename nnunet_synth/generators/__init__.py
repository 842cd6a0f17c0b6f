"""Generators: fit a diffusion model on real training cases, then write synthetic raw datasets."""
