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


def test_on_runpod_jobs_are_pipelined_and_each_ones_progress_arrives_before_its_result(tmp_path: Path) -> None:
    """Depth 2 through the SDK's own job-take loop: every job comes back, its progress reports first."""
    jobs = [
        {
            "id": f"rp-pipe-{index}",
            "input": {
                "workflow": {
                    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
                    "2": {"class_type": "StandinSleep", "inputs": {"seconds": 1.2, "steps": 24, "image": ["1", 0]}},
                    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pipe"}},
                }
            },
        }
        for index in range(4)
    ]
    fake = FakeRunPod(jobs, rtt_s=0.02)
    rig = Rig(tmp_path).start_without_handler()
    handler = Process("handler", [PYTHON, "-m", "handler"], rig.handler_env({**fake.env(), "JOB_PIPELINE_DEPTH": "2"}))
    try:
        results = fake.wait_results(len(jobs), 120)
        assert sorted(job_id for result in results for job_id in result.job_ids) == [job["id"] for job in jobs]
        for job in jobs:
            result = fake.result(job["id"])
            assert result is not None and len(result.body["output"]["images"]) == 1, result
            reports = fake.progress(job["id"])
            assert reports, f"{job['id']} sent no progress"
            assert all(report.at < result.at for report in reports), f"{job['id']}: progress after its result"
        # The second job was handed out while the first one still ran: the worker took two at once.
        first_result, second_taken = fake.result(jobs[0]["id"]), fake.handed_out_at(jobs[1]["id"])
        assert first_result is not None and second_taken is not None and second_taken < first_result.at
    finally:
        handler.stop()
        rig.stop()
        fake.close()
