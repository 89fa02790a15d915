"""The parts of workflows-as-an-API that need no ComfyUI: input specs as /object_info writes them, value checks,
and the named-workflow store's reading of a changing folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler.errors import JobError
from handler.params import check_value
from handler.workflows import WorkflowStore
from worker_common.comfy_protocol import InputSpec, node_inputs


def never(_name: str) -> bool:
    return False


def test_input_specs_are_read_in_the_old_and_the_new_combo_form() -> None:
    info = {
        "input": {
            "required": {
                "old": [["a", "b"], {"default": "a"}],
                "new": ["COMBO", {"options": ["x", "y"], "multiselect": False}],
                "seed": ["INT", {"min": 0, "control_after_generate": True}],
                "image": ["IMAGE"],
                "forced": ["INT", {"forceInput": True}],
            },
            "optional": {"upload": [["p.png"], {"image_upload": True}]},
        }
    }
    specs = node_inputs(info)
    assert (specs["old"].type, specs["old"].choices) == ("COMBO", ("a", "b"))
    assert (specs["new"].type, specs["new"].choices) == ("COMBO", ("x", "y"))
    assert specs["seed"].is_seed and specs["seed"].takes_value
    assert not specs["image"].takes_value and not specs["forced"].takes_value
    assert specs["upload"].names_an_input_file and not specs["upload"].required


@pytest.mark.parametrize(
    ("spec", "value", "accepted"),
    [
        (["INT", {"min": 0, "max": 10}], 7.0, 7),
        (["INT", {"min": 0, "max": 10}], True, None),
        (["INT", {"min": 16, "step": 8}], 24, 24),
        (["INT", {"min": 16, "step": 8}], 20, None),
        (["FLOAT", {"min": 0.0, "max": 1.0, "step": 0.1}], 0.25, 0.25),
        (["FLOAT", {}], float("nan"), None),
        (["STRING", {}], "", ""),
        (["BOOLEAN", {}], 0, None),
        ([["a", "b"], {}], "b", "b"),
        ([["1", "2"], {}], 1, None),
        (["STRING", {}], {"a": 1}, None),
        (["IMAGE"], "x", None),
    ],
)
def test_values_are_checked_as_comfyui_would_and_stricter(spec: list, value: object, accepted: object) -> None:
    checked, problem = check_value(InputSpec.from_spec("x", spec, True), value, never)
    assert (checked, problem is None) == (accepted, accepted is not None), problem


def test_the_store_notices_a_replaced_file_and_parses_each_version_once(tmp_path: Path) -> None:
    store = WorkflowStore(tmp_path)
    (tmp_path / "w.json").write_text(json.dumps({"1": {"class_type": "A"}}))
    first = store.load("w")
    assert store.load("w") is first, "an unchanged file is not parsed again"
    replacement = tmp_path / "new.tmp"
    replacement.write_text(json.dumps({"1": {"class_type": "B"}}))
    replacement.replace(tmp_path / "w.json")
    assert store.load("w")["1"]["class_type"] == "B"
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(JobError, match=r"broken\.json is not valid JSON"):
        store.load("broken")
    (tmp_path / ".hidden.json").write_text("{}")
    assert store.names() == ["broken", "w"]
