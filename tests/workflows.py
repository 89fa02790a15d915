"""Small API-format workflows the tests send through the stand-in ComfyUI."""

from __future__ import annotations

from typing import Any


def image_chain(
    *middle: tuple[str, dict], prefix: str = "test", side: int = 16, color: int = 0x3366CC
) -> dict[str, Any]:
    """A job input: EmptyImage -> the given (class_type, inputs) nodes, chained by "image" -> SaveImage."""
    workflow: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": side, "height": side, "batch_size": 1, "color": color}}
    }
    previous = "1"
    for index, (class_type, inputs) in enumerate(middle, start=2):
        workflow[str(index)] = {"class_type": class_type, "inputs": {**inputs, "image": [previous, 0]}}
        previous = str(index)
    workflow["99"] = {"class_type": "SaveImage", "inputs": {"images": [previous, 0], "filename_prefix": prefix}}
    return {"workflow": workflow}
