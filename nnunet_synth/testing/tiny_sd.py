"""A tiny random Stable Diffusion 1.x folder for tests, built in code.

The components are those of diffusers' own pipeline tests
(``get_dummy_components()`` in ``tests/pipelines/stable_diffusion/``): a
UNet2DConditionModel and an AutoencoderKL with block channels (32, 64), a
5-layer CLIP text encoder of width 32 and SD 1.x's PNDM scheduler config. The
CLIP tokenizer is built from a byte-level BPE vocabulary generated here, so
nothing comes from the hub. The folder has the layout of a downloaded SD 1.x
model (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``) and loads with ``local_files_only=True``.

The weights are random: the images are noise, but every shape, dtype and
code path is the real one. The same seed gives the same weights.

    python -m nnunet_synth.testing.tiny_sd OUT_DIR [--inpainting] [--seed N]
"""
from __future__ import annotations

import json
import os
from pathlib import Path

# Enough merges that common words become multi-character tokens; every other
# word falls back to single bytes, so any prompt tokenizes.
MERGES = (
    ("t", "h"), ("th", "y"), ("r", "o"), ("i", "d</w>"), ("n", "o"), ("u", "l"), ("o", "u"),
    ("n", "d</w>"), ("a", "s"), ("p", "h"), ("h", "o"), ("o", "f</w>"), ("h", "t"), ("e", "a"),
    ("s", "t</w>"), ("e", "r"),
)
MODEL_MAX_LENGTH = 77
# SD 1.x's scheduler/scheduler_config.json.
SD1_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                     skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)


def tiny_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary layout in small: the 256 byte characters, the same with ``</w>``, merges, specials."""
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars]
    for a, b in MERGES:
        if a + b not in tokens:
            tokens.append(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, list(MERGES)


def tiny_tokenizer(folder: str | os.PathLike):
    """Write vocab.json and merges.txt into ``folder`` and build a CLIPTokenizer from them (no hub)."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocab()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=MODEL_MAX_LENGTH)


def tiny_components(tokenizer_folder: str | os.PathLike, inpainting: bool = False, seed: int = 0,
                    channels: tuple[int, int] = (32, 64)) -> dict:
    """The pipeline components, each model initialised right after ``torch.manual_seed(seed)``.

    The tokenizer's vocab.json and merges.txt are written into ``tokenizer_folder``.
    ``channels`` are the UNet's and the VAE's block channels (benchmarks use wider ones).
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer(tokenizer_folder)
    # fork_rng: seeding here must not change the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=channels, layers_per_block=2, sample_size=32,
            in_channels=9 if inpainting else 4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=channels, in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4, sample_size=64)
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
            num_attention_heads=4, num_hidden_layers=5, vocab_size=len(tokenizer),
            max_position_embeddings=MODEL_MAX_LENGTH))
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                scheduler=PNDMScheduler(**SD1_SCHEDULER))


def write_tiny_sd(out_dir: str | os.PathLike, inpainting: bool = False, seed: int = 0,
                  channels: tuple[int, int] = (32, 64)) -> Path:
    """Save a tiny random SD 1.x (``inpainting``: a 9-channel inpainting UNet) into ``out_dir``; returns it.

    Files already in ``out_dir`` with the same names are overwritten. ``tokenizer/`` holds
    vocab.json and merges.txt (as SD 1.x ships it) besides the tokenizer.json that
    transformers saves.
    """
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    out_dir = Path(out_dir)
    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = pipeline_class(**tiny_components(out_dir / "tokenizer", inpainting, seed, channels), safety_checker=None,
                          feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


if __name__ == "__main__":
    # The options live in the command layer (argparse stays there); run that
    # module as the program instead of importing it from the library.
    import runpy

    runpy.run_module("nnunet_synth.commands.tiny_sd", run_name="__main__", alter_sys=True)
