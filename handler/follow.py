"""Step 4: follow the prompt over the WebSocket until ComfyUI has finished it.

The stream is trusted while it is unbroken: `executed` frames carry each output node's
files, and `executing` with node null ends the prompt. Whenever the stream may have missed
something (the socket dropped, or went quiet past WEBSOCKET_RECEIVE_TIMEOUT_S), the prompt
is reconciled with /history/{prompt_id} and /queue, which also finds a completion that
happened while disconnected. A ComfyUI that died is found through the sidecar (not ready,
or another pid) and fails the job at once. The job's deadline and RunPod's cancellation
interrupt the prompt in ComfyUI and drop it from the queue.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psutil

from worker_common.comfy_client import ComfyError, ComfyUnavailable
from worker_common.contract import Readiness

from .context import JobContext
from .errors import JobError, Reason
from .progress import Progress
from .runtime import Runtime
from .ws import ComfySocket, Dropped

TICK_S = 0.25  # the loop wakes at least this often to check cancellation and the deadline
MAX_RECONNECT_DELAY_S = 30.0
INTERRUPT_GRACE_S = 5.0  # how long to let ComfyUI confirm an interrupt before returning
DEATH_REASON_WAIT_S = 2.0  # how long to give the sidecar to explain why ComfyUI's process ended
STOP_REQUEST_TIMEOUT_S = 2.0  # a frozen ComfyUI must not hold a job past its deadline
MIN_REQUEST_TIMEOUT_S = 1.0
TRACEBACK_LINES = 6

Outputs = dict[str, dict[str, Any]]

log = logging.getLogger(__name__)


class Follower:
    """Follows one prompt; `run()` returns its outputs by node id, or raises JobError."""

    def __init__(self, rt: Runtime, ctx: JobContext, sock: ComfySocket, progress: Progress) -> None:
        assert ctx.prompt_id is not None
        self.rt = rt
        self.ctx = ctx
        self.sock = sock
        self.prompt_id = ctx.prompt_id
        self.progress = progress
        self.outputs: Outputs = {}
        self.stream_complete = True  # False once frames may have been missed
        self.node_id: str | None = None
        self.last_frame = self.last_check = time.monotonic()
        self.ping_sent_at: float | None = None

    def run(self) -> Outputs:
        while True:
            stop = self.ctx.stop_reason()
            if stop is not None:
                raise self._stop(stop)
            outputs = self._step()
            if outputs is not None:
                return outputs

    # -- one pass of the loop -------------------------------------------------------

    def _step(self) -> Outputs | None:
        try:
            message = self.sock.receive(min(TICK_S, max(self.ctx.left_s(), 0.0)))
        except Dropped as error:
            return self._recover(f"the WebSocket dropped ({error})")
        if message is None:
            return self._idle()
        self.last_frame = time.monotonic()
        self.ping_sent_at = None
        return self._handle(message)

    def _handle(self, message: dict[str, Any]) -> Outputs | None:
        kind, data = message.get("type"), message.get("data") or {}
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        # After a reconnect ComfyUI re-sends the running node without a prompt_id: it is ours.
        if prompt_id != self.prompt_id and not (prompt_id is None and kind == "executing"):
            self.progress.flush()
            return None
        if kind == "executing":
            return self._executing(data.get("node"), prompt_id)
        if kind == "executed":
            self.outputs[str(data.get("node"))] = data.get("output") or {}
        elif kind == "execution_cached":
            self.progress.cached(data.get("nodes") or [])
        elif kind == "progress":
            self.progress.step(data.get("value"), data.get("max"), data.get("node"))
        elif kind == "execution_error":
            raise execution_error(data)
        elif kind == "execution_interrupted":
            raise interrupted_error(data)
        return None

    def _executing(self, node: Any, prompt_id: str | None) -> Outputs | None:
        if node is None:
            return self._finish() if prompt_id == self.prompt_id else None
        self.node_id = str(node)
        self.progress.node(self.node_id)
        return None

    def _finish(self) -> Outputs:
        if self.stream_complete:
            return self.outputs
        outputs = self._reconcile()
        if outputs is None:
            raise JobError(Reason.INTERNAL, "ComfyUI reported the prompt finished but /history does not have it")
        return outputs

    def _idle(self) -> Outputs | None:
        """The socket was quiet for a tick.

        After WEBSOCKET_RECEIVE_TIMEOUT_S without a frame, ping the socket and ask /history
        (a completion may have been missed). If neither a frame nor the pong comes within
        another timeout, the socket is half-open: reconnect.
        """
        self.progress.flush()
        timeout = self.rt.config.ws_receive_timeout_s
        now = time.monotonic()
        if now - self.last_frame < timeout or now - self.last_check < timeout:
            return None
        if self.ping_sent_at is not None:
            return self._recover(f"the WebSocket went silent (no frame and no answer to a ping for {timeout:g} s)")
        self.ping_sent_at = self.last_check = now
        try:
            self.sock.ping()
        except Dropped as error:
            return self._recover(f"the WebSocket dropped ({error})")
        return self._reconcile()

    # -- recovery -------------------------------------------------------------------

    def _recover(self, why: str) -> Outputs | None:
        """Reconnect with backoff, then ask /history whether the prompt ended meanwhile."""
        log.warning("job %s: %s; reconnecting", self.ctx.job_id, why)
        self.stream_complete = False
        attempts = self.rt.config.ws_reconnect_attempts
        for attempt in range(attempts):
            pause = min(_backoff(attempt, self.rt.config.ws_reconnect_delay_s), max(self.ctx.left_s(), 0.0))
            if self.ctx.cancelled.wait(pause) or self.ctx.stop_reason():
                return None  # the loop stops the job
            self._ensure_comfy_alive(why)
            try:
                self.sock.open()
                break
            except ComfyUnavailable:
                continue
        else:
            self._ensure_comfy_alive(why)
            raise JobError(
                Reason.COMFYUI_UNAVAILABLE,
                f"Lost the connection to ComfyUI ({why}) and could not reconnect in {attempts} attempts "
                "(WEBSOCKET_RECONNECT_ATTEMPTS)",
            )
        self.last_frame = time.monotonic()
        self.ping_sent_at = None
        return self._reconcile()

    def _ensure_comfy_alive(self, why: str) -> None:
        """Fail at once when ComfyUI died or restarted: the sidecar says so, or its pid is gone."""
        status = self.rt.gate.status()
        known_pid = self.ctx.comfy_pid
        if status.ready and known_pid and status.comfyui_pid and status.comfyui_pid != known_pid:
            message = (
                f"ComfyUI restarted during the job (pid {known_pid}, now {status.comfyui_pid}); the prompt was lost"
            )
            raise JobError(Reason.COMFYUI_UNAVAILABLE, message)
        if _gone(status, known_pid):
            raise JobError(Reason.COMFYUI_UNAVAILABLE, f"ComfyUI stopped during the job ({why}): {status.describe()}")
        if known_pid and _ended(known_pid):
            message = f"ComfyUI's process (pid {known_pid}) ended during the job{self._sidecar_reason(known_pid)}"
            raise JobError(Reason.COMFYUI_UNAVAILABLE, message)

    def _sidecar_reason(self, known_pid: int) -> str:
        """The sidecar's account of a death it may not have seen yet: asked for up to DEATH_REASON_WAIT_S."""
        deadline = time.monotonic() + DEATH_REASON_WAIT_S
        while time.monotonic() < deadline:
            status = self.rt.gate.status()
            if _gone(status, known_pid):
                return f": {status.describe()}"
            time.sleep(TICK_S / 2)
        return ""

    def _reconcile(self) -> Outputs | None:
        """The outputs if the prompt has ended, None while it is queued or running."""
        timeout_s = min(max(self.ctx.left_s(), MIN_REQUEST_TIMEOUT_S), self.rt.comfy.timeout_s)
        try:
            entry = self.rt.comfy.history(self.prompt_id, timeout_s)
            if not entry:
                queue = self.rt.comfy.queue(timeout_s)
                if _listed(queue.get("queue_running", []) + queue.get("queue_pending", []), self.prompt_id):
                    return None
                entry = self.rt.comfy.history(self.prompt_id, timeout_s)  # it may have ended in between
        except ComfyError as error:
            raise self.rt.comfy_failure(error, "checking on the prompt") from error
        if not entry:
            status = self.rt.gate.status()
            raise JobError(
                Reason.COMFYUI_UNAVAILABLE,
                f"ComfyUI no longer knows the prompt {self.prompt_id}: it was lost, most likely in a restart "
                f"({status.describe() if not status.ready else 'ComfyUI is up again'})",
            )
        return outputs_from_history(entry)

    # -- stopping -------------------------------------------------------------------

    def _stop(self, error: JobError) -> JobError:
        """Interrupt the prompt and drop it from the queue; returns the error to raise."""
        comfy, timeout_s = self.rt.comfy, STOP_REQUEST_TIMEOUT_S
        try:
            # Sent first: a ComfyUI that is frozen now still acts on it once it runs again.
            comfy.interrupt(self.prompt_id, timeout_s)
            comfy.delete_from_queue([self.prompt_id], timeout_s)
            running = _listed(comfy.queue(timeout_s).get("queue_running", []), self.prompt_id)
        except ComfyError:
            return error
        if not running:  # it was still waiting in the queue, and is gone now
            return error
        node = self._wait_interrupted()
        if node:
            error.message += f"; ComfyUI was interrupted at {node}"
        return error

    def _wait_interrupted(self) -> str | None:
        """Wait briefly for ComfyUI to confirm; returns where it stopped, e.g. 'node 3 (KSampler)'."""
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        while time.monotonic() < deadline:
            try:
                message = self.sock.receive(TICK_S)
            except Dropped:
                break
            data = (message or {}).get("data") or {}
            if not isinstance(data, dict) or data.get("prompt_id") != self.prompt_id:
                continue
            if message and message.get("type") in ("execution_interrupted", "execution_error"):
                return _where(data.get("node_id"), data.get("node_type"))
            if message and message.get("type") == "executing" and data.get("node") is None:
                break
        return _where(self.node_id, self.progress.class_of(self.node_id)) if self.node_id else None


