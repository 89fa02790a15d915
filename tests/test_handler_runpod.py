"""The handler as RunPod runs it (RUNPOD_WEBHOOK_GET_JOB set): jobs taken from the job-take URL,
results posted back, the readiness gate run as a runpod fitness check. RunPod's side is
tests/fake_runpod.py, handing out one job and recording what the worker sends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_runpod import FakeRunPod
from tests.handler_harness import PYTHON, Process, Rig

JOB = {
    "id": "rp-job-1",
    "input": {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFF0000}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "rp"}},
        }
    },
}


@pytest.fixture
def runpod_api() -> Iterator[FakeRunPod]:
    fake = FakeRunPod([JOB], rtt_s=0)
    yield fake
    fake.close()


def test_on_runpod_a_job_is_taken_run_and_its_result_posted(tmp_path: Path, runpod_api: FakeRunPod) -> None:
    rig = Rig(tmp_path).start_without_handler()
    handler = Process("handler", [PYTHON, "-m", "handler"], rig.handler_env(runpod_api.env()))
    try:
        [result] = runpod_api.wait_results(1, 30)
        assert result.job_ids == ("rp-job-1",)
        [item] = result.body["output"]["images"]
        assert (item["type"], item["mime"]) == ("base64", "image/png")
        assert any("Fitness check passed: comfyui_ready" in line for line in handler.lines), handler.output()
    finally:
        handler.stop()
        rig.stop()


def test_on_runpod_comfyui_never_ready_is_reported_unhealthy_and_exits_3(
    tmp_path: Path, runpod_api: FakeRunPod
) -> None:
    rig = Rig(tmp_path).start_without_handler(comfy=False)
    never_ready = {"COMFY_READY_TIMEOUT_S": "1", "WORKER_STARTED_AT": str(time.time())}
    env = rig.handler_env({**runpod_api.env(), "RUNPOD_AI_API_KEY": "rp-key", **never_ready})
    handler = Process("handler", [PYTHON, "-m", "handler"], env)
    try:
        assert handler.popen.wait(60) == 3, handler.output()
        [query] = [ping.query for ping in runpod_api.of_kind("ping") if ping.path == "/ping/pod-1"]
        assert (query["status"], query["check"]) == (["unhealthy"], ["comfyui_ready"])
        assert query["reason"][0].startswith("ComfyUI was not ready within COMFY_READY_TIMEOUT_S=1 s")
        assert not runpod_api.of_kind("take", "take-batch"), "no job is taken"
    finally:
        handler.stop()
        rig.stop()
