"""CheckpointLoaderSimple: there for validation (its list is models/checkpoints/); the stand-in
has no models, so running it fails with a clear message. SafetensorsLoader reads a model file
as ComfyUI's loaders do, for the cold-start benchmark: the safetensors header, then every
tensor's bytes in order (into one reused buffer: the stand-in keeps no weights)."""

from __future__ import annotations

import json
import os
import struct
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


READ_BUFFER = 16 << 20


def read_safetensors(path: str) -> tuple[int, int]:
    """(tensors, bytes) of a .safetensors file read whole: header length, JSON header, every tensor."""
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(header_size))
        tensors = sorted((info["data_offsets"] for name, info in header.items() if name != "__metadata__"))
        buffer = memoryview(bytearray(READ_BUFFER))
        total, base = 0, 8 + header_size
        for start, end in tensors:
            file.seek(base + start)
            left = end - start
            while left > 0:
                got = file.readinto(buffer[: min(left, READ_BUFFER)])
                if not got:
                    raise ValueError(f"{path} ends inside a tensor: the file is truncated")
                left -= got
                total += got
    return len(tensors), total


class SafetensorsLoader(Node):
    """Loads a checkpoint's every tensor from disk (the cost of a first job's model load), passes the image on."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load"
    CATEGORY = "loaders"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ckpt_name": (paths.get_filename_list("checkpoints"),), "image": ("IMAGE",)}}

    def load(self, ckpt_name: str, image: Any) -> tuple:
        path = next(
            os.path.join(root, ckpt_name)
            for root in paths.folders().models.get("checkpoints", [])
            if os.path.isfile(os.path.join(root, ckpt_name))
        )
        read_safetensors(path)
        return (image,)


NODES = [CheckpointLoaderSimple, SafetensorsLoader]