def follow(rt: Runtime, ctx: JobContext, sock: ComfySocket, progress: Progress) -> Outputs:
    return Follower(rt, ctx, sock, progress).run()


def outputs_from_history(entry: dict[str, Any]) -> Outputs:
    """The outputs of a finished history entry; raises the prompt's own error if it failed."""
    status = entry.get("status") or {}
    if status.get("status_str") == "error":
        for kind, data in reversed(status.get("messages") or []):
            if kind == "execution_error":
                raise execution_error(data)
            if kind == "execution_interrupted":
                raise interrupted_error(data)
        raise JobError(Reason.EXECUTION, "ComfyUI reports the prompt failed, without saying why")
    return entry.get("outputs") or {}


def execution_error(data: dict[str, Any]) -> JobError:
    """The JobError for an execution_error frame: node, class, exception and traceback tail."""
    node = _where(data.get("node_id"), data.get("node_type"))
    exception = f"{data.get('exception_type', 'Exception')}: {str(data.get('exception_message', '')).strip()}"
    traceback = data.get("traceback") or []
    lines = [line for line in "".join(traceback).rstrip().splitlines() if line.strip(" ^~")][-TRACEBACK_LINES:]
    message = f"ComfyUI failed at {node}: {exception}"
    if lines:
        message += "\nTraceback (last lines):\n" + "\n".join(lines)
    details = {
        "node_id": data.get("node_id"),
        "class_type": data.get("node_type"),
        "exception_type": data.get("exception_type"),
        "exception_message": data.get("exception_message"),
        "traceback": traceback,
    }
    return JobError(Reason.EXECUTION, message, details)


