"""Proof under faults, on the real stack: ComfyUI killed, frozen or slow to boot, the sidecar and the
handler killed, WebSockets dropped or half-open, /history failing, the disk full, SIGTERM mid-job.

Each test asserts what the caller receives (status and an error that names the problem), what the
logs and the sidecar's /readyz say, and that the next job succeeds. S3 faults are in
tests/test_faults_s3.py. Covered elsewhere and not repeated here: ComfyUI crashing three times
during start-up (FATAL, exit 4) and never becoming ready (exit 3), in tests/test_stack.py.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from handler.context import STOP_REQUEST_TIMEOUT_S
from tests.images import decoded
from tests.stack import Stack
from tests.workflows import completed, failed, image_chain

# -- helpers shared with tests/test_faults_s3.py ---------------------------------------------


def sleeping(seconds: float) -> tuple[str, dict]:
    """A StandinSleep node of `seconds`, reporting progress (and checking for interrupts) every 0.1 s."""
    return ("StandinSleep", {"seconds": seconds, "steps": max(1, round(seconds * 10))})


def assert_next_job_succeeds(stack: Stack, prefix: str = "next") -> None:
    """One job, straight away (no retry): the worker must take it."""
    [item] = completed(stack.runsync(image_chain(prefix=prefix, color=0x00FF00)))["images"]
    assert decoded(item).convert("RGB").getpixel((0, 0)) == (0, 255, 0)


def timed_runsync(stack: Stack, job_input: dict) -> tuple[dict, float]:
    """The job's result and the seconds the caller waited for it."""
    began = time.monotonic()
    result = stack.runsync(job_input)
    return result, time.monotonic() - began


def readyz(stack: Stack) -> dict:
    response = requests.get(f"{stack.sidecar_url}/readyz", timeout=5)
    body = response.json()
    assert response.status_code == (200 if body["ready"] else 503), (response.status_code, body)
    return body


def started(make_stack: Callable[..., Stack], **env: str) -> Stack:
    stack = make_stack(**env).start()
    stack.wait_accepting_jobs()
    return stack


@contextlib.contextmanager
def in_background(call: Callable[[], Any]) -> Iterator[Future]:
    """Run `call` in a thread (a job in flight) while the test body does something to the stack."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(call)


def wait_running_prompt(stack: Stack, timeout_s: float = 30) -> str:
    """Until ComfyUI is executing a prompt; its id."""

    def running() -> str | None:
        queue = requests.get(f"{stack.comfy_url}/queue", timeout=5).json()
        return queue["queue_running"][0][1] if queue["queue_running"] else None

    return stack.wait_for(running, timeout_s, what="ComfyUI to run the job's prompt")


class ReadyzRecorder:
    """Polls /readyz in a thread and keeps each change of state, so short transitions are seen."""

    def __init__(self, stack: Stack, interval_s: float = 0.02) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.states: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadyzRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                state = requests.get(f"{self.stack.sidecar_url}/readyz", timeout=2).json()["state"]
            except (requests.RequestException, ValueError):
                state = "unreachable"
            if not self.states or self.states[-1] != state:
                self.states.append(state)
            self._stop.wait(self.interval_s)


def metric(stack: Stack, name: str, **labels: str) -> float | None:
    """One sample of the sidecar's /metrics, or None when absent."""
    text = requests.get(f"{stack.sidecar_url}/metrics", timeout=5).text
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(f"{name}{{{wanted}}}" if labels else name) + r" (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else None


def log_files(stack: Stack) -> str:
    return "\n".join(path.read_text(errors="replace") for path in sorted((stack.home / ".run" / "logs").glob("*.log")))


def readiness_lines(stack: Stack) -> list[str]:
    return [line for line in stack.lines if "healthcheck.monitor: readiness" in line]


def assert_readiness_went(stack: Stack, *transitions: str) -> None:
    """The sidecar logged these transitions ("ready -> unready", ...) in this order."""

    def logged() -> bool:
        found = [t for line in readiness_lines(stack) for t in transitions if f"readiness {t} at" in line]
        position = 0
        for transition in transitions:
            if transition not in found[position:]:
                return False
            position = found.index(transition, position) + 1
        return True

    stack.wait_for(logged, 10, what=f"the sidecar to log {transitions}")


# -- ComfyUI -----------------------------------------------------------------------------------


