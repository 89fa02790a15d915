"""Pure unit tests of the handler's small parts: settings, paths, encoding, progress, error texts."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from handler import config, explain, namespace
from handler.catalog import Catalog, NodeClass, _node_class
from handler.deliver import encode_file, encoded_size
from handler.download import redact
from handler.errors import JobError, Reason
from handler.namespace import RERUN_INPUT, JobSpace
from handler.progress import Progress
from worker_common.comfy_protocol import (
    ExecutionFailure,
    HistoryEntry,
    Rejection,
    credential_auth,
    credential_key,
    is_duplicate_prompt,
)
from worker_common.layout import Layout
from worker_common.settings import ConfigError

# -- settings ----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(__import__("os").environ):
        if name.startswith(("S3_", "BUCKET_", "JOB_", "RESPONSE_", "CLEANUP_", "COMFY", "WEBSOCKET_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_parse_and_hide_secrets(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("COMFY_ORG_API_KEY", "k-secret")
    settings = config.load()
    assert (settings.job_timeout_s, settings.response_size_limit_bytes, settings.s3) == (600.0, 20_000_000, None)
    assert settings.cleanup_inputs and settings.cleanup_outputs and settings.cleanup_history
    assert "k-secret" not in repr(settings)


def test_worker_comfyui_bucket_settings_are_understood(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BUCKET_ENDPOINT_URL", "https://my-bucket.s3.eu-west-1.amazonaws.com")
    clean_env.setenv("BUCKET_ACCESS_KEY_ID", "AKIA")
    clean_env.setenv("BUCKET_SECRET_ACCESS_KEY", "very-secret")
    s3 = config.load_s3()
    assert s3 is not None
    assert (s3.bucket, s3.endpoint_url, s3.region) == ("my-bucket", "https://s3.eu-west-1.amazonaws.com", "eu-west-1")
    assert (s3.access_key_id, s3.upload_mode, s3.addressing_style) == ("AKIA", "always", "auto")
    assert "very-secret" not in repr(s3)


def test_the_volume_forks_bucket_name_and_region_are_understood(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BUCKET_NAME", "fork-bucket")
    clean_env.setenv("BUCKET_REGION", "ap-south-1")
    s3 = config.load_s3()
    assert s3 is not None
    assert (s3.bucket, s3.region, s3.endpoint_url) == ("fork-bucket", "ap-south-1", None)


def test_upstream_polling_settings_are_named_once_and_ignored(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("COMFY_API_AVAILABLE_INTERVAL_MS", "50")
    [line] = config.ignored_settings()
    assert line.startswith("COMFY_API_AVAILABLE_INTERVAL_MS is set but not used:")


def test_s3_settings_win_over_the_legacy_ones(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BUCKET_ENDPOINT_URL", "https://old.s3.us-east-1.amazonaws.com")
    clean_env.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    clean_env.setenv("S3_BUCKET_NAME", "new")
    s3 = config.load_s3()
    assert s3 is not None
    assert (s3.bucket, s3.endpoint_url, s3.addressing_style) == ("new", "http://127.0.0.1:9000", "path")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"S3_ENDPOINT_URL": "https://r2.example.com"}, "set S3_BUCKET_NAME"),
        ({"S3_BUCKET_NAME": "b", "S3_BUCKET_CREDS_ACCESS_KEY_ID": "x"}, "must be set together"),
        ({"S3_BUCKET_NAME": "b", "S3_UPLOAD_MODE": "sometimes"}, "S3_UPLOAD_MODE='sometimes' is not one of"),
        ({"JOB_TIMEOUT_S": "0"}, "JOB_TIMEOUT_S=0.0 is below the minimum"),
        ({"CLEANUP_OUTPUTS": "maybe"}, "CLEANUP_OUTPUTS='maybe' is not a boolean"),
    ],
)
def test_bad_settings_name_the_variable(clean_env: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        config.load()


# -- folders -------------------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    made = Layout(tmp_path / "volume" / "ComfyUI", tmp_path / "venv", tmp_path / "worker", "w1")
    (made.shared_input).mkdir(parents=True)
    made.prepare()
    return made


@pytest.mark.parametrize(
    ("kind", "subfolder", "filename"),
    [("output", "..", "x.png"), ("output", "a/../../b", "x.png"), ("output", "", "../x.png"), ("bogus", "", "x.png")],
)
def test_a_path_from_history_cannot_leave_its_folder(layout: Layout, kind: str, subfolder: str, filename: str) -> None:
    assert layout.real_path(kind, subfolder, filename) is None


def test_a_path_inside_its_folder_resolves_and_a_backslash_is_a_plain_character(layout: Layout) -> None:
    assert layout.real_path("output", "audio", "a.flac") == layout.output / "audio" / "a.flac"
    assert layout.real_path("output", "", "a\\b_00001_.png") == layout.output / "a\\b_00001_.png"


def test_a_symbolic_link_cannot_lead_a_path_out_of_its_folder(layout: Layout, tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    (layout.output / "leak.png").symlink_to(tmp_path / "secret.png")
    (layout.output / "elsewhere").symlink_to(tmp_path)
    assert layout.real_path("output", "", "leak.png") is None
    assert layout.real_path("output", "elsewhere", "secret.png") is None


# -- encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 3 * 1024 * 1024 + 1, 7 * 1024 * 1024 + 2])
def test_files_are_encoded_exactly_as_base64_does(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    encoded = encode_file(path)
    assert encoded == base64.b64encode(data).decode()
    assert len(encoded) == encoded_size(size)


def test_redacted_urls_keep_no_query() -> None:
    assert (
        redact("https://user:pw@host.example:8443/a/b.png?X-Amz-Signature=abc#f")
        == "https://host.example:8443/a/b.png?…"
    )


# -- progress ------------------------------------------------------------------------------


def test_progress_is_throttled_to_two_reports_a_second_and_says_where_it_is() -> None:
    now = [0.0]
    sent: list[dict[str, Any]] = []
    workflow = {"1": {"class_type": "A"}, "2": {"class_type": "KSampler"}, "3": {"class_type": "Save"}}
    progress = Progress(workflow, sent.append, clock=lambda: now[0])
    progress.cached(["1"])
    progress.node("2")
    assert sent == []  # nothing in the first half second
    for step in range(1, 9):
        now[0] += 0.125
        progress.step(step, 8, "2")
    assert len(sent) == 2
    assert sent[-1] == {
        "node": 2,
        "nodes": 3,
        "node_id": "2",
        "class_type": "KSampler",
        "step": 8,
        "steps": 8,
        "message": "node 2 of 3 (KSampler), step 8 of 8",
    }


# -- a job's names and ComfyUI's errors ---------------------------------------------------


class FakeCatalog(Catalog):
    """The catalog over a fixed /object_info (a ComfyClient is not needed to test the rewriting)."""

    def __init__(self, infos: dict[str, Any]) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.infos = infos

    def get(self, name: str, timeout_s: float | None = None) -> NodeClass:
        return _node_class(name, self.infos.get(name))

    def names(self, timeout_s: float | None = None) -> list[str]:
        return list(self.infos)


OBJECT_INFO = {
    "EmptyImage": {"input": {"required": {"width": ["INT", {}]}}, "output_node": False},
    "LoadImage": {"input": {"required": {"image": [["a.png"], {"image_upload": True}]}}, "output_node": False},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]}}, "output_node": True},
    "PreviewImage": {"input": {"required": {"images": ["IMAGE"]}}, "output_node": True},
    "ImageInvert": {"input": {"required": {"image": ["IMAGE"]}}, "output_node": False},
    "UNETLoader": {"input": {"required": {"unet_name": ["COMBO", {"options": ["flux.safetensors"]}]}}},
}


def _prepare(layout: Layout, workflow: dict[str, Any], images: set[str] = frozenset()) -> tuple[JobSpace, Any]:
    space = JobSpace.new(layout)
    return space, namespace.prepare(workflow, space, set(images), FakeCatalog(OBJECT_INFO), 1.0)


def test_output_nodes_get_the_rerun_input_even_when_they_feed_another_node(layout: Layout) -> None:
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    space, prepared = _prepare(layout, workflow)
    changed = prepared.workflow
    assert changed["2"]["inputs"][RERUN_INPUT] == changed["4"]["inputs"][RERUN_INPUT] == space.key
    assert RERUN_INPUT not in changed["1"]["inputs"] and RERUN_INPUT not in changed["3"]["inputs"]
    assert changed["2"]["inputs"]["filename_prefix"] == f"{space.key}/a"
    assert prepared.intermediate_nodes == {"1", "3"}
    assert workflow["2"]["inputs"] == {"images": ["1", 0], "filename_prefix": "a"}  # the caller's is not changed


def test_a_jobs_images_and_the_volumes_files_get_the_jobs_names(layout: Layout) -> None:
    (layout.shared_input / "masks").mkdir()
    (layout.shared_input / "masks" / "m.png").write_bytes(b"x")
    (layout.shared_input / "masks" / "n.png").write_bytes(b"y")
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "mine.png [input]"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "masks/m.png"}},
    }
    space, prepared = _prepare(layout, workflow, {"mine.png"})
    assert prepared.workflow["1"]["inputs"]["image"] == f"{space.key}-mine.png"
    assert prepared.workflow["2"]["inputs"]["image"] == f"{space.key}-masks/m.png"
    assert prepared.shared_links == {f"{space.key}-masks/m.png": (layout.shared_input / "masks" / "m.png").resolve()}


@pytest.mark.parametrize(
    "name", ["../secret.png", "/etc/passwd", "x.png [output]", "x.png [temp]", "missing.png", "link.png"]
)
def test_a_workflow_cannot_name_files_outside_the_jobs_reach(layout: Layout, tmp_path: Path, name: str) -> None:
    (tmp_path / "volume" / "ComfyUI" / "secret.png").write_bytes(b"x")
    (layout.shared_input / "link.png").symlink_to(tmp_path / "volume" / "ComfyUI" / "secret.png")
    with pytest.raises(JobError) as caught:
        _prepare(layout, {"1": {"class_type": "LoadImage", "inputs": {"image": name}}})
    assert caught.value.reason is Reason.INVALID_INPUT
    assert f"node 1 (LoadImage) input 'image': {name!r}" in caught.value.message


@pytest.mark.parametrize("prefix", ["../x", "/abs/x", "a/../../x"])
def test_a_filename_prefix_cannot_leave_the_output_folder(layout: Layout, prefix: str) -> None:
    with pytest.raises(JobError, match="must stay inside the output folder"):
        _prepare(layout, {"1": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}}})


def test_an_unknown_class_is_explained_in_both_comfyui_versions() -> None:
    old = {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node UNETLoadr does not exist.",
            "details": "Node ID '#4'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    new = {
        "error": {
            "type": "missing_node_type",
            "message": "Node 'UNETLoadr' not found. The custom node may not be installed.",
            "details": "Node ID '#4'",
            "extra_info": {"node_id": "4", "class_type": "UNETLoadr", "node_title": "UNETLoadr"},
        },
        "node_errors": {},
    }
    for body in (old, new):
        answer = Rejection.from_body(body)
        assert answer is not None
        error = explain.rejection(answer, {}, FakeCatalog(OBJECT_INFO), str, list)
        assert error.message.startswith("ComfyUI rejected the workflow: node 4: there is no node class 'UNETLoadr'")
        assert "similar classes that exist: UNETLoader" in error.message


def test_a_rejection_lists_each_node_error_and_new_style_combo_options() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
        "node_errors": {
            "4": {
                "class_type": "UNETLoader",
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "unet_name: 'x' not in [...]",
                        "extra_info": {"input_name": "unet_name", "received_value": "x"},
                    }
                ],
            },
            "5": {
                "class_type": "EmptyImage",
                "errors": [
                    {
                        "type": "value_smaller_than_min",
                        "message": "Value 0 smaller than min of 1",
                        "details": "width",
                        "extra_info": {"input_name": "width"},
                    }
                ],
            },
        },
    }
    info = {"UNETLoader": {"input": {"required": {"unet_name": ["COMBO", {"options": ["flux.safetensors"]}]}}}}
    answer = Rejection.from_body(body)
    assert answer is not None
    error = explain.rejection(answer, {}, FakeCatalog(info), str, list)
    assert error.reason is Reason.VALIDATION
    assert error.message == (
        "ComfyUI rejected the workflow: node 4 (UNETLoader): unet_name 'x' not found; available: flux.safetensors; "
        "node 5 (EmptyImage): width: Value 0 smaller than min of 1"
    )
    assert error.details["node_errors"][0]["available"] == ["flux.safetensors"]


def test_a_failed_history_entry_raises_its_execution_error() -> None:
    entry = {
        "status": {
            "status_str": "error",
            "messages": [
                ["execution_start", {}],
                [
                    "execution_error",
                    {
                        "node_id": "7",
                        "node_type": "KSampler",
                        "exception_type": "torch.OutOfMemoryError",
                        "exception_message": "CUDA out of memory\n",
                        "traceback": ['  File "x.py", line 1, in f\n    g()\n', "    ^^^\n"],
                    },
                ],
            ],
        },
        "outputs": {},
    }
    failure = HistoryEntry.from_entry(entry).failure
    assert failure is not None
    error = explain.execution_failure(failure, str)
    assert error.reason is Reason.EXECUTION
    assert error.message == (
        "ComfyUI failed at node 7 (KSampler): torch.OutOfMemoryError: CUDA out of memory\n"
        'Traceback (last lines):\n  File "x.py", line 1, in f\n    g()'
    )


def test_an_execution_error_without_traceback_is_one_line() -> None:
    data = {"node_id": "1", "node_type": "X", "exception_type": "E", "exception_message": "m"}
    error = explain.execution_failure(ExecutionFailure.from_message("execution_error", data), str)
    assert error.message == "ComfyUI failed at node 1 (X): E: m"


def test_the_credential_key_of_a_status_frame_and_the_message_that_presents_it() -> None:
    status = {"type": "status", "data": {"status": {"exec_info": {}}, "sid": "w", "credential_key": "k"}}
    assert credential_key(status) == "k"
    assert credential_key({"type": "status", "data": {"status": {}, "sid": "w"}}) is None  # 0.3.64, 0.38.1
    assert credential_key({"type": "executing", "data": {"credential_key": "k"}}) is None
    assert credential_key({"type": "status", "data": {"credential_key": ""}}) is None
    assert json.loads(credential_auth("k")) == {"type": "credential_auth", "data": {"credential_key": "k"}}


def test_only_0_47s_409_for_a_known_prompt_id_is_a_duplicate() -> None:
    assert is_duplicate_prompt(409, {"error": "prompt_id already exists"})
    assert not is_duplicate_prompt(409, {"error": "something else"})
    assert not is_duplicate_prompt(400, {"error": "prompt_id already exists"})
    assert not is_duplicate_prompt(409, None)
