"""Audio nodes: EmptyAudio and SaveAudio (FLAC written by ..flac)."""

from __future__ import annotations

import os
from array import array
from typing import Any

from .. import flac, paths, version
from .base import Node


class EmptyAudio(Node):
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "create_empty_audio"
    CATEGORY = "audio"
    DISPLAY_NAME = "Empty Audio"
    PYTHON_MODULE = "comfy_extras.nodes_audio"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "duration": (
                    "FLOAT",
                    {
                        "default": 60.0,
                        "min": 0.0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "step": 0.01,
                        "tooltip": "Duration of the empty audio clip in seconds",
                    },
                ),
                "sample_rate": (
                    "INT",
                    {"default": 44100, "tooltip": "Sample rate of the empty audio clip.", "min": 1, "max": 192000},
                ),
                "channels": (
                    "INT",
                    {
                        "default": 2,
                        "min": 1,
                        "max": 2,
                        "tooltip": "Number of audio channels (1 for mono, 2 for stereo).",
                    },
                ),
            }
        }

    def create_empty_audio(self, duration: float, sample_rate: int, channels: int) -> tuple:
        num_samples = round(duration * sample_rate)
        silence = [array("h", bytes(2 * num_samples)) for _ in range(channels)]
        return ({"waveform": [silence], "sample_rate": sample_rate},)


class SaveAudio(Node):
    RETURN_TYPES = ()
    FUNCTION = "save_flac"
    OUTPUT_NODE = True
    CATEGORY = "audio"
    DISPLAY_NAME = "Save Audio (FLAC)"
    PYTHON_MODULE = "comfy_extras.nodes_audio"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio": ("AUDIO",),
                "filename_prefix": ("STRING", {"default": "audio/ComfyUI"}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save_flac(
        self, audio: dict, filename_prefix: str = "ComfyUI", prompt: Any = None, extra_pnginfo: Any = None
    ) -> dict:
        output_dir = paths.folders().output
        folder, filename, counter, subfolder, _ = paths.get_save_image_path(filename_prefix, output_dir)
        # 0.38.1's AudioSaveHelper dropped the underscore before the extension.
        tail = "" if version.current().audio_names_without_underscore else "_"
        results = []
        for batch_number, channels in enumerate(audio["waveform"]):
            name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}{tail}.flac"
            with open(os.path.join(folder, name), "wb") as stream:
                flac.write(stream, channels, audio["sample_rate"])
            results.append({"filename": name, "subfolder": subfolder, "type": "output"})
            counter += 1
        return {"ui": {"audio": results}}


NODES = [EmptyAudio, SaveAudio]