def test_comfyui_sigkilled_mid_job_fails_the_job_fast_and_the_next_one_succeeds(make_stack) -> None:
    stack = started(make_stack, JOB_TIMEOUT_S="120")
    with ReadyzRecorder(stack) as recorder, in_background(lambda: stack.runsync(image_chain(sleeping(60)))) as job:
        wait_running_prompt(stack)
        old_pid = stack.pid_of("comfyui")
        killed_at = time.monotonic()
        psutil.Process(old_pid).kill()
        result = job.result(timeout=60)
        took = time.monotonic() - killed_at
        error = failed(result)
        stack.wait_for(lambda: readyz(stack)["ready"] and stack.pid_of("comfyui") != old_pid, 30, what="ready again")
        stack.wait_for(lambda: recorder.states[-1] == "ready", 5, what="the recorder to see ready again")
    assert took < 15, f"the job took {took:.1f} s to fail after the kill"  # its deadline is 120 s away
    # The caller hears that ComfyUI's process ended, and why (the sidecar's account), not "timeout".
    assert re.search(r"ComfyUI's process \(pid \d+\) ended while running the prompt", error), error
    assert re.search(
        r"comfyui (\(pid \d+\) )?(was killed \(SIGKILL|was killed by a signal|restarted \(pid)"
        r"|comfyui's process \d+ is gone",
        error,
    ), error
    assert "time limit" not in error
    assert recorder.states[0] == "ready" and recorder.states[-1] == "ready", recorder.states
    assert "unready" in recorder.states, recorder.states
    assert_readiness_went(stack, "ready -> unready", "unready -> ready")
    stack.wait_line(f"job {result['id']} failed (comfyui_unavailable)")
    assert metric(stack, "comfy_worker_program_restarts_total", program="comfyui") == 1
    assert_next_job_succeeds(stack)


def test_comfyui_frozen_mid_job_fails_it_at_the_deadline_and_is_restarted(make_stack) -> None:
    deadline_s, grace_s = 4, 2
    stack = started(make_stack, JOB_TIMEOUT_S=str(deadline_s), COMFY_INTERRUPT_GRACE_S=str(grace_s))
    comfy = psutil.Process(stack.pid_of("comfyui"))
    with in_background(lambda: timed_runsync(stack, image_chain(sleeping(60)))) as job:
        wait_running_prompt(stack)
        comfy.suspend()  # SIGSTOP: the process is there, its port accepts, nothing answers
        try:
            result, took = job.result(timeout=deadline_s + 30)
            error = failed(result)
        finally:
            comfy.resume()  # SIGCONT: supervisord's SIGINT (the restart) now takes effect
    assert f"The job ran longer than its time limit of {deadline_s} s (JOB_TIMEOUT_S)" in error, error
    assert f"ComfyUI did not answer for {grace_s} s (COMFY_INTERRUPT_GRACE_S) when asked to stop" in error, error
    assert "ComfyUI is being restarted through supervisord" in error, error
    # The time limit holds against a ComfyUI that answers nothing: the deadline, the grace, one request.
    assert took < deadline_s + grace_s + 2 * STOP_REQUEST_TIMEOUT_S + 2, f"reported {took:.1f} s after the start"
    stack.wait_line("failed (timeout)")
    stack.wait_for(lambda: readyz(stack)["ready"] and stack.pid_of("comfyui") != comfy.pid, 60, what="a new ComfyUI")
    assert_next_job_succeeds(stack)
    queue = requests.get(f"{stack.comfy_url}/queue", timeout=5).json()
    assert queue == {"queue_running": [], "queue_pending": []}, "the timed-out prompt is gone from ComfyUI"


def test_comfyui_slow_to_boot_answers_ping_204_while_starting_then_takes_jobs(make_stack) -> None:
    stack = make_stack(STANDIN_BOOT_DELAY_S="3", COMFY_READY_TIMEOUT_S="20").start()
    ping = stack.wait_for(lambda: _status(f"{stack.sidecar_url}/ping"), 30, what="the sidecar to answer")
    assert ping == 204, ping
    body = readyz(stack)
    assert body["state"] == "starting" and not body["ready"], body
    assert 0 < body["startup_window_left_s"] <= 20, body
    with pytest.raises(requests.ConnectionError):  # no job is taken before ComfyUI is ready
        requests.get(f"{stack.api_url}/", timeout=2)
    stack.wait_accepting_jobs(timeout_s=30)
    assert _status(f"{stack.sidecar_url}/ping") == 200
    assert readyz(stack)["state"] == "ready"
    assert_readiness_went(stack, "starting -> ready")
    assert_next_job_succeeds(stack)


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


# -- the worker's own programs ---------------------------------------------------------------------


