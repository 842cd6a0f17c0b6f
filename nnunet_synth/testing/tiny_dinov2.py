"""A tiny random DINOv2 folder for tests, built in code (the MedDiff-FT quality filter reads it).

The folder has the layout of a downloaded DINOv2 model (``facebook/dinov2-small``):
``config.json`` + ``model.safetensors`` of a transformers ``Dinov2Model`` and
``preprocessor_config.json`` of its ``BitImageProcessor``, at a small size
(hidden width 32, 2 layers, 32 px images, 8 px patches). It loads with
``Dinov2Model.from_pretrained(folder, local_files_only=True)``; the weights are
random and the same seed gives the same weights.

    python -m nnunet_synth.testing.tiny_dinov2 OUT_DIR [--seed N]
"""
from __future__ import annotations

import os
from pathlib import Path

IMAGE_SIZE = 32
PATCH_SIZE = 8


def tiny_dinov2(seed: int = 0):
    """``(model, image_processor)``: a random ``Dinov2Model`` initialised after ``torch.manual_seed(seed)``."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
                          image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    # fork_rng: seeding here must not change the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2Model(config).eval()
    # DINOv2's own preprocessing (resize, centre crop, ImageNet normalisation), at the tiny size.
    processor = BitImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE,
                                                                                  "width": IMAGE_SIZE},
                                  do_center_crop=True, do_convert_rgb=True,
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return model, processor


def write_tiny_dinov2(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny random DINOv2 (model + image processor) into ``out_dir``; returns it."""
    out_dir = Path(out_dir)
    model, processor = tiny_dinov2(seed)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    # The options live in the command layer (argparse stays there); run that
    # module as the program instead of importing it from the library.
    import runpy

    runpy.run_module("nnunet_synth.commands.tiny_dinov2", run_name="__main__", alter_sys=True)
