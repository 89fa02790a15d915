"""Input budgets through the real handler (runpod's local API, real sidecar, stand-in ComfyUI on loopback).

Issue 12's tiny inputs that cost ComfyUI hundreds of megabytes (an 18 kB 12000x12000 PNG, a 157 kB
40-frame GIF, a 3000-node workflow) and EPS must be refused with an error naming the budget and its
setting, before anything reaches ComfyUI: no prompt in its /history, nothing in its input folder, and
its memory (resident and peak, from /proc) unmoved. A control job proves the memory check can see an
image ComfyUI does load.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import Image

from tests.handler_harness import PYTHON, FileServer, Process, Rig
from tests.images import b64, many_frame_gif, square_png

MB = 1024 * 1024
UNMOVED_BYTES = 16 * MB  # what the sidecar's probes and a refused request may cost ComfyUI at most
CONTROL_SIDE = 6000  # 36 M pixels: within the default budget; ComfyUI holds >= 100 MB of RGB for it
GOOD_JOB = {
    "workflow": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0x00FF00}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "good"}},
    }
}


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"


def load_job(*sources: str) -> dict[str, Any]:
    """LoadImage -> SaveImage for each image (base64 or URL)."""
    workflow: dict[str, Any] = {}
    images = []
    for index, source in enumerate(sources):
        name = f"in{index}.png"
        workflow[str(2 * index + 1)] = {"class_type": "LoadImage", "inputs": {"image": name}}
        save = {"images": [str(2 * index + 1), 0], "filename_prefix": f"load{index}"}
        workflow[str(2 * index + 2)] = {"class_type": "SaveImage", "inputs": save}
        images.append({"name": name, "image": source})
    return {"workflow": workflow, "images": images}


@dataclass(frozen=True)
class ComfyState:
    """What a request that reached ComfyUI would change."""

    rss: int
    peak: int
    prompts: frozenset[str]
    inputs: tuple[str, ...]

    @classmethod
    def of(cls, rig: Rig) -> ComfyState:
        assert rig.comfy is not None
        pid = rig.comfy.pid
        status = Path(f"/proc/{pid}/status").read_text()
        peak = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) * 1024
        return cls(
            rss=psutil.Process(pid).memory_info().rss,
            peak=peak,
            prompts=frozenset(rig.comfy_get("/history")),
            inputs=tuple(rig.files("input")),
        )


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    server = FileServer({"/huge.png": square_png(12000), "/eps.png": EPS})
    yield server
    server.close()


def failed(result: dict[str, Any]) -> str:
    assert result["status"] == "FAILED", str(result)[:2000]
    return result["error"]


def refused_before_comfyui(rig: Rig, job: dict[str, Any]) -> str:
    """The job's error, after checking that nothing of it reached ComfyUI."""
    before = ComfyState.of(rig)
    message = failed(rig.runsync(job))
    after = ComfyState.of(rig)
    assert after.prompts - before.prompts == frozenset(), "a prompt reached ComfyUI"
    assert after.inputs == before.inputs, "a file reached ComfyUI's input folder"
    assert after.peak - before.peak < UNMOVED_BYTES, (
        f"ComfyUI's peak memory grew by {(after.peak - before.peak) / MB:.0f} MB"
    )
    assert after.rss - before.rss < UNMOVED_BYTES, f"ComfyUI's memory grew by {(after.rss - before.rss) / MB:.0f} MB"
    return message


def test_control_an_image_comfyui_loads_moves_its_peak_memory(rig: Rig) -> None:
    """Without this, an unmoved peak would prove nothing: a 36 M pixel image in the budget does move it."""
    before = ComfyState.of(rig)
    result = rig.runsync(load_job(b64(square_png(CONTROL_SIDE))))
    assert result["status"] == "COMPLETED", result
    grew = ComfyState.of(rig).peak - before.peak
    assert grew > 4 * UNMOVED_BYTES, f"ComfyUI's peak grew by only {grew / MB:.0f} MB for a 36 M pixel image"


def test_a_12000_square_png_of_18_kb_is_refused_naming_the_budget(rig: Rig) -> None:
    data = square_png(12000)
    assert len(data) < 20_000
    message = refused_before_comfyui(rig, load_job(b64(data)))
    assert message == (
        "Invalid input: input.images[0].image ('in0.png') is a PNG of 12000x12000 pixels = 144,000,000 pixels "
        "decoded, over the budget of 50,000,000 pixels per image (IMAGE_MAX_PIXELS): send a smaller image"
    )


