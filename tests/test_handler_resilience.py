"""The handler when things go wrong: dropped and silent WebSockets, deadlines, cancellation,
ComfyUI not ready or dying mid-job. All real processes on loopback."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.handler_harness import Rig
from tests.releases import RELEASES
from tests.stack import Stack
from tests.workflows import image_chain


def image_through(*middle: tuple[str, dict], prefix: str = "r") -> dict:
    """EmptyImage (8x8) -> the given nodes in a chain -> SaveImage."""
    return image_chain(*middle, prefix=prefix, side=8, color=0xFF)


SLEEP = ("StandinSleep", {"seconds": 0.4, "steps": 4})
DROP = ("StandinDropWebSockets", {})


def completed(result: dict) -> dict:
    assert result["status"] == "COMPLETED", result
    return result["output"]


def test_a_websocket_dropped_mid_job_is_reconnected_and_a_history_500_retried(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"STANDIN_HISTORY_500_ONCE": "1"}).start()
    try:
        output = completed(rig.runsync(image_through(DROP, SLEEP)))
        assert len(output["images"]) == 1
        assert any("WebSocket dropped" in line for line in rig.handler.lines), rig.output()
        # The stand-in's one 500 went to the handler's reconciliation, which retried it.
        assert requests.get(f"{rig.comfy_url}/history/none", timeout=5).status_code == 200
        completed(rig.runsync(image_through(SLEEP)))  # the next job on a new socket
    finally:
        rig.stop()


@pytest.mark.parametrize("version", RELEASES)
def test_a_completion_missed_on_a_silent_socket_is_found_through_history(tmp_path: Path, version: str) -> None:
    comfy_env = {"STANDIN_WS_SILENT_AFTER_S": "0.3", "STANDIN_COMFYUI_VERSION": version}
    rig = Rig(tmp_path, comfy_env).start({"WEBSOCKET_RECEIVE_TIMEOUT_S": "0.5"})
    try:
        started = time.monotonic()
        output = completed(rig.runsync(image_through(("StandinSleep", {"seconds": 0.8, "steps": 2}))))
        assert len(output["images"]) == 1
        assert time.monotonic() - started < 5
    finally:
        rig.stop()


@pytest.mark.parametrize("version", RELEASES)
def test_the_deadline_interrupts_a_slow_node_and_empties_the_queue(tmp_path: Path, version: str) -> None:
    rig = Rig(tmp_path, {"STANDIN_COMFYUI_VERSION": version}).start({"JOB_TIMEOUT_S": "1.5"})
    try:
        started = time.monotonic()
        result = rig.runsync(image_through(("StandinSleep", {"seconds": 60, "steps": 600})))
        elapsed = time.monotonic() - started
        assert result["status"] == "FAILED", result
        assert "time limit of 1.5 s (JOB_TIMEOUT_S)" in result["error"]
        assert "ComfyUI was interrupted at node 2 (StandinSleep)" in result["error"]
        assert elapsed < 5
        queue = rig.comfy_get("/queue")
        assert queue == {"queue_running": [], "queue_pending": []}
    finally:
        rig.stop()


def test_runpod_cancelling_the_job_interrupts_comfyui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler coroutine as runpod runs it, cancelled as runpod's stop_job does."""
    rig = Rig(tmp_path).start()
    try:
        worker = rig.in_process_worker(monkeypatch, {"CLEANUP_HISTORY": "false"})
        job = {"id": "cancel-me", "input": image_through(("StandinSleep", {"seconds": 60, "steps": 600}))}

        async def run_and_cancel() -> None:
            task = asyncio.create_task(worker.handler(job))
            await asyncio.sleep(1.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        started = time.monotonic()
        asyncio.run(run_and_cancel())
        assert time.monotonic() - started < 6
        assert rig.comfy_get("/queue") == {"queue_running": [], "queue_pending": []}
        statuses = [entry["status"] for entry in rig.comfy_get("/history").values()]
        assert [status["messages"][-1][0] for status in statuses] == ["execution_interrupted"]
    finally:
        rig.stop()


def test_the_handler_exits_3_when_comfyui_is_never_ready(tmp_path: Path) -> None:
    rig = Rig(tmp_path).start_without_handler(comfy=False)  # the sidecar waits for a ComfyUI that never comes
    try:
        handler = rig.start_handler({"COMFY_READY_TIMEOUT_S": "1", "WORKER_STARTED_AT": str(time.time())}, wait=False)
        assert handler.popen.wait(30) == 3
        handler.stop()
        last = [line for line in handler.lines if line.strip()][-1]
        assert "ComfyUI was not ready within COMFY_READY_TIMEOUT_S=1 s of the container's start:" in last
    finally:
        rig.stop()


def stop_comfy_and_wait_unready(rig: Rig) -> None:
    assert rig.comfy is not None
    rig.comfy.stop()
    sidecar = f"http://127.0.0.1:{rig.sidecar_port}/readyz"
    rig.wait_for(lambda: not requests.get(sidecar, timeout=5).json()["ready"], 10, what="the sidecar to see it")


def test_a_job_fails_fast_with_the_sidecars_reason_when_comfyui_stays_down(tmp_path: Path) -> None:
    rig = Rig(tmp_path).start({"JOB_READY_WAIT_S": "1"})
    try:
        stop_comfy_and_wait_unready(rig)
        started = time.monotonic()
        result = rig.runsync(image_through())
        assert result["status"] == "FAILED", result
        expected = "ComfyUI is not ready after waiting 1 s (JOB_READY_WAIT_S), so the job was not started:"
        assert expected in result["error"]
        assert "connection refused" in result["error"]
        assert time.monotonic() - started < 4
    finally:
        rig.stop()


def test_a_job_timing_out_while_comfyui_is_not_ready_says_why_it_was_not(tmp_path: Path) -> None:
    rig = Rig(tmp_path).start({"JOB_READY_WAIT_S": "30", "JOB_TIMEOUT_S": "2"})
    try:
        stop_comfy_and_wait_unready(rig)
        result = rig.runsync(image_through())
        assert result["status"] == "FAILED", result
        assert result["error"].startswith("The job ran longer than its time limit of 2 s (JOB_TIMEOUT_S)"), result
        assert " while it waited for ComfyUI to become ready: " in result["error"]
        assert "connection refused" in result["error"], "the sidecar's reason"
    finally:
        rig.stop()


def test_a_job_waits_for_a_restarting_comfyui(tmp_path: Path) -> None:
    rig = Rig(tmp_path).start({"JOB_READY_WAIT_S": "30"})
    try:
        stop_comfy_and_wait_unready(rig)
        results: list[dict] = []
        sender = threading.Thread(target=lambda: results.append(rig.runsync(image_through())))
        sender.start()
        time.sleep(1.0)
        rig.start_comfy()
        sender.join(40)
        assert results and results[0]["status"] == "COMPLETED", results
    finally:
        rig.stop()


EXIT_MID_JOB = image_through(("StandinExit", {"code": 1}))


def test_comfyui_dying_mid_job_fails_the_job_at_once_with_the_reason(make_stack) -> None:
    stack: Stack = make_stack().start()
    stack.wait_accepting_jobs()
    started = time.monotonic()
    result = stack.runsync(EXIT_MID_JOB)
    assert result["status"] == "FAILED", result
    assert time.monotonic() - started < 5
    # The sidecar's reason: supervisord's exit code and ComfyUI's last log line.
    assert "ended while running the prompt" in result["error"], result["error"]
    assert re.search(r"exit(ed with)? code 1", result["error"]), result["error"]
    good = image_through(prefix="after")
    stack.wait_for(lambda: stack.runsync(good)["status"] == "COMPLETED", 60, 0.5, "a job after the restart")
