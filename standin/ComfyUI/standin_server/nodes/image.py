"""Image nodes: EmptyImage, LoadImage, ImageInvert, ImageBlur, SaveImage, PreviewImage,
SaveAnimatedWEBP and SaveImageWebsocket, with Pillow doing the work."""

from __future__ import annotations

import hashlib
import json
import os
import random
from typing import Any, ClassVar

from PIL import Image, ImageFile, ImageFilter, ImageOps, ImageSequence, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .. import paths, runtime, version
from .base import MAX_RESOLUTION, Node

settings = {"disable_metadata": False}


def pillow(fn: Any, arg: Any) -> Any:
    """ComfyUI's node_helpers.pillow: retry once with LOAD_TRUNCATED_IMAGES."""
    prev_value = None
    try:
        x = fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        prev_value = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        x = fn(arg)
    finally:
        if prev_value is not None:
            ImageFile.LOAD_TRUNCATED_IMAGES = prev_value
    return x


class EmptyImage(Node):
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = "image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
            }
        }

    def generate(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple:
        rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
        return ([Image.new("RGB", (width, height), rgb) for _ in range(batch_size)],)


class LoadImage(Node):
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    CATEGORY = "image"
    DISPLAY_NAME = "Load Image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        input_dir = paths.folders().input
        files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
        files = paths.filter_files_content_types(files, ["image"])
        return {"required": {"image": (sorted(files), {"image_upload": True})}}

    def load_image(self, image: str) -> tuple:
        image_path = paths.get_annotated_filepath(image)
        img = pillow(Image.open, image_path)
        output_images: list[Image.Image] = []
        output_masks: list[Image.Image] = []
        size = None
        for frame in ImageSequence.Iterator(img):
            frame = pillow(ImageOps.exif_transpose, frame)
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = frame.convert("RGB")
            if size is None:
                size = rgb.size
            if rgb.size != size:
                continue
            if "A" in frame.getbands():
                mask = ImageOps.invert(frame.getchannel("A"))
            elif frame.mode == "P" and "transparency" in frame.info:
                mask = ImageOps.invert(frame.convert("RGBA").getchannel("A"))
            else:
                mask = Image.new("L", (64, 64), 0)
            output_images.append(rgb)
            output_masks.append(mask)
        if len(output_images) > 1 and img.format == "MPO":
            output_images, output_masks = output_images[:1], output_masks[:1]
        return (output_images, output_masks)

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        digest = hashlib.sha256()
        with open(paths.get_annotated_filepath(image), "rb") as stream:
            digest.update(stream.read())
        return digest.digest().hex()

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        if not paths.exists_annotated_filepath(image):
            return f"Invalid image file: {image}"
        return True


class ImageInvert(Node):
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"
    CATEGORY = "image"
    DISPLAY_NAME = "Invert Image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    def invert(self, image: list[Image.Image]) -> tuple:
        return ([ImageOps.invert(i.convert("RGB")) for i in image],)


class ImageBlur(Node):
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"
    CATEGORY = "image/postprocessing"
    DISPLAY_NAME = "Image Blur"
    PYTHON_MODULE = "comfy_extras.nodes_post_processing"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}),
            }
        }

    def blur(self, image: list[Image.Image], blur_radius: int, sigma: float) -> tuple:
        if blur_radius == 0:
            return (image,)
        # ComfyUI convolves with a (2r+1)-wide Gaussian kernel of the given sigma; Pillow's
        # GaussianBlur takes the standard deviation, which is what decides the look.
        return ([i.filter(ImageFilter.GaussianBlur(radius=sigma)) for i in image],)


