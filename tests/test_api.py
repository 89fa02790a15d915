"""Workflows as an API: named workflows on the volume, typed parameters, descriptions and app-ready results.

The real handler (runpod's local API, and the SDK's job-take loop against tests/fake_runpod.py)
runs named workflows from the volume's workflows_api/ folder on the stand-in ComfyUI. Bad
parameters are refused before ComfyUI is asked: the stand-in logs "got prompt" for every POST
/prompt, as ComfyUI does, and that count must not move.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fake_runpod import FakeRunPod
from tests.handler_harness import PYTHON, Process, Rig, RigShape
from tests.images import decoded
from tests.workflows import completed, failed, in_background

CHECKPOINT = b"stand-in checkpoint " * 4096

PORTRAIT = {
    "1": {
        "class_type": "StandinCheckpointNoise",
        "inputs": {
            "ckpt_name": "sd/tiny.safetensors",
            "seed": 7,
            "width": 64,
            "height": 48,
            "strength": 1.0,
            "palette": "color",
            "invert": False,
        },
        "_meta": {"title": "Noise"},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}, "_meta": {"title": "Flip"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "portrait"}},
    "4": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}, "_meta": {"title": "Flip"}},
}


def write_workflow(folder: Path, name: str, workflow: dict[str, Any]) -> None:
    """Replace a named workflow the way an operator should: a new file renamed over the old one."""
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / f".{name}.tmp"
    scratch.write_text(json.dumps(workflow))
    os.replace(scratch, folder / f"{name}.json")


def colour_workflow(colour: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": colour}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "colour"}},
    }


def pixel(output: dict[str, Any]) -> tuple[int, int, int]:
    [image] = output["images"]
    return decoded(image).convert("RGB").getpixel((0, 0))


def with_model_and_workflow(rig: Rig) -> None:
    checkpoint = rig.comfy_dir / "models" / "checkpoints" / "sd" / "tiny.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(CHECKPOINT)
    write_workflow(rig.comfy_dir / "workflows_api", "portrait", PORTRAIT)


@pytest.fixture(scope="module")
def rig_shape() -> RigShape:
    return RigShape(prepare=with_model_and_workflow)


def prompts_posted(rig: Rig) -> int:
    assert rig.comfy is not None
    return sum("got prompt" in line for line in rig.comfy.lines)


def test_a_named_workflow_runs_with_params_by_id_and_by_title(rig: Rig) -> None:
    output = completed(rig.runsync({"workflow_name": "portrait", "params": {"1.seed": 42, "Noise.width": 32}}))
    [image] = output["images"]
    assert (image["width"], image["height"]) == (32, 48)
    assert decoded(image).size == (32, 48)
    assert output["seeds"] == {"1.seed": 42}
    [model] = output["models"]
    assert model == {
        "node_id": "1",
        "input": "ckpt_name",
        "name": "checkpoints/sd/tiny.safetensors",
        "size": len(CHECKPOINT),
        "sha256": hashlib.sha256(CHECKPOINT).hexdigest(),
    }
    assert {"validating", "staging_inputs", "queue_wait", "executing", "collecting", "delivering"} <= set(
        output["timings"]
    )
    again = completed(rig.runsync({"workflow_name": "portrait", "params": {"1.seed": 42, "Noise.width": 32}}))
    assert decoded(again["images"][0]).tobytes() == decoded(image).tobytes(), "the same seed gives the same image"
    other = completed(rig.runsync({"workflow_name": "portrait", "params": {"1.seed": 43, "Noise.width": 32}}))
    assert decoded(other["images"][0]).tobytes() != decoded(image).tobytes()


def test_params_also_set_an_inline_workflow(rig: Rig) -> None:
    output = completed(rig.runsync({"workflow": colour_workflow(0), "params": {"1.color": 0x102030}}))
    assert pixel(output) == (0x10, 0x20, 0x30)


BAD_PARAMS = [
    ({"9.seed": 1}, ["input.params['9.seed']: the workflow has no node with the id or title '9'"]),
    ({"1.sed": 1}, ["node 1 (StandinCheckpointNoise) has no input 'sed'", "seed", "ckpt_name"]),
    ({"1.seed": "42"}, ["got '42'; an integer (INT) is accepted from 0 to 18446744073709551615"]),
    ({"1.width": 8}, ["got 8, out of range from 16 to 16384"]),
    ({"1.width": 20}, ["got 20; it must be 16 plus a multiple of the step 8"]),
    ({"1.strength": 1.5}, ["got 1.5, out of range from 0.0 to 1.0"]),
    ({"1.invert": 1}, ["got 1; true or false (BOOLEAN) is accepted"]),
    ({"1.palette": "sepia"}, ["got 'sepia', which is not one of the options: color, gray"]),
    ({"1.ckpt_name": "../../x.safetensors"}, ["which is not one of the options: sd/tiny.safetensors"]),
    ({"Flip.image": 1}, ["the title 'Flip' is not unique: nodes 2, 5 have it"]),
    ({"1.seed": ["4", 0]}, ["a list [node, output] would be a link"]),
    ({"2.image": 5}, ["that input is linked to node 1's output 0 in the workflow"]),
    ({"seed": 5}, ["a key is NODE.INPUT"]),
]


@pytest.mark.parametrize(("params", "expected"), BAD_PARAMS, ids=[next(iter(p)) for p, _ in BAD_PARAMS])
def test_a_bad_parameter_is_refused_saying_why_and_nothing_is_queued(
    rig: Rig, params: dict[str, Any], expected: list[str]
) -> None:
    posted = prompts_posted(rig)
    result = rig.runsync({"workflow_name": "portrait", "params": params})
    error = failed(result)
    for words in expected:
        assert words in error, error
    assert "The workflow's parameters: 1.ckpt_name, 1.seed, 1.width" in error
    assert "(by title: Noise.ckpt_name" in error
    assert prompts_posted(rig) == posted, "a refused job must not reach ComfyUI"


def test_a_file_input_parameter_obeys_the_input_folder_rules(rig: Rig) -> None:
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "f"}},
    }
    posted = prompts_posted(rig)
    for name in ("../../etc/passwd", "/etc/passwd", "missing.png"):
        error = failed(rig.runsync({"workflow": workflow, "params": {"1.image": name}}))
        assert f"got {name!r}; give the name of one of the job's images (input.images)" in error, error
    assert prompts_posted(rig) == posted


def test_a_prefix_parameter_stays_inside_the_jobs_output_folder(rig: Rig) -> None:
    posted = prompts_posted(rig)
    error = failed(rig.runsync({"workflow_name": "portrait", "params": {"3.filename_prefix": "../../escape"}}))
    assert "'../../escape' must stay inside the output folder" in error, error
    assert prompts_posted(rig) == posted
    output = completed(rig.runsync({"workflow_name": "portrait", "params": {"3.filename_prefix": "renders/p"}}))
    assert (output["images"][0]["subfolder"], output["images"][0]["filename"]) == ("renders", "p_00001_.png")


@pytest.mark.parametrize("name", ["../portrait", "sub/portrait", "..", "/etc/passwd", "", 5, "outside", "nope"])
def test_a_workflow_name_never_reaches_outside_the_folder(rig: Rig, name: Any) -> None:
    outside = rig.root / "outside.json"
    outside.write_text(json.dumps(colour_workflow(1)))
    link = rig.comfy_dir / "workflows_api" / "outside.json"
    if not link.is_symlink():
        link.symlink_to(outside)
    posted = prompts_posted(rig)
    error = failed(rig.runsync({"workflow_name": name}))
    assert error.startswith("Invalid input: input.workflow_name"), error
    if isinstance(name, str) and name and "/" not in name and ".." not in name:
        assert "the workflows there are: portrait" in error
    assert prompts_posted(rig) == posted


def test_workflow_and_workflow_name_together_are_refused(rig: Rig) -> None:
    error = failed(rig.runsync({"workflow": colour_workflow(0), "workflow_name": "portrait"}))
    assert "input.workflow and input.workflow_name are both given" in error


def test_a_description_matches_object_info_and_queues_nothing(rig: Rig) -> None:
    posted = prompts_posted(rig)
    described = completed(rig.runsync({"describe": "portrait"}))
    info = rig.comfy_get("/object_info/StandinCheckpointNoise")["StandinCheckpointNoise"]["input"]["required"]
    schema = described["parameters"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["1.width"]["type"] == "integer"
    assert (props["1.width"]["minimum"], props["1.width"]["maximum"]) == (
        info["width"][1]["min"],
        info["width"][1]["max"],
    )
    assert props["1.width"]["x-comfy"]["step"] == info["width"][1]["step"] == 8
    assert props["1.width"]["default"] == 64  # the workflow's own value, not object_info's default
    assert props["1.palette"]["enum"] == info["palette"][0]
    assert props["1.ckpt_name"]["enum"] == info["ckpt_name"][0] == ["sd/tiny.safetensors"]
    assert props["1.ckpt_name"]["description"] == info["ckpt_name"][1]["tooltip"]
    assert props["1.strength"]["type"] == "number"
    assert props["1.invert"] == props["1.invert"] | {"type": "boolean", "default": False}
    assert props["1.seed"]["x-comfy"]["seed"] is True
    assert props["Noise.seed"]["x-comfy"]["alias_of"] == "1.seed"
    assert props["1.seed"]["title"] == "Noise"
    assert "2.image" not in props and "Flip.image" not in props, "links are not parameters"
    assert not any(key.startswith("Flip.") for key in props), "a shared title gives no alias"
    assert [(o["node_id"], o["class_type"]) for o in described["outputs"]] == [
        ("3", "SaveImage"),
        ("5", "PreviewImage"),
    ]
    listing = completed(rig.runsync({"describe": True}))
    assert listing["workflows"][:1] == ["portrait"]
    missing = {**colour_workflow(0), "3": {"class_type": "NoSuchNode", "inputs": {"x": 1}}}
    write_workflow(rig.comfy_dir / "workflows_api", "zz-missing", missing)
    try:
        described = completed(rig.runsync({"describe": "zz-missing"}))
    finally:
        (rig.comfy_dir / "workflows_api" / "zz-missing.json").unlink()
    assert described["unknown_node_classes"] == ["NoSuchNode"]
    assert "1.color" in described["parameters"]["properties"]
    assert prompts_posted(rig) == posted


def test_model_hashes_are_computed_once_per_file_version(rig: Rig) -> None:
    assert rig.handler is not None
    checkpoint = rig.comfy_dir / "models" / "checkpoints" / "sd" / "tiny.safetensors"

    def hashed() -> int:
        assert rig.handler is not None
        return sum("hashed model file" in line and str(checkpoint) in line for line in rig.handler.lines)

    before = hashed()
    for seed in (1, 2, 3):
        completed(rig.runsync({"workflow_name": "portrait", "params": {"1.seed": seed}}))
    assert hashed() == max(before, 1), "read once for every job after the first"
    checkpoint.write_bytes(CHECKPOINT + b"v2")
    output = completed(rig.runsync({"workflow_name": "portrait"}))
    assert output["models"][0]["sha256"] == hashlib.sha256(CHECKPOINT + b"v2").hexdigest()
    assert hashed() == max(before, 1) + 1
    checkpoint.write_bytes(CHECKPOINT)


def test_a_named_workflow_with_params_through_runpods_job_take_loop(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    write_workflow(rig.comfy_dir / "workflows_api", "colour", colour_workflow(0))
    rig.start_without_handler()
    jobs = [
        {"id": "rp-named", "input": {"workflow_name": "colour", "params": {"1.color": 0x0000FF, "1.width": 4}}},
        {"id": "rp-bad", "input": {"workflow_name": "colour", "params": {"1.color": -1}}},
    ]
    fake = FakeRunPod(jobs, rtt_s=0)
    handler = Process("handler", [PYTHON, "-m", "handler"], rig.handler_env(fake.env()))
    try:
        fake.wait_results(2, 60)
        good, bad = fake.result("rp-named"), fake.result("rp-bad")
        assert good is not None and bad is not None
        [image] = good.body["output"]["images"]
        assert (image["width"], image["height"]) == (4, 8)
        assert decoded(image).convert("RGB").getpixel((0, 0)) == (0, 0, 255)
        assert "got -1, out of range from 0 to 16777215" in bad.body["error"]
    finally:
        handler.stop()
        rig.stop()
        fake.close()


def test_two_workers_read_one_workflows_folder_while_it_changes(tmp_path: Path) -> None:
    shared = tmp_path / "shared-workflows"
    write_workflow(shared, "colour", colour_workflow(0xAA0000))
    rigs = [Rig(tmp_path / f"worker{index}") for index in range(2)]
    try:
        for each in rigs:
            each.start({"WORKFLOWS_DIR": str(shared)})
        versions = {(0xAA, 0, 0), (0, 0xBB, 0)}
        stop = threading.Event()

        def rewrite() -> None:
            colours = itertools.cycle((0x00BB00, 0xAA0000))
            while not stop.is_set():
                write_workflow(shared, "colour", colour_workflow(next(colours)))
                time.sleep(0.01)

        with in_background(rewrite) as writer:
            with ThreadPoolExecutor(4) as pool:
                runs = [pool.submit(each.runsync, {"workflow_name": "colour"}) for each in rigs for _ in range(4)]
                seen = {pixel(completed(run.result())) for run in runs}
            stop.set()
            writer.result()
        assert seen <= versions, seen
        write_workflow(shared, "colour", colour_workflow(0x0000CC))
        write_workflow(shared, "added", colour_workflow(0x123456))
        for each in rigs:
            assert pixel(completed(each.runsync({"workflow_name": "colour"}))) == (0, 0, 0xCC)
            assert pixel(completed(each.runsync({"workflow_name": "added"}))) == (0x12, 0x34, 0x56)
            assert completed(each.runsync({"describe": True}))["workflows"] == ["added", "colour"]
    finally:
        for each in rigs:
            each.stop()