def test_sidecar_sigkilled_during_a_job_is_restarted_and_the_job_completes(make_stack) -> None:
    stack = started(make_stack)
    stack.wait_running()
    old_pid = stack.pid_of("sidecar")
    with in_background(lambda: stack.runsync(image_chain(sleeping(2), color=0xFF0000))) as job:
        wait_running_prompt(stack)
        psutil.Process(old_pid).kill()
        result = job.result(timeout=60)
    [item] = completed(result)["images"]
    assert decoded(item).convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    stack.wait_for(lambda: stack.pid_of("sidecar") not in (0, old_pid), 30, what="a new sidecar")
    stack.wait_for(lambda: _status(f"{stack.sidecar_url}/readyz") == 200, 30, what="the gate to answer again")
    stack.wait_line("[supervisord] sidecar: RUNNING -> EXITED")
    assert readyz(stack)["comfyui"]["pid"] == stack.pid_of("comfyui")
    assert_next_job_succeeds(stack)


def test_handler_sigkilled_between_jobs_refuses_connections_then_serves_again(make_stack) -> None:
    stack = started(make_stack)
    stack.wait_running()
    inputs_before, outputs_before = _files(stack.layout.input), _files(stack.layout.output)
    assert_next_job_succeeds(stack, "before")

    def cleaned_up() -> bool:
        history = requests.get(f"{stack.comfy_url}/history", timeout=5).json()
        return history == {} and _files(stack.layout.output) == outputs_before

    stack.wait_for(cleaned_up, 10, what="the job's clean-up")
    old = psutil.Process(stack.pid_of("handler"))
    old.kill()
    # Until supervisord has reaped it: all its threads ended, so its listening socket is closed.
    stack.wait_for(lambda: not old.is_running(), 10, what="the handler to die")
    # Sent while no handler listens (a new one needs seconds to import runpod and start its API).
    with pytest.raises(requests.ConnectionError, match="Connection refused"):
        stack.runsync(image_chain(sleeping(1), prefix="lost"))
    stack.wait_accepting_jobs(timeout_s=60)
    new_pid = stack.pid_of("handler")
    assert new_pid != old.pid
    stack.wait_line("[supervisord] handler: RUNNING -> EXITED")
    assert readyz(stack)["ready"], "killing the handler does not touch ComfyUI's readiness"
    # Nothing of the refused job reached ComfyUI: no prompt, no uploaded input, no output.
    assert requests.get(f"{stack.comfy_url}/queue", timeout=5).json() == {"queue_running": [], "queue_pending": []}
    assert requests.get(f"{stack.comfy_url}/history", timeout=5).json() == {}
    assert _files(stack.layout.input) == inputs_before
    assert _files(stack.layout.output) == outputs_before
    assert_next_job_succeeds(stack, "after")


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".gitkeep")


def test_sigterm_during_a_job_drains_it_then_stops_in_order(make_stack) -> None:
    stack = started(make_stack)
    stack.wait_running()
    with in_background(lambda: stack.runsync(image_chain(sleeping(3), color=0x0000FF))) as job:
        wait_running_prompt(stack)
        stop_asked = time.monotonic()
        code = stack.stop(signal.SIGTERM, timeout_s=60)
        stopped_in = time.monotonic() - stop_asked
        result = job.result(timeout=10)  # the caller got an answer: the job was not silently lost
    if result["status"] == "COMPLETED":
        [item] = result["output"]["images"]
        assert decoded(item).convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    else:
        assert re.search(r"interrupt|stop|shut", failed(result), re.I), result
    assert code == 0, stack.output()
    # Within the stop window: the handler's stopwaitsecs (HANDLER_STOP_WAIT_S) + sidecar's 5 s + ComfyUI's 15 s.
    assert stopped_in < int(stack.env["HANDLER_STOP_WAIT_S"]) + 5 + 15, stopped_in
    supervisord_log = (stack.home / ".run" / "logs" / "supervisord.log").read_text()
    assert re.findall(r"stopped: (comfyui|sidecar|handler) ", supervisord_log) == ["handler", "sidecar", "comfyui"]
    assert "SIGKILL" not in supervisord_log, "every program stopped by itself, none had to be killed"
    # The handler exits by itself once the job's clean-up is done, not by SIGTERM's default action
    # (which cut off its last request to ComfyUI): the job left nothing behind.
    assert "stopped: handler (exit status 0)" in supervisord_log, supervisord_log
    assert _files(stack.layout.output) == [] and _files(stack.layout.input) == []
    comfy_log = (stack.home / ".run" / "logs" / "comfyui.log").read_text()
    assert "Stopped server" in comfy_log and "Traceback" not in comfy_log, comfy_log
    assert stack.lines[-1] == "[entrypoint] exiting with code 0"


