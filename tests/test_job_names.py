"""The names users give their files: any legal name works, and an error shows only the job's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler import explain, namespace
from handler.namespace import JobSpace
from tests.handler_harness import Rig
from tests.images import noise_png
from tests.test_handler_jobs import invert_job
from tests.test_handler_units import OBJECT_INFO, FakeCatalog
from worker_common.comfy_protocol import Rejection
from worker_common.layout import Layout

LONGEST_NAME = "é" * 125 + ".png"  # 254 bytes: legal on every file system
ANNOTATED_NAMES = ("x.png [output]", "x.png [temp]")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    made = Layout(tmp_path / "comfy", tmp_path / "venv", tmp_path / "data", "w")
    (made.shared_input / "masks").mkdir(parents=True)
    (made.shared_input / "masks" / "m.png").write_bytes(b"x")
    made.prepare()
    return made


# -- long names, annotated names ----------------------------------------------------------


@pytest.mark.parametrize("name", [LONGEST_NAME, *ANNOTATED_NAMES])
def test_any_legal_image_name_works(rig: Rig, name: str) -> None:
    result = rig.runsync(invert_job(name=name, data=noise_png(seed=3)))
    assert result["status"] == "COMPLETED", result
    assert len(result["output"]["images"]) == 1


@pytest.mark.parametrize("name", [LONGEST_NAME, *ANNOTATED_NAMES])
def test_a_stored_name_fits_and_ends_as_comfyui_reads_a_plain_file(layout: Layout, name: str) -> None:
    space = JobSpace.new(layout)
    stored = space.input_name(name)
    assert len(stored.encode()) <= namespace.MAX_NAME_BYTES
    assert stored.startswith(f"{space.key}-") and stored.endswith(".png")
    assert space.owns_input(stored)
    assert space.unmask(f"Invalid image file: {stored}") == f"Invalid image file: {name}"
    assert space.input_name(name) == stored, "the same name is stored the same way every time"


def test_a_long_shared_input_name_is_linked_under_a_name_that_fits(layout: Layout) -> None:
    long_name = "s" * 250 + ".png"
    (layout.shared_input / long_name).write_bytes(b"x")
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": long_name}}}
    space = JobSpace.new(layout)
    prepared = namespace.prepare(workflow, space, set(), FakeCatalog(OBJECT_INFO), 1.0)
    [(stored, target)] = prepared.shared_links.items()
    assert prepared.workflow["1"]["inputs"]["image"] == stored
    assert len(stored.encode()) <= namespace.MAX_NAME_BYTES and target.name == long_name


def test_a_plain_name_keeps_its_readable_form(layout: Layout) -> None:
    space = JobSpace.new(layout)
    assert space.input_name("in.png") == f"{space.key}-in.png"


# -- what an error lists -------------------------------------------------------------------


def test_a_file_inputs_error_lists_only_the_jobs_files_and_the_volumes(layout: Layout) -> None:
    space = JobSpace.new(layout)
    namespace.prepare(
        {"1": {"class_type": "LoadImage", "inputs": {"image": "mine.png"}}},
        space,
        {"mine.png"},
        FakeCatalog(OBJECT_INFO),
        1.0,
    )
    others = [f"j0123456789ab-{name}" for name in ("secret-plan.png", "rt_shared.png")]
    info = {
        "LoadImage": {
            "input": {"required": {"image": [[space.input_name("mine.png"), *others], {"image_upload": True}]}}
        }
    }
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
        "node_errors": {
            "1": {
                "class_type": "LoadImage",
                "errors": [
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": f"image - Invalid image file: {space.input_name('mine.png')}",
                        "extra_info": {"input_name": "image"},
                    }
                ],
            }
        },
    }
    answer = Rejection.from_body(body)
    assert answer is not None
    error = explain.rejection(answer, {}, FakeCatalog(info), space.unmask, list, space.usable_inputs)
    assert error.details["node_errors"][0]["available"] == ["mine.png", "masks/m.png"]
    assert "secret-plan" not in error.message and "rt_shared" not in error.message and "j0123" not in error.message
    assert error.message.endswith("Invalid image file: mine.png; available: mine.png, masks/m.png"), error.message
