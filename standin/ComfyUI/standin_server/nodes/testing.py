"""Nodes that exist only in the stand-in, to make tests possible: a slow node with progress,
a failing node, a node that drops every WebSocket, one that kills the process, one that
makes large incompressible images, one that ignores interrupts, one that freezes the event
loop, and a non-output node with an intermediate preview (HAS_INTERMEDIATE_OUTPUT)."""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from typing import Any

from PIL import Image, ImageOps

from .. import paths, runtime
from .base import MAX_RESOLUTION, Node, always_changed
from .image import PreviewImage

log = logging.getLogger("standin")

CATEGORY = "standin/testing"


def _black() -> list[Image.Image]:
    return [Image.new("RGB", (64, 64), (0, 0, 0))]


class StandinSleep(Node):
    """Sleeps `seconds` in `steps` slices, reporting WS `progress` after each slice.

    Like a sampler's ProgressBar, every report first checks the interrupt flag, so an
    interrupt stops the node at the next slice instead of after the whole sleep.
    """

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sleep"
    CATEGORY = CATEGORY
    DISPLAY_NAME = "Stand-in Sleep"
    PYTHON_MODULE = "standin.testing"
    IS_CHANGED = classmethod(always_changed)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0, "step": 0.01}),
                "steps": ("INT", {"default": 10, "min": 1, "max": 100000}),
            },
            "optional": {"image": ("IMAGE",)},
        }

    def sleep(self, seconds: float, steps: int, image: list[Image.Image] | None = None) -> tuple:
        pbar = runtime.ProgressBar(steps)
        for step in range(1, steps + 1):
            time.sleep(seconds / steps)
            pbar.update_absolute(step, steps)
        return (image if image is not None else _black(),)


class StandinFail(Node):
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "fail"
    CATEGORY = CATEGORY
    DISPLAY_NAME = "Stand-in Fail"
    PYTHON_MODULE = "standin.testing"
    IS_CHANGED = classmethod(always_changed)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"message": ("STRING", {"default": "stand-in failure", "multiline": False})},
            "optional": {"image": ("IMAGE",)},
        }

    def fail(self, message: str, image: list[Image.Image] | None = None) -> tuple:
        raise RuntimeError(message)


class StandinDropWebSockets(Node):
    """Closes every open WebSocket from the server side, then passes the image through."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "drop"
    CATEGORY = CATEGORY
    DISPLAY_NAME = "Stand-in Drop WebSockets"
    PYTHON_MODULE = "standin.testing"
    IS_CHANGED = classmethod(always_changed)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    def drop(self, image: list[Image.Image]) -> tuple:
        runtime.context().drop_websockets()
        return (image,)


class StandinExit(Node):
    """Ends the whole process at once with os._exit(code), as a crash mid-job would."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "exit"
    CATEGORY = CATEGORY
    DISPLAY_NAME = "Stand-in Exit"
    PYTHON_MODULE = "standin.testing"
    IS_CHANGED = classmethod(always_changed)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "code": ("INT", {"default": 1, "min": 0, "max": 255}),
                "image": ("IMAGE",),
            }
        }

    def exit(self, code: int, image: list[Image.Image]) -> tuple:
        log.info(f"StandinExit: ending the process with exit code {code}")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class StandinBigImages(Node):
    """`count` images of random (incompressible) RGB noise, reproducible from `seed`."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY
    DISPLAY_NAME = "Stand-in Big Images"
    PYTHON_MODULE = "standin.testing"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "count": ("INT", {"default": 1, "min": 1, "max": 256}),
                "width": ("INT", {"default": 1024, "min": 1, "max": MAX_RESOLUTION}),
                "height": ("INT", {"default": 1024, "min": 1, "max": MAX_RESOLUTION}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
            }
        }

    def generate(self, count: int, width: int, height: int, seed: int) -> tuple:
        rng = random.Random(seed)
        return ([Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3)) for _ in range(count)],)


class StandinCheckpointNoise(Node):
    """Reads a checkpoint from models/checkpoints as a loader would (no model support: its bytes
    only seed the noise), then makes a noise image as a sampler would from `seed`. Its inputs
    are declared as ComfyUI's KSampler and EmptyLatentImage declare theirs: the seed re-rolled by
    the front end (control_after_generate), a size on a step of 8, options and a BOOLEAN."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY
    DISPLAY_NAME = "Stand-in Checkpoint Noise"
    PYTHON_MODULE = "standin.testing"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "ckpt_name": (paths.get_filename_list("checkpoints"), {"tooltip": "The checkpoint to load."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
                "width": ("INT", {"default": 64, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                "height": ("INT", {"default": 64, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "palette": (["color", "gray"], {"default": "color"}),
                "invert": ("BOOLEAN", {"default": False}),
            }
        }

    def generate(
        self, ckpt_name: str, seed: int, width: int, height: int, strength: float, palette: str, invert: bool
    ) -> tuple:
        with open(paths.get_full_path_or_raise("checkpoints", ckpt_name), "rb") as model:
            rng = random.Random(f"{seed}:{model.read(4096).hex()}")
        image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
        image = Image.blend(Image.new("RGB", image.size), image, strength)
        image = image.convert("L").convert("RGB") if palette == "gray" else image
        return ([ImageOps.invert(image) if invert else image],)


class _StandinStall(Node):
    """A node that holds ComfyUI for `seconds` (each subclass in its own way), passing its image on."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stall"
    CATEGORY = CATEGORY
    PYTHON_MODULE = "standin.testing"
    IS_CHANGED = classmethod(always_changed)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"seconds": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 3600.0, "step": 0.01})},
            "optional": {"image": ("IMAGE",)},
        }

    def stall(self, seconds: float, image: list[Image.Image] | None = None) -> tuple:
        self.hold(seconds)
        return (image if image is not None else _black(),)

    def hold(self, seconds: float) -> None:
        raise NotImplementedError


class StandinUninterruptible(_StandinStall):
    """Runs `seconds` without ever looking at the interrupt flag, like a custom node stuck in a
    C call: an interrupt takes effect only after it returns (at the next node)."""

    DISPLAY_NAME = "Stand-in Uninterruptible"

    def hold(self, seconds: float) -> None:
        time.sleep(seconds)


class StandinFreeze(_StandinStall):
    """Blocks the server's event loop for `seconds` (HTTP and WebSocket stop answering, as in a
    ComfyUI swapping to death), then carries on."""

    DISPLAY_NAME = "Stand-in Freeze"

    def hold(self, seconds: float) -> None:
        runtime.context().block_event_loop(seconds)


class StandinIntermediatePreview(Node):
    """Not an output node, but shows a preview (a temp PNG) as ComfyUI's LoadVideo does: flagged
    HAS_INTERMEDIATE_OUTPUT, so 0.38.1 replays its `executed` frame when it is cached."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "preview"
    CATEGORY = CATEGORY
    DISPLAY_NAME = "Stand-in Intermediate Preview"
    PYTHON_MODULE = "standin.testing"
    HAS_INTERMEDIATE_OUTPUT = True

    def __init__(self) -> None:
        self._preview = PreviewImage()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    def preview(self, image: list[Image.Image]) -> dict:
        return {"ui": self._preview.save_images(image)["ui"], "result": (image,)}


NODES = [
    StandinSleep,
    StandinFail,
    StandinDropWebSockets,
    StandinExit,
    StandinBigImages,
    StandinCheckpointNoise,
    StandinUninterruptible,
    StandinFreeze,
    StandinIntermediatePreview,
]