def test_the_same_png_from_a_url_is_refused_after_download(rig: Rig, files: FileServer) -> None:
    message = refused_before_comfyui(rig, load_job(f"{files.url}/huge.png"))
    assert "input.images[0].image ('in0.png') is a PNG of 12000x12000 pixels" in message
    assert "(IMAGE_MAX_PIXELS)" in message


def test_a_gif_of_40_frames_is_refused_for_its_frames(rig: Rig) -> None:
    data = many_frame_gif(2000, 40)
    assert len(data) < 200_000
    message = refused_before_comfyui(rig, load_job(b64(data)))
    assert "is a GIF of 2000x2000 pixels x 40 frames = 160,000,000 pixels decoded" in message
    assert "over the budget of 50,000,000 pixels per image (IMAGE_MAX_PIXELS)" in message
    assert message.endswith("send a smaller image, or fewer frames")


def test_images_within_their_own_budget_are_refused_over_the_jobs(rig: Rig) -> None:
    each = b64(square_png(CONTROL_SIDE))  # 36 M pixels: three of them are 108 M
    message = refused_before_comfyui(rig, load_job(each, each, each))
    assert "input.images hold 108,000,000 pixels together, over the budget of 100,000,000 pixels per job" in message
    assert "(JOB_MAX_IMAGE_PIXELS): 'in0.png' 36,000,000, 'in1.png' 36,000,000, 'in2.png' 36,000,000" in message


def test_a_workflow_of_3000_output_nodes_is_refused(rig: Rig) -> None:
    workflow: dict[str, Any] = {"1": GOOD_JOB["workflow"]["1"]}
    for index in range(2, 3002):
        workflow[str(index)] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    message = refused_before_comfyui(rig, {"workflow": workflow})
    assert message == (
        "Invalid input: input.workflow has 3,001 nodes, over the budget of 1,000 nodes per workflow "
        "(WORKFLOW_MAX_NODES)"
    )


def test_eps_is_refused_as_base64_and_from_a_url(rig: Rig, files: FileServer) -> None:
    for source in (b64(EPS), f"{files.url}/eps.png"):
        message = refused_before_comfyui(rig, load_job(source))
        assert (
            "is Encapsulated Postscript (EPS), a format the worker does not accept: reading it makes Pillow run "
            in (message)
        )
        assert "Ghostscript; send PNG, JPEG, WEBP, GIF, BMP, TIFF" in message


def test_the_budgets_are_settings(rig: Rig) -> None:
    rig.start_handler({"IMAGE_MAX_PIXELS": "1000", "WORKFLOW_MAX_NODES": "3"})
    try:
        message = refused_before_comfyui(rig, load_job(b64(square_png(40))))
        assert "= 4,096 pixels decoded, over the budget of 1,000 pixels per image (IMAGE_MAX_PIXELS)" in message
        message = refused_before_comfyui(rig, load_job(b64(square_png(8)), b64(square_png(8))))
        assert "input.workflow has 4 nodes, over the budget of 3 nodes per workflow (WORKFLOW_MAX_NODES)" in message
    finally:
        rig.start_handler()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("IMAGE_MAX_PIXELS", "many", "IMAGE_MAX_PIXELS='many' is not a whole number (default 50000000)"),
        ("WORKFLOW_MAX_NODES", "0", "WORKFLOW_MAX_NODES=0 is below the minimum 1"),
        ("IMAGE_DOWNLOAD_ALLOWED_HOSTS", "http://minio:9000", "IMAGE_DOWNLOAD_ALLOWED_HOSTS: 'http://minio:9000' is"),
    ],
)
def test_a_bad_budget_setting_stops_the_handler_with_78(rig: Rig, name: str, value: str, expected: str) -> None:
    command = [PYTHON, "-m", "handler", "--test_input", '{"input": {}}']
    process = Process("handler --test_input", command, rig.handler_env({name: value}))
    process.popen.wait(60)
    process.stop()
    assert process.popen.returncode == 78, process.output()
    assert any(f"configuration error: {expected}" in line for line in process.lines), process.output()


def test_the_worker_keeps_serving_good_jobs(rig: Rig) -> None:
    assert rig.handler is not None
    for _ in range(2):
        result = rig.runsync(GOOD_JOB)
        assert result["status"] == "COMPLETED", result
        [item] = result["output"]["images"]
        assert Image.open(io.BytesIO(base64.b64decode(item["data"]))).convert("RGB").getpixel((0, 0)) == (0, 255, 0)
    assert rig.handler.alive()
