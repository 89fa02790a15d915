"""Many workers on one network volume: no job ever sees another job's files.

Every stack here is a real worker (supervisord, the launcher, the stand-in ComfyUI, sidecar,
handler); several of them share one COMFYUI_DIR, as every worker of a RunPod endpoint mounts
the same volume. Jobs are sent to all of them at the same moment with the same input image
name and the same filename_prefix but pixels of their own, and each result is checked byte
for byte (tests/workflows.own_images_job).
"""

from __future__ import annotations

import base64
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.handler_harness import Rig
from tests.images import b64, decoded, noise_png
from tests.stack import REPO, Stack
from tests.workflows import assert_own_images, completed, own_images_job

ROUNDS = 4


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The network volume's ComfyUI: one copy of the stand-in that every stack of the test uses."""
    comfyui = tmp_path / "volume" / "ComfyUI"
    shutil.copytree(REPO / "standin" / "ComfyUI", comfyui, ignore=shutil.ignore_patterns("__pycache__"))
    return comfyui


def volume_files(volume: Path) -> dict[str, bytes]:
    """Every file on the volume with its content (Python's bytecode caches aside)."""
    return {
        str(path.relative_to(volume)): path.read_bytes()
        for path in volume.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def worker_files(stack: Stack) -> list[str]:
    """What jobs left in the worker's input, output and temp folders (its user directory is ComfyUI's own)."""
    layout = stack.layout
    return sorted(str(path) for folder in (layout.input, layout.output, layout.temp) for path in folder.rglob("*"))


def start_stacks(make_stack: Callable[..., Stack], volume: Path, count: int, **env: str) -> list[Stack]:
    stacks = [make_stack(COMFYUI_DIR=str(volume), **env).start() for _ in range(count)]
    for stack in stacks:
        stack.wait_accepting_jobs()
    return stacks


def send_together(calls: list[tuple[Stack, dict]]) -> list[dict]:
    """POST every (stack, job input) at the same moment; the results in the same order."""
    barrier = threading.Barrier(len(calls))

    def send(stack: Stack, job: dict) -> dict:
        barrier.wait()
        return stack.runsync(job)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: send(*call), calls))


def wait_folders_empty(stacks: list[Stack]) -> None:
    for stack in stacks:
        stack.wait_for(lambda s=stack: worker_files(s) == [], 30, what="the worker's folders to be empty")


@pytest.mark.parametrize(
    ("workers", "version"),
    [(2, "0.3.64"), (3, "0.3.64"), (2, "0.38.1"), (2, "0.47.1")],
    ids=["2-workers", "3-workers", "2-on-0.38.1", "2-on-0.47.1"],
)
def test_workers_sharing_one_volume_each_get_their_own_images(
    make_stack: Callable[..., Stack], volume: Path, workers: int, version: str
) -> None:
    stacks = start_stacks(make_stack, volume, workers, STANDIN_COMFYUI_VERSION=version)
    before = volume_files(volume)
    seed = 0x102030
    for _ in range(ROUNDS):
        # Two jobs per worker at once: the workers race each other, and each worker runs two together.
        calls = [(stack, own_images_job(seed + index)) for index, stack in enumerate(stacks * 2)]
        for index, result in enumerate(send_together(calls)):
            assert_own_images(result, seed + index)
        seed += len(calls)
    wait_folders_empty(stacks)
    assert volume_files(volume) == before, "a worker wrote to the shared volume"


def test_a_worker_booting_while_another_serves_harms_nothing(make_stack: Callable[..., Stack], volume: Path) -> None:
    [serving] = start_stacks(make_stack, volume, 1)
    before = volume_files(volume)
    stop = threading.Event()
    results: list[tuple[int, dict]] = []

    def keep_serving() -> None:
        seed = 0x400000
        while not stop.is_set():
            results.append((seed, serving.runsync(own_images_job(seed))))
            seed += 1

    worker = threading.Thread(target=keep_serving, daemon=True)
    worker.start()
    try:
        booting = make_stack(COMFYUI_DIR=str(volume)).start()
        booting.wait_accepting_jobs()
        assert_own_images(booting.runsync(own_images_job(0x500000)), 0x500000)
    finally:
        stop.set()
        worker.join(60)
    assert len(results) >= 2, "jobs kept being served while the second worker booted"
    for seed, result in results:
        assert_own_images(result, seed)
    wait_folders_empty([serving, booting])
    assert volume_files(volume) == before


