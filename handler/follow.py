"""Step 4: follow the prompt over the WebSocket until ComfyUI has finished it.

The stream is trusted while it is unbroken: `executed` frames of output nodes carry their
files, and `executing` with node null ends the prompt. Whenever the stream may have missed
something (the socket dropped, or went quiet past WEBSOCKET_RECEIVE_TIMEOUT_S), the prompt is
reconciled with ComfyUI (tracking.prompt_state), which also finds a completion that happened
while disconnected. When ComfyUI's process ends:
- a prompt ComfyUI had not started rides the supervised restart: the follower returns
  `Restarted`, and the prompt session sends it again, under the same prompt id, once ComfyUI
  is ready (submit.queue waits for it, up to JOB_READY_WAIT_S), then follows it afresh;
- a prompt that was running fails at once, with the sidecar's account of why.
A ComfyUI that stops answering altogether fails the job (the prompt session then stops the
prompt, and restarts ComfyUI if it does not recover). The deadline and RunPod's cancellation end the loop
within TICK_S.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from worker_common import comfy_protocol as protocol
from worker_common import startup
from worker_common.comfy_client import ComfyError, ComfyUnavailable
from worker_common.comfy_protocol import Features, Frame
from worker_common.contract import FIRST_MODEL_RECORD, Readiness

from . import explain
from .context import JobContext
from .errors import JobError, Reason
from .progress import Progress
from .runtime import Runtime
from .submit import Submission
from .tracking import Where, prompt_state
from .ws import ComfySocket, Dropped

TICK_S = 0.25  # the loop wakes at least this often to check cancellation and the deadline
MAX_RECONNECT_DELAY_S = 30.0
DEATH_REASON_WAIT_S = 2.0  # how long to give the sidecar to explain why ComfyUI's process ended

Outputs = dict[str, dict[str, Any]]

log = logging.getLogger(__name__)


@dataclass
class Followed:
    """How the prompt ended well: its outputs by node id, and when ComfyUI ran it."""

    outputs: Outputs
    started_at: float | None = None  # monotonic: ComfyUI started executing it
    ended_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Restarted:
    """ComfyUI's process ended before it started the prompt: it must be sent again to the new one."""

    lost: Readiness  # the readiness of the ComfyUI that lost it


