"""Stable Diffusion pieces shared by the SD-based generators (sd-inpaint, controlnet); importing this imports no torch."""
