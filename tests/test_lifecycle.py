"""Every job ends once, alone, within its deadline, and says truly why (one test per case).

Jobs go through runpod's local API to the real handler, sidecar and stand-in ComfyUI; where
ComfyUI must be restarted, under the real supervisord (tests/stack.py). The stand-in's knobs
make the faults: a node that ignores interrupts, a /prompt that answers late or with garbage,
a /history that keeps failing, a node that freezes ComfyUI's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from handler.context import STOP_REQUEST_TIMEOUT_S
from tests.handler_harness import Rig
from tests.images import decoded
from tests.releases import RELEASES
from tests.stack import Stack
from tests.workflows import completed, failed, image_chain, in_background

EMPTY_QUEUE = {"queue_running": [], "queue_pending": []}


def image_through(*middle: tuple[str, dict], prefix: str = "life", color: int = 0x2040FF) -> dict:
    return image_chain(*middle, prefix=prefix, side=8, color=color)


def sleeping(seconds: float) -> tuple[str, dict]:
    return ("StandinSleep", {"seconds": seconds, "steps": max(1, round(seconds * 10))})


def started_stack(make_stack: Callable[..., Stack], **env: str) -> Stack:
    stack = make_stack(**env).start()
    stack.wait_accepting_jobs()
    return stack


def comfy_is_clean(comfy_url_get: Callable[[str], dict]) -> bool:
    """Nothing of the job left in ComfyUI: nothing queued or running, no history entry."""
    return comfy_url_get("/queue") == EMPTY_QUEUE and comfy_url_get("/history") == {}


@pytest.fixture
def rig_factory(tmp_path: Path):
    rigs: list[Rig] = []

    def build(comfy_env: dict[str, str] | None = None, **handler_env: str) -> Rig:
        rig = Rig(tmp_path / f"rig{len(rigs)}", comfy_env).start(handler_env)
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        rig.stop()


# -- a job that has not reached ComfyUI waits for the supervised restart ------------------------------


def test_a_job_sent_while_comfyui_restarts_waits_for_it_and_runs(make_stack: Callable[..., Stack]) -> None:
    stack = started_stack(make_stack)
    old_pid = stack.pid_of("comfyui")
    psutil.Process(old_pid).kill()  # idle; the job comes at once, before the sidecar can notice
    output = completed(stack.runsync(image_through(prefix="after-kill")))
    assert len(output["images"]) == 1
    assert stack.pid_of("comfyui") != old_pid


# -- a cancelled job ends, its prompt stopped, before the cancellation is let through ----------------


def test_a_cancelled_job_has_ended_when_the_cancellation_goes_through(
    rig_factory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_factory()
    worker = rig.in_process_worker(monkeypatch)
    job = {"id": "cancel-me", "input": image_through(("StandinUninterruptible", {"seconds": 1.5}), sleeping(60))}
    ended_before_cancel: list[bool] = []

    async def run_and_cancel() -> None:
        task = asyncio.create_task(worker.handler(job))
        await asyncio.sleep(0.7)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        ended_before_cancel.append(any("job cancel-me failed (interrupted)" in r.getMessage() for r in caplog.records))

    with caplog.at_level(logging.INFO):
        asyncio.run(run_and_cancel())
    # The job's thread logged its end (its prompt stopped) before the cancellation reached runpod.
    assert ended_before_cancel == [True], caplog.text
    assert rig.comfy_get("/queue") == EMPTY_QUEUE


# -- every wait is bounded by the deadline ---------------------------------------------------------


@pytest.mark.parametrize("version", RELEASES)
def test_a_late_answer_to_prompt_is_bounded_by_the_deadline_and_leaves_no_ghost(rig_factory, version: str) -> None:
    deadline_s, grace_s = 3, 1
    comfy_env = {"STANDIN_PROMPT_DELAY_S": "20", "STANDIN_COMFYUI_VERSION": version}
    rig = rig_factory(comfy_env, JOB_TIMEOUT_S=str(deadline_s), COMFY_INTERRUPT_GRACE_S=str(grace_s))
    began = time.monotonic()
    error = failed(rig.runsync(image_through(sleeping(30))))
    took = time.monotonic() - began
    assert f"time limit of {deadline_s} s (JOB_TIMEOUT_S)" in error, error
    assert took < deadline_s + grace_s + 2 * STOP_REQUEST_TIMEOUT_S + 3, f"the job took {took:.1f} s"
    # The prompt ComfyUI took meanwhile was stopped and cleaned: its id was the handler's own.
    rig.wait_for(lambda: comfy_is_clean(rig.comfy_get), 30, what="ComfyUI to hold nothing of the job")
    rig.wait_for(lambda: rig.files("output") == [] and rig.files("input") == [], 10, what="no files left")


def test_a_garbage_answer_to_prompt_is_settled_by_asking_comfyui(rig_factory) -> None:
    rig = rig_factory({"STANDIN_PROMPT_GARBAGE": "1"})
    output = completed(rig.runsync(image_through(sleeping(0.3))))
    assert len(output["images"]) == 1


@pytest.mark.parametrize("version", RELEASES)
def test_history_failing_after_a_dropped_websocket_leaves_no_ghost(rig_factory, version: str) -> None:
    """0.38.1 is asked through /api/jobs/{id} first, 0.3.64 through /queue; both end at /history."""
    rig = rig_factory({"STANDIN_HISTORY_500": "1", "STANDIN_COMFYUI_VERSION": version})
    error = failed(rig.runsync(image_through(("StandinDropWebSockets", {}), sleeping(0.5))))
    assert "ComfyUI failed while checking on the prompt" in error, error
    assert "answered 500" in error, error
    # /history/{id} keeps failing, but the list and the queue say nothing of the job is left.
    rig.wait_for(lambda: comfy_is_clean(rig.comfy_get), 30, what="ComfyUI to hold nothing of the job")
    rig.wait_for(lambda: rig.files("output") == [], 10, what="the job's outputs removed")


# -- a ComfyUI that will not stop is restarted, and the next job runs normally ------------------------


def test_a_node_that_ignores_the_interrupt_gets_comfyui_restarted(make_stack: Callable[..., Stack]) -> None:
    stack = started_stack(make_stack, JOB_TIMEOUT_S="2", COMFY_INTERRUPT_GRACE_S="1")
    old_pid = stack.pid_of("comfyui")
    error = failed(stack.runsync(image_through(("StandinUninterruptible", {"seconds": 120}))))
    assert "time limit of 2 s (JOB_TIMEOUT_S)" in error, error
    assert "ComfyUI did not stop the prompt within 1 s of the interrupt (COMFY_INTERRUPT_GRACE_S)" in error, error
    assert "ComfyUI is being restarted through supervisord" in error, error
    stack.wait_for(lambda: stack.pid_of("comfyui") not in (0, old_pid), 60, what="a new ComfyUI")
    [item] = completed(stack.runsync(image_through(prefix="next", color=0x00FF00)))["images"]
    assert decoded(item).convert("RGB").getpixel((0, 0)) == (0, 255, 0)


def test_comfyui_that_stops_answering_mid_job_fails_the_job_and_is_restarted(make_stack: Callable[..., Stack]) -> None:
    stack = started_stack(make_stack, WEBSOCKET_RECEIVE_TIMEOUT_S="1", COMFY_INTERRUPT_GRACE_S="1")
    old_pid = stack.pid_of("comfyui")
    with in_background(lambda: stack.runsync(image_through(("StandinFreeze", {"seconds": 300})))) as job:
        stack.wait_line("the event loop is blocked for")  # the stand-in's own line as the freeze begins
        error = failed(job.result(timeout=120))
    assert "ComfyUI stopped answering while running the prompt" in error, error
    assert "ComfyUI is being restarted through supervisord" in error, error
    stack.wait_for(lambda: stack.pid_of("comfyui") not in (0, old_pid), 60, what="a new ComfyUI")
    stack.wait_for(lambda: stack.runsync(image_through(prefix="next"))["status"] == "COMPLETED", 60, 0.5, "a job")


# -- re-sent work, unusual names ----------------------------------------------------------------------


def test_an_identical_job_whose_output_node_feeds_another_node_gets_its_files_again(rig_factory) -> None:
    rig = rig_factory({"STANDIN_COMFYUI_VERSION": "0.38.1"})  # its SaveImage passes its images on
    job = {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x102030}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "first"}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "second"}},
        }
    }
    runs = [completed(rig.runsync(job)) for _ in range(2)]
    pixels = [sorted(decoded(item).tobytes() for item in run["images"]) for run in runs]
    assert len(pixels[0]) == 2 and pixels[0] == pixels[1], runs


def test_a_backslash_in_filename_prefix_is_an_ordinary_character(rig_factory) -> None:
    rig = rig_factory()
    [item] = completed(rig.runsync(image_through(prefix="back\\slash")))["images"]
    assert item["filename"] == "back\\slash_00001_.png", item
    rig.wait_for(lambda: rig.files("output") == [], 10, what="the job's output removed")
