"""A workflow naming a node class that does not exist: the job says why, and what exists instead.

The most common support question of ComfyUI workers: a custom node pack failed to import (its
dependency is missing from the volume venv), ComfyUI carried on, and jobs fail with "node X does
not exist". The stand-in reports a failed pack the way ComfyUI does (STANDIN_FAILED_CUSTOM_NODES),
the sidecar reads that report, and the handler's error names the pack and its import error.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.releases import RELEASES
from tests.stack import Stack
from tests.workflows import failed

FAILED_PACK = "ComfyUI-Foo"
IMPORT_ERROR = "ModuleNotFoundError: No module named 'foo'"


def job_with(class_type: str) -> dict:
    return {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": class_type, "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        }
    }


@pytest.mark.parametrize("version", RELEASES)
def test_a_missing_class_names_the_pack_that_failed_to_import_and_similar_classes(
    make_stack: Callable[..., Stack], version: str
) -> None:
    stack = make_stack(
        STANDIN_FAILED_CUSTOM_NODES=f"{FAILED_PACK}={IMPORT_ERROR}", STANDIN_COMFYUI_VERSION=version
    ).start()
    stack.wait_accepting_jobs()
    error = failed(stack.runsync(job_with("FooSaveImage")))
    assert error.startswith("ComfyUI rejected the workflow: node 2: there is no node class 'FooSaveImage'"), error
    assert f"custom node packs that failed to import at start-up: {FAILED_PACK} ({IMPORT_ERROR})" in error, error
    assert "similar classes that exist: SaveImage" in error, error
