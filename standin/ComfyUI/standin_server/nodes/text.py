"""Text nodes: PrimitiveString, StringConcatenate and PreviewAny."""

from __future__ import annotations

import json
from typing import Any

from .base import ANY, Node


class PrimitiveString(Node):
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    CATEGORY = "utils/primitive"
    DISPLAY_NAME = "String"
    PYTHON_MODULE = "comfy_extras.nodes_primitive"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("STRING", {"multiline": False})}}

    def execute(self, value: str) -> tuple:
        return (value,)


class StringConcatenate(Node):
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    CATEGORY = "utils/string"
    DISPLAY_NAME = "Concatenate"
    PYTHON_MODULE = "comfy_extras.nodes_string"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "string_a": ("STRING", {"multiline": True}),
                "string_b": ("STRING", {"multiline": True}),
                "delimiter": ("STRING", {"multiline": False, "default": ""}),
            }
        }

    def execute(self, string_a: str, string_b: str, delimiter: str) -> tuple:
        return (delimiter.join((string_a, string_b)),)


class PreviewAny(Node):
    RETURN_TYPES = ()
    FUNCTION = "main"
    OUTPUT_NODE = True
    CATEGORY = "utils"
    DISPLAY_NAME = "Preview Any"
    PYTHON_MODULE = "comfy_extras.nodes_preview_any"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"source": (ANY, {})}}

    def main(self, source: Any = None) -> dict:
        value = "None"
        if isinstance(source, str):
            value = source
        elif isinstance(source, (int, float, bool)):
            value = str(source)
        elif source is not None:
            try:
                value = json.dumps(source)
            except Exception:
                try:
                    value = str(source)
                except Exception:
                    value = "source exists, but could not be serialized."
        return {"ui": {"text": (value,)}}


NODES = [PrimitiveString, StringConcatenate, PreviewAny]
