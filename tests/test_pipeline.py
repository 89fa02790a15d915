"""Jobs in flight together (JOB_PIPELINE_DEPTH, concurrent local API calls): each one's end is its own.

While ComfyUI runs job N, job N+1 waits in ComfyUI's queue. Cancelling N+1 there removes it
without touching N; a ComfyUI crash fails only the prompt that was running, and the queued
one rides the supervised restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.handler_harness import Rig
from tests.releases import RELEASES
from tests.stack import Stack
from tests.workflows import assert_own_images, failed, image_chain, in_background, own_images_job, running_prompt


def sleeping_job(seconds: float, prefix: str) -> dict:
    return image_chain(("StandinSleep", {"seconds": seconds, "steps": max(1, round(seconds * 10))}), prefix=prefix)


@pytest.mark.parametrize("version", RELEASES)
def test_cancelling_a_queued_job_removes_it_from_comfyuis_queue_and_leaves_the_running_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """0.38.1 cancels by /api/jobs/{id}/cancel, 0.3.64 by /interrupt and /queue with the prompt id."""
    rig = Rig(tmp_path, {"STANDIN_COMFYUI_VERSION": version}).start()
    try:
        worker = rig.in_process_worker(monkeypatch, {"CLEANUP_HISTORY": "false"})
        running = {"id": "running", "input": sleeping_job(2.0, "first")}
        queued = {"id": "queued", "input": sleeping_job(0.5, "second")}

        async def two_jobs_cancel_the_second() -> dict:
            first = asyncio.create_task(worker.handler(running))
            await asyncio.sleep(0.5)
            second = asyncio.create_task(worker.handler(queued))
            while len(rig.comfy_get("/queue")["queue_pending"]) < 1:  # N+1 waits behind N in ComfyUI
                await asyncio.sleep(0.05)
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            assert rig.comfy_get("/queue")["queue_pending"] == []  # gone from the queue at once
            return await first

        result = asyncio.run(two_jobs_cancel_the_second())
        assert len(result["images"]) == 1, result  # the running job was not touched
        history = rig.comfy_get("/history")
        assert [entry["status"]["status_str"] for entry in history.values()] == ["success"], history
    finally:
        rig.stop()


def test_a_crash_fails_only_the_running_prompt_and_the_queued_job_rides_the_restart(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack().start()
    stack.wait_accepting_jobs()
    crashing = image_chain(("StandinSleep", {"seconds": 1.0, "steps": 10}), ("StandinExit", {"code": 1}), prefix="c")
    with in_background(lambda: stack.runsync(crashing)) as first:
        stack.wait_for(lambda: running_prompt(stack.comfy_url), 30, what="the first prompt to run")
        with in_background(lambda: stack.runsync(own_images_job(0x334455))) as second:
            error = failed(first.result(timeout=120))
            assert "ended while running the prompt" in error, error
            assert_own_images(second.result(timeout=120), 0x334455)
