"""CheckpointLoaderSimple: there for validation (its list is models/checkpoints/); the stand-in
has no models, so running it fails with a clear message."""

from __future__ import annotations

from typing import Any

from .. import paths
from .base import Node


class CheckpointLoaderSimple(Node):
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = (
        "The model used for denoising latents.",
        "The CLIP model used for encoding text prompts.",
        "The VAE model used for encoding and decoding images to and from latent space.",
    )
    FUNCTION = "load_checkpoint"
    CATEGORY = "loaders"
    DISPLAY_NAME = "Load Checkpoint"
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "ckpt_name": (
                    paths.get_filename_list("checkpoints"),
                    {"tooltip": "The name of the checkpoint (model) to load."},
                ),
            }
        }

    def load_checkpoint(self, ckpt_name: str) -> tuple:
        raise RuntimeError(f"ComfyUI stand-in: cannot load checkpoint {ckpt_name!r}: the stand-in has no model support")


NODES = [CheckpointLoaderSimple]
