"""StandinSave3D: a 3D output, as ComfyUI's SaveGLB and the 3D preview nodes report one.

It writes a small valid binary glTF (.glb, a tetrahedron) named like SaveGLB's files,
`{prefix}_{counter:05}_.glb`, and reports it the way protocol notes 8.5 describe the
advanced 3D form: `{"3d": [{filename, subfolder, type}], "result": ["<file> [output]",
camera_info, model_3d_info]}` (the last two null: the stand-in has no viewer).
"""

from __future__ import annotations

import json
import os
from typing import Any

from .. import glb, paths
from .base import Node
from .image import settings


class StandinSave3D(Node):
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "standin/testing"
    DISPLAY_NAME = "Stand-in Save 3D (GLB)"
    PYTHON_MODULE = "standin.testing"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"filename_prefix": ("STRING", {"default": "mesh/ComfyUI"})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, filename_prefix: str, prompt: Any = None, extra_pnginfo: Any = None) -> dict:
        folder, filename, counter, subfolder, _ = paths.get_save_image_path(filename_prefix, paths.folders().output)
        extras: dict[str, Any] = {}
        if not settings["disable_metadata"]:
            if prompt is not None:
                extras["prompt"] = json.dumps(prompt)
            for key, value in (extra_pnginfo or {}).items():
                extras[key] = json.dumps(value)
        name = f"{filename}_{counter:05}_.glb"
        with open(os.path.join(folder, name), "wb") as stream:
            stream.write(glb.encode(extras=extras))
        relative = f"{subfolder}/{name}" if subfolder else name
        entry = {"filename": name, "subfolder": subfolder, "type": "output"}
        return {"ui": {"3d": [entry], "result": [f"{relative} [output]", None, None]}}


NODES = [StandinSave3D]
