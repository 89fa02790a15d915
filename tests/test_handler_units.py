"""Pure unit tests of the handler's small parts: settings, paths, encoding, progress, error texts."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from handler import config
from handler.context import JobContext
from handler.deliver import encode_file, encoded_size
from handler.download import redact
from handler.errors import JobError, Reason
from handler.folders import Folders, discover
from handler.follow import execution_error, outputs_from_history
from handler.progress import Progress
from handler.submit import RERUN_INPUT, queue, rejection, rerun_outputs
from handler.validate import JobInput
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


def test_folders_follow_comfyuis_command_line(tmp_path: Path) -> None:
    folders = discover(tmp_path, ["main.py", "--output-directory", "/data/out", "--temp-directory=/scratch"])
    assert (folders.output, folders.temp, folders.input) == (
        Path("/data/out"),
        Path("/scratch/temp"),
        tmp_path / "input",
    )
    based = discover(tmp_path, ["main.py", "--base-directory", "base"])
    assert based.output == tmp_path / "base" / "output"


@pytest.mark.parametrize(
    ("kind", "subfolder", "filename"),
    [("output", "..", "x.png"), ("output", "a/../../b", "x.png"), ("output", "", "../x.png"), ("bogus", "", "x.png")],
)
def test_a_path_from_history_cannot_leave_its_folder(tmp_path: Path, kind: str, subfolder: str, filename: str) -> None:
    folders = Folders(tmp_path / "in", tmp_path / "out", tmp_path / "temp")
    assert folders.resolve(kind, subfolder, filename) is None


def test_a_path_inside_its_folder_resolves(tmp_path: Path) -> None:
    folders = Folders(tmp_path / "in", tmp_path / "out", tmp_path / "temp")
    assert folders.resolve("output", "audio", "a.flac") == tmp_path / "out" / "audio" / "a.flac"


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


# -- queueing and ComfyUI's errors ---------------------------------------------------------


class FakeComfy:
    def __init__(self, object_info: dict[str, Any] | None = None) -> None:
        self.queued: list[tuple] = []
        self.info = object_info or {}

    def queue_prompt(self, workflow: dict, client_id: str, prompt_id: str, extra_data: dict | None = None) -> dict:
        self.queued.append((workflow, client_id, prompt_id, extra_data))
        return {"prompt_id": prompt_id}

    def object_info(self, node_class: str) -> dict:
        return {node_class: self.info[node_class]} if node_class in self.info else {}


class FakeRuntime:
    def __init__(self, comfy: FakeComfy, key: str = "", cleanup_outputs: bool = True) -> None:
        self.comfy = comfy
        self.config = type("C", (), {"comfy_org_api_key": key, "cleanup_outputs": cleanup_outputs})()


WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
}


@pytest.mark.parametrize(
    ("env_key", "input_key", "expected"), [("", None, None), ("env", None, "env"), ("env", "in", "in")]
)
def test_the_comfy_org_key_goes_to_extra_data(env_key: str, input_key: str | None, expected: str | None) -> None:
    comfy = FakeComfy()
    ctx = JobContext({"id": "j"}, 60)
    prompt_id = queue(FakeRuntime(comfy, env_key), ctx, "client-1", JobInput(WORKFLOW, [], input_key))  # type: ignore[arg-type]
    [(workflow, client_id, sent_id, extra_data)] = comfy.queued
    assert (client_id, sent_id, ctx.prompt_id) == ("client-1", prompt_id, prompt_id)
    assert extra_data == ({"api_key_comfy_org": expected} if expected else None)
    assert workflow["2"]["inputs"][RERUN_INPUT] == prompt_id


def test_only_leaf_nodes_get_the_rerun_input() -> None:
    changed = rerun_outputs(WORKFLOW, "t")
    assert changed["1"] == WORKFLOW["1"]
    assert changed["2"]["inputs"] == {"images": ["1", 0], RERUN_INPUT: "t"}
    assert RERUN_INPUT not in WORKFLOW["2"]["inputs"]  # the caller's workflow is not changed


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
    error = rejection(FakeComfy(info), body, {})  # type: ignore[arg-type]
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
    with pytest.raises(JobError) as caught:
        outputs_from_history(entry)
    assert caught.value.reason is Reason.EXECUTION
    assert caught.value.message == (
        "ComfyUI failed at node 7 (KSampler): torch.OutOfMemoryError: CUDA out of memory\n"
        'Traceback (last lines):\n  File "x.py", line 1, in f\n    g()'
    )


def test_an_execution_error_without_traceback_is_one_line() -> None:
    error = execution_error({"node_id": "1", "node_type": "X", "exception_type": "E", "exception_message": "m"})
    assert error.message == "ComfyUI failed at node 1 (X): E: m"