class SaveImage(Node):
    # () in 0.3.64; 0.38.1 passes the images through (an output node that can feed another node).
    RETURN_TYPES: ClassVar[tuple[str, ...]] = ("IMAGE",) if version.current().save_nodes_pass_images else ()
    RETURN_NAMES: ClassVar[tuple[str, ...]] = ("images",) if version.current().save_nodes_pass_images else ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DISPLAY_NAME = "Save Image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def __init__(self) -> None:
        self.output_dir = paths.folders().output
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "ComfyUI",
                        "tooltip": "The prefix for the file to save. This may include formatting "
                        "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to "
                        "include values from nodes.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save_images(
        self,
        images: list[Image.Image],
        filename_prefix: str = "ComfyUI",
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> dict:
        filename_prefix += self.prefix_append
        width, height = images[0].size
        folder, filename, counter, subfolder, _ = paths.get_save_image_path(
            filename_prefix, self.output_dir, width, height
        )
        results = []
        for batch_number, image in enumerate(images):
            metadata = None
            if not settings["disable_metadata"]:
                metadata = PngInfo()
                if prompt is not None:
                    metadata.add_text("prompt", json.dumps(prompt))
                if extra_pnginfo is not None:
                    for key in extra_pnginfo:
                        metadata.add_text(key, json.dumps(extra_pnginfo[key]))
            name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            image.save(os.path.join(folder, name), pnginfo=metadata, compress_level=self.compress_level)
            results.append({"filename": name, "subfolder": subfolder, "type": self.type})
            counter += 1
        if self.RETURN_TYPES:
            return {"ui": {"images": results}, "result": (images,)}
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    DISPLAY_NAME = "Preview Image"
    DESCRIPTION = ""
    # Sic: ComfyUI's alphabet has "p" twice and no "w".
    _LETTERS = "abcdefghijklmnopqrstupvxyz"

    def __init__(self) -> None:
        self.output_dir = paths.folders().temp
        self.type = "temp"
        self.prefix_append = "_temp_" + "".join(random.choice(self._LETTERS) for _ in range(5))
        self.compress_level = 1

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }


class SaveAnimatedWEBP(Node):
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image/animation"
    PYTHON_MODULE = "comfy_extras.nodes_images"
    methods: ClassVar[dict[str, int]] = {"default": 4, "fastest": 0, "slowest": 6}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
                "lossless": ("BOOLEAN", {"default": True}),
                "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                "method": (list(cls.methods.keys()),),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save_images(
        self,
        images: list[Image.Image],
        fps: float,
        filename_prefix: str,
        lossless: bool,
        quality: int,
        method: str,
        num_frames: int = 0,
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> dict:
        width, height = images[0].size
        folder, filename, counter, subfolder, _ = paths.get_save_image_path(
            filename_prefix, paths.folders().output, width, height
        )
        if num_frames == 0:
            num_frames = len(images)
        results = []
        for i in range(0, len(images), num_frames):
            name = f"{filename}_{counter:05}_.webp"
            images[i].save(
                os.path.join(folder, name),
                save_all=True,
                duration=int(1000.0 / fps),
                append_images=images[i + 1 : i + num_frames],
                lossless=lossless,
                quality=quality,
                method=self.methods.get(method),
            )
            results.append({"filename": name, "subfolder": subfolder, "type": "output"})
            counter += 1
        return {"ui": {"images": results, "animated": (num_frames != 1,)}}


class SaveImageWebsocket(Node):
    """ComfyUI's custom_nodes/websocket_image_save.py: PNGs go out as binary WS frames only."""

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "api node/image"
    PYTHON_MODULE = "custom_nodes.websocket_image_save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}}

    def save_images(self, images: list[Image.Image]) -> dict:
        pbar = runtime.ProgressBar(len(images))
        for step, image in enumerate(images):
            pbar.update_absolute(step, len(images), ("PNG", image, None))
        return {}

    @classmethod
    def IS_CHANGED(cls, images: Any) -> float:
        import time

        return time.time()


NODES = [EmptyImage, LoadImage, ImageInvert, ImageBlur, SaveImage, PreviewImage, SaveAnimatedWEBP, SaveImageWebsocket]
