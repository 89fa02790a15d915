"""Small API-format workflows the tests send through the stand-in ComfyUI."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from PIL import Image, ImageOps

from tests.images import b64, decoded, noise_png


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


def model_loading_job(model: str = "tiny.safetensors", color: int = 0x3366CC) -> dict[str, Any]:
    """A job whose stand-in SafetensorsLoader reads `model` from models/checkpoints (header, then every tensor)."""
    return image_chain(("SafetensorsLoader", {"ckpt_name": model}), prefix="loaded", color=color)


def write_tiny_model(path: Path) -> Path:
    """A .safetensors file of one 16-byte tensor, as model_loading_job's loader reads it."""
    header = json.dumps({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    return path


def own_images_job(seed: int, name: str = "same.png", prefix: str = "shared") -> dict[str, Any]:
    """A job whose two outputs are its own alone: its input image inverted, and a colour of its own.

    Jobs of other seeds send an input of the same `name` and save with the same `prefix`;
    `assert_own_images` checks that what came back is this job's, byte for byte.
    """
    return {
        "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
            "4": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": seed}},
            "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": prefix}},
        },
        "images": [{"name": name, "image": b64(noise_png(seed=seed))}],
    }


def assert_own_images(result: dict[str, Any], seed: int) -> None:
    """The result of `own_images_job(seed)` holds exactly that job's two images."""
    assert result["status"] == "COMPLETED", result
    by_node = {item["node_id"]: decoded(item) for item in result["output"]["images"]}
    assert set(by_node) == {"3", "5"}, result["output"]["images"]
    expected = ImageOps.invert(Image.open(io.BytesIO(noise_png(seed=seed))).convert("RGB"))
    assert by_node["3"].convert("RGB").tobytes() == expected.tobytes(), f"job {seed} got another job's input"
    colour = ((seed >> 16) & 0xFF, (seed >> 8) & 0xFF, seed & 0xFF)
    assert by_node["5"].convert("RGB").getpixel((0, 0)) == colour, f"job {seed} got another job's output"


# -- results and jobs in flight ------------------------------------------------------------------


def completed(result: dict[str, Any]) -> dict[str, Any]:
    """The output of a job that succeeded."""
    assert result["status"] == "COMPLETED", result
    return result["output"]


def failed(result: dict[str, Any]) -> str:
    """The error of a job that failed."""
    assert result["status"] == "FAILED", result
    assert isinstance(result["error"], str)
    return result["error"]


@contextlib.contextmanager
def in_background(call: Callable[[], Any]) -> Iterator[Future]:
    """Run `call` in a thread (a job in flight) while the test body does something else."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(call)


def running_prompt(comfy_url: str) -> str | None:
    """The id of the prompt ComfyUI is executing, if any."""
    queue = requests.get(f"{comfy_url}/queue", timeout=5).json()
    return queue["queue_running"][0][1] if queue["queue_running"] else None