class Follower:
    """Follows one prompt sent to one ComfyUI process; `run()` returns how it ended, or raises JobError."""

    def __init__(
        self,
        rt: Runtime,
        ctx: JobContext,
        sock: ComfySocket,
        submission: Submission,
        ready: Readiness,
        features: Features,
        progress: Progress,
    ) -> None:
        self.rt, self.ctx, self.sock = rt, ctx, sock
        self.prompt_id = submission.prompt_id
        self.ready = ready
        self.features = features  # of the process `ready` names
        self.progress = progress
        self.intermediate_nodes = submission.intermediate_nodes
        self.unmask = submission.space.unmask
        self.outputs: Outputs = {}
        self.started_at: float | None = None
        self.running: str | None = None  # the node ComfyUI runs now
        self.stream_complete = True  # False once frames may have been missed
        self.last_frame = self.last_check = time.monotonic()
        self.ping_sent_at: float | None = None

    def run(self) -> Followed | Restarted:
        while True:
            self.ctx.check()
            followed = self._step()
            if followed is not None:
                return followed

    # -- one pass of the loop -------------------------------------------------------

    def _step(self) -> Followed | Restarted | None:
        try:
            message = self.sock.receive(min(TICK_S, max(self.ctx.left_s(), 0.0)))
        except Dropped as error:
            return self._recover(f"the WebSocket dropped ({error})")
        if message is None:
            return self._idle()
        self.last_frame = time.monotonic()
        self.ping_sent_at = None
        return self._handle(Frame.from_message(message))

    def _handle(self, frame: Frame) -> Followed | Restarted | None:
        kind, data, prompt_id = frame.type, frame.data, frame.prompt_id
        # After a reconnect ComfyUI re-sends the running node without a prompt_id: it is ours.
        if prompt_id != self.prompt_id and not (prompt_id is None and kind == protocol.EXECUTING):
            self.progress.flush()
            return None
        if kind == protocol.EXECUTION_START:
            self._started()
        elif kind == protocol.EXECUTING:
            return self._executing(frame.node, prompt_id)
        elif kind == protocol.EXECUTED:
            node_id = str(frame.node)
            if node_id not in self.intermediate_nodes:  # 0.38.1 also reports cached intermediate nodes
                self.outputs[node_id] = data.get("output") or {}
        elif kind == protocol.EXECUTION_CACHED:
            self._started()
            self.progress.cached(data.get("nodes") or [])
        elif kind == protocol.PROGRESS:
            self.progress.step(data.get("value"), data.get("max"), frame.node)
        elif frame.failure is not None:
            raise explain.execution_failure(frame.failure, self.unmask)
        return None

    def _started(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()

    def _executing(self, node: Any, prompt_id: str | None) -> Followed | None:
        now_running = None if node is None else str(node)
        if now_running != self.running:  # after a reconnect ComfyUI sends the running node again
            self._ran(self.running)
            self.running = now_running
        if node is None:
            return self._finish() if prompt_id == self.prompt_id else None
        self._started()
        self.progress.node(str(node))
        return None

    def _ran(self, node_id: str | None) -> None:
        """A node finished (ComfyUI moved on): the container's first model loaded, if it was a loader."""
        if node_id is not None and protocol.is_model_loader(self.progress.class_of(node_id)):
            startup.record_once(FIRST_MODEL_RECORD, {"class_type": self.progress.class_of(node_id)})

    def _finish(self) -> Followed:
        if self.stream_complete:
            return Followed(self.outputs, self.started_at)
        followed = self._reconcile()
        if not isinstance(followed, Followed):
            raise JobError(Reason.INTERNAL, "ComfyUI reported the prompt finished but does not list it as finished")
        return followed

    def _idle(self) -> Followed | Restarted | None:
        """The socket was quiet for a tick.

        After WEBSOCKET_RECEIVE_TIMEOUT_S without a frame, ping the socket and ask ComfyUI
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

    def _recover(self, why: str) -> Followed | Restarted | None:
        """Reconnect with backoff, then ask ComfyUI whether the prompt ended meanwhile."""
        log.warning("job %s: %s; reconnecting", self.ctx.job_id, why)
        self.stream_complete = False
        attempts = self.rt.config.ws_reconnect_attempts
        for attempt in range(attempts):
            self.ctx.sleep(min(_backoff(attempt, self.rt.config.ws_reconnect_delay_s), MAX_RECONNECT_DELAY_S))
            if self._comfy_replaced(why):
                return Restarted(self.ready)
            try:
                self.sock.open()
                break
            except ComfyUnavailable:
                continue
        else:
            if self._comfy_replaced(why):
                return Restarted(self.ready)
            raise JobError(
                Reason.COMFYUI_UNAVAILABLE,
                f"Lost the connection to ComfyUI ({why}) and could not reconnect in {attempts} attempts "
                "(WEBSOCKET_RECONNECT_ATTEMPTS)",
            )
        self.last_frame = time.monotonic()
        self.ping_sent_at = None
        return self._reconcile()

    def _comfy_replaced(self, why: str) -> bool:
        """Whether ComfyUI's process ended before it started the prompt (it must be sent again).

        False when the same process still runs; raises JobError when the prompt was lost with a
        running process.
        """
        status = self.rt.gate.status()
        known_pid = self.ready.comfyui_pid
        replaced = status.ready and known_pid and status.comfyui_pid and status.comfyui_pid != known_pid
        ended = bool(known_pid and _ended(known_pid))
        if not (replaced or ended or _gone(status, known_pid)):
            return False
        if self.started_at is not None:
            reason = f": {status.describe()}" if not status.ready else self._sidecar_reason(known_pid)
            raise JobError(
                Reason.COMFYUI_UNAVAILABLE,
                f"ComfyUI's process (pid {known_pid}) ended while running the prompt ({why}){reason}",
            )
        log.info("job %s: ComfyUI restarted before running the prompt; sending it again once ready", self.ctx.job_id)
        return True

    def _sidecar_reason(self, known_pid: int | None) -> str:
        """The sidecar's account of a death it may not have seen yet: asked for up to DEATH_REASON_WAIT_S."""
        deadline = time.monotonic() + DEATH_REASON_WAIT_S
        while time.monotonic() < deadline:
            status = self.rt.gate.status()
            if status.ready and known_pid and status.comfyui_pid != known_pid:
                # Restarted before the sidecar's next look: its account of the process this job lost.
                if f"(pid {known_pid})" in status.comfyui_last_end:
                    return f": {status.comfyui_last_end}; supervisord restarted it as pid {status.comfyui_pid}"
                return f": comfyui restarted (pid {known_pid} -> {status.comfyui_pid})"
            if _gone(status, known_pid):
                return f": {status.describe()}"
            time.sleep(TICK_S / 2)
        return ""

    def _reconcile(self) -> Followed | Restarted | None:
        """How the prompt ended if it has, None while it is queued or running."""
        try:
            state = prompt_state(
                self.rt.comfy, self.features, self.prompt_id, self.ctx.request_timeout_s(self.rt.comfy.timeout_s)
            )
        except ComfyUnavailable as error:
            raise JobError(
                Reason.COMFYUI_UNAVAILABLE, f"ComfyUI stopped answering while running the prompt ({error.reason})"
            ) from error
        except ComfyError as error:
            raise self.rt.comfy_failure(error, "checking on the prompt") from error
        if state.where is Where.RUNNING:
            self._started()
        if state.where in (Where.PENDING, Where.RUNNING):
            return None
        if state.entry is None:
            if self._comfy_replaced("ComfyUI no longer knows the prompt"):
                return Restarted(self.ready)
            raise JobError(
                Reason.COMFYUI_UNAVAILABLE,
                f"ComfyUI no longer knows the prompt {self.prompt_id}: it was lost, most likely in a restart",
            )
        if state.entry.failure is not None and state.entry.failed:
            raise explain.execution_failure(state.entry.failure, self.unmask)
        if state.entry.failed:
            raise JobError(Reason.EXECUTION, "ComfyUI reports the prompt failed, without saying why")
        outputs = {node: ui for node, ui in state.entry.outputs.items() if node not in self.intermediate_nodes}
        return Followed(outputs, self.started_at)


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


def _backoff(attempt: int, base_s: float) -> float:
    """No wait before the first reconnect (a dropped socket on a live server), then doubling."""
    return 0.0 if attempt == 0 else base_s * 2 ** (attempt - 1)
