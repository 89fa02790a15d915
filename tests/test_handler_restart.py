"""A handler killed mid-job (kill -9): the next handler removes what its jobs left, in ComfyUI and on disk."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path

import requests

from tests.handler_harness import PYTHON, Rig
from tests.images import b64, noise_png
from tests.processes import Process

# Outputs first, then slow nodes: the killed job has written files and still runs when the next handler starts.
SLOW_JOB = {
    "workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "killed.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "early"}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "late"}},
    },
    "images": [{"name": "killed.png", "image": b64(noise_png())}],
}


def test_a_killed_handlers_inputs_outputs_and_history_are_removed_by_the_next(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"STANDIN_EXEC_DELAY_S": "3"}).start()
    try:
        sender = threading.Thread(target=_send_ignoring_the_kill, args=(rig,), daemon=True)
        sender.start()
        rig.wait_for(lambda: rig.files("output"), 30, what="the killed job's first output")
        assert rig.handler is not None
        rig.handler.send_signal(signal.SIGKILL)
        rig.handler.popen.wait(10)
        assert rig.files("input"), "the killed job left its input"
        rig.start_handler()

        def nothing_left() -> bool:
            queue = rig.comfy_get("/queue")
            idle = not queue["queue_running"] and not queue["queue_pending"]
            return idle and not rig.files("input") and not rig.files("output") and rig.comfy_get("/history") == {}

        rig.wait_for(nothing_left, 30, 0.2, what="the killed job's files and history to go")
        sender.join(10)
    finally:
        rig.stop()


def _send_ignoring_the_kill(rig: Rig) -> None:
    with contextlib.suppress(requests.RequestException):  # the handler is killed under it
        rig.runsync(SLOW_JOB, timeout_s=60)


def test_test_input_beside_the_stacks_handler_leaves_its_prompts_alone(tmp_path: Path) -> None:
    """`comfy-worker test-input` in a Pod is a second handler: it must not clear the first one's jobs."""
    rig = Rig(tmp_path, {"STANDIN_EXEC_DELAY_S": "1"}).start()
    try:
        results: list[dict] = []
        sender = threading.Thread(target=lambda: results.append(rig.runsync(SLOW_JOB, timeout_s=60)), daemon=True)
        sender.start()
        rig.wait_for(lambda: rig.comfy_get("/queue")["queue_running"], 30, what="the stack's job to run")
        job = {
            "workflow": {
                "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
            }
        }
        command = [PYTHON, "-m", "handler", "--test_input", json.dumps({"input": job})]
        test_input = Process("handler --test_input", command, rig.handler_env())
        assert test_input.popen.wait(60) == 0, test_input.output()
        test_input.stop()
        sender.join(60)
        assert results and results[0]["status"] == "COMPLETED", results
    finally:
        rig.stop()