# -- one worker -------------------------------------------------------------------------------


def test_concurrent_jobs_on_one_worker_with_the_same_input_names_each_get_their_own(rig: Rig) -> None:
    seeds = [0x010101 * step for step in range(1, 9)]
    with ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(lambda seed: rig.runsync(own_images_job(seed)), seeds))
    for seed, result in zip(seeds, results, strict=True):
        assert_own_images(result, seed)
    rig.wait_for(lambda: rig.files("input") == [] and rig.files("output") == [], 10, what="the folders emptied")


def load_job(name: str, images: list[dict] | None = None) -> dict:
    return {
        "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "vol"}},
        },
        "images": images or [],
    }


def test_a_file_users_put_on_the_volume_loads_and_survives_a_job_uploading_its_name(rig: Rig) -> None:
    on_volume = rig.comfy_dir / "input" / "mask.png"
    on_volume.write_bytes(noise_png(seed=77))
    sub = rig.comfy_dir / "input" / "refs"
    sub.mkdir(exist_ok=True)
    (sub / "ref.png").write_bytes(noise_png(seed=78))

    def pixels(result: dict) -> bytes:
        assert result["status"] == "COMPLETED", result
        [item] = result["output"]["images"]
        return decoded(item).convert("RGB").tobytes()

    def expected(seed: int) -> bytes:
        return decoded({"type": "base64", "data": b64(noise_png(seed=seed))}).convert("RGB").tobytes()

    assert pixels(rig.runsync(load_job("mask.png"))) == expected(77)
    assert pixels(rig.runsync(load_job("refs/ref.png"))) == expected(78)
    (sub / "ref2.png").write_bytes(noise_png(seed=80))
    two = load_job("refs/ref.png")
    two["workflow"]["3"] = {"class_type": "LoadImage", "inputs": {"image": "refs/ref2.png"}}
    two["workflow"]["4"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "vol2"}}
    both = completed(rig.runsync(two))["images"]
    assert sorted(decoded(item).convert("RGB").tobytes() for item in both) == sorted([expected(78), expected(80)])
    # A job sending an image of the same name gets its own, and the volume's file stays as it was.
    uploaded = rig.runsync(load_job("mask.png", [{"name": "mask.png", "image": b64(noise_png(seed=79))}]))
    assert pixels(uploaded) == expected(79)
    assert on_volume.read_bytes() == noise_png(seed=77)
    assert pixels(rig.runsync(load_job("mask.png"))) == expected(77)
    rig.wait_for(lambda: rig.files("input") == [], 10, what="the job's links and files removed")
    assert on_volume.read_bytes() == noise_png(seed=77)


def test_outputs_kept_on_the_volume_go_to_a_folder_of_the_workers_own(tmp_path: Path) -> None:
    rig = Rig(tmp_path, outputs_on_volume=True).start()
    try:
        result = rig.runsync(load_job("kept.png", [{"name": "kept.png", "image": b64(noise_png(seed=5))}]))
        assert result["status"] == "COMPLETED", result
        [item] = result["output"]["images"]
        own = rig.comfy_dir / "output" / "workers" / rig.layout.worker_id
        [kept] = [path for path in own.rglob(item["filename"])]
        assert kept.read_bytes() == base64.b64decode(item["data"])
        assert sorted(path.name for path in (rig.comfy_dir / "output").iterdir()) == ["workers"]
        rig.wait_for(lambda: rig.files("input") == [], 10, what="the job's input removed")
        assert kept.exists(), "kept outputs are never removed"
    finally:
        rig.stop()