def interrupted_error(data: dict[str, Any]) -> JobError:
    """The JobError for an interrupt this job did not ask for."""
    node = _where(data.get("node_id"), data.get("node_type"))
    return JobError(
        Reason.INTERRUPTED,
        f"ComfyUI interrupted the prompt at {node}: someone called POST /interrupt, or ComfyUI was stopping",
        {"node_id": data.get("node_id"), "class_type": data.get("node_type")},
    )


def _where(node_id: Any, class_type: Any) -> str:
    return f"node {node_id} ({class_type or '?'})"


def _ended(pid: int) -> bool:
    """Whether the process has exited (a zombie not yet reaped by supervisord counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _gone(status: Readiness, known_pid: int | None) -> bool:
    """Whether the sidecar says ComfyUI is down, or is another process than the job's."""
    if status.state == "unreachable":
        return False
    return not status.ready or bool(known_pid and status.comfyui_pid != known_pid)


def _listed(queue_items: list[Any], prompt_id: str) -> bool:
    """Whether /queue's items ([number, prompt_id, prompt, extra_data, outputs]) include the prompt."""
    return any(len(item) > 1 and item[1] == prompt_id for item in queue_items)


def _backoff(attempt: int, base_s: float) -> float:
    """No wait before the first reconnect (a dropped socket on a live server), then doubling."""
    return 0.0 if attempt == 0 else min(base_s * 2 ** (attempt - 1), MAX_RECONNECT_DELAY_S)