# -- the WebSocket and /history ------------------------------------------------------------------


def two_outputs_across_a_drop() -> dict:
    """Two SaveImage outputs; ComfyUI closes every WebSocket between them (StandinDropWebSockets)."""
    return {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFF0000}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "red"}},
            "3": {"class_type": "StandinDropWebSockets", "inputs": {"image": ["1", 0]}},
            "4": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
            "5": {"class_type": "StandinSleep", "inputs": {"image": ["4", 0], "seconds": 0.5, "steps": 5}},
            "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "cyan"}},
        }
    }


def test_websocket_closed_by_comfyui_mid_job_and_a_history_500_still_complete_the_job(make_stack) -> None:
    stack = started(make_stack, STANDIN_HISTORY_500_ONCE="1")
    output = completed(stack.runsync(two_outputs_across_a_drop()))
    colors = {
        item["filename"].split("_")[0]: decoded(item).convert("RGB").getpixel((0, 0)) for item in output["images"]
    }
    assert colors == {"red": (255, 0, 0), "cyan": (0, 255, 255)}, output
    stack.wait_line("the WebSocket dropped (ComfyUI closed the WebSocket); reconnecting")
    # The reconciliation after the reconnect met the one 500 of /history/{id}, and retried it.
    comfy_log = (stack.home / ".run" / "logs" / "comfyui.log").read_text()
    assert "STANDIN_HISTORY_500_ONCE: this GET /history/{prompt_id} fails on purpose" in comfy_log
    assert readyz(stack)["ready"]
    assert_next_job_succeeds(stack)


def test_a_half_open_websocket_is_detected_and_the_job_completes_through_history(make_stack) -> None:
    stack = started(make_stack, STANDIN_WS_SILENT_AFTER_S="0.5", WEBSOCKET_RECEIVE_TIMEOUT_S="1", JOB_TIMEOUT_S="120")
    result, took = timed_runsync(stack, image_chain(sleeping(2), color=0xFFFF00))
    [item] = completed(result)["images"]
    assert decoded(item).convert("RGB").getpixel((0, 0)) == (255, 255, 0)
    # Bounded by the receive timeout (a ping, then a reconnect), not by the job's 120 s deadline.
    assert took < 2 + 4 * 1 + 5, f"the job took {took:.1f} s"
    stack.wait_line("the WebSocket went silent (no frame and no answer to a ping for 1 s); reconnecting")
    assert readyz(stack)["ready"]
    # The next job starts on the kept socket, silent by now: it too is finished through /history.
    result, took = timed_runsync(stack, image_chain(prefix="next", color=0x00FF00))
    completed(result)
    assert took < 4 * 1 + 5, f"the next job took {took:.1f} s"


# -- the disk ------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` mounted on `folder` (needs root and mount rights)."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_disk_full_while_comfyui_saves_fails_the_job_clearly_and_the_worker_keeps_serving(make_stack) -> None:
    stack = make_stack()
    output = stack.layout.output
    output.mkdir(parents=True)
    with small_filesystem(output, "64k"):
        stack.start()
        stack.wait_accepting_jobs()
        comfy_pid = stack.pid_of("comfyui")
        noise = {  # about 200 kB of incompressible PNG: more than the 64 kB the output folder has
            "workflow": {
                "1": {"class_type": "StandinBigImages", "inputs": {"count": 1, "width": 256, "height": 256, "seed": 1}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "full"}},
            }
        }
        error = failed(stack.runsync(noise))
        assert error.startswith("ComfyUI failed at node 2 (SaveImage): OSError: [Errno 28] No space left on device"), (
            error
        )
        stack.wait_line("failed (execution)")
        assert readyz(stack)["ready"]
        assert stack.pid_of("comfyui") == comfy_pid, "ComfyUI survived the failed write"
        # Pillow leaves the truncated file behind (closing it fails with ENOSPC too), as it does in
        # ComfyUI; it is the failed job's own, so its clean-up frees the space and the worker serves on.
        stack.wait_for(lambda: _files(output) == [], 30, what="the failed job's partial file to be removed")
        assert_next_job_succeeds(stack)
        assert stack.process and stack.process.poll() is None
        stack.kill_everything()  # nothing may keep the mount busy
