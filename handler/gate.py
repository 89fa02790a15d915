"""Readiness: ask the sidecar whether ComfyUI can take work, long-polling `/readyz?wait=S`.

The sidecar owns the truth about ComfyUI (supervisor state, pid, probes); the handler never
polls ComfyUI itself to find out. With `wait`, the sidecar answers the moment ComfyUI
becomes ready, so readiness reaches the handler without a polling delay.

Each question uses a fresh loopback connection through http.client: about 0.4 ms, less than
a kept-alive requests session, and never stalled by a server that writes headers and body
in two packets (Nagle's algorithm meeting delayed ACKs costs 40 ms an answer).
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import psutil

from worker_common.contract import Readiness

from .context import JobContext
from .errors import JobError, Reason

# The longest single long-poll; the loop re-asks until its own deadline.
MAX_POLL_S = 30.0
# Pause before asking again when the sidecar itself does not answer (not started yet).
RETRY_PAUSE_S = 0.05
# Time the sidecar gets on top of `wait` to answer.
ANSWER_SLACK_S = 5.0
# With a job's cancellation to watch, the longest single long-poll.
STOPPABLE_POLL_S = 0.5
# A "ready" answer younger than this is trusted for a new job, as long as the WebSocket of the
# job it was given for is still open (a ComfyUI restart closes it; ws.SocketPool.recent_ready):
# jobs arriving back to back skip a round trip to the sidecar.
READY_FRESH_S = 1.0
# The state of an answer from another stack's sidecar: never ready, and no reason to try.
FOREIGN = "foreign"


class Gate:
    """The sidecar's readiness, asked over a fresh loopback connection each time."""

    def __init__(self, port: int, stack: str, host: str = "127.0.0.1") -> None:
        """`stack`: this stack's identity (contract.stack_identity); an answer without it is another stack's."""
        self.host = host
        self.port = port
        self.stack = stack
        self.url = f"http://{host}:{port}/readyz"

    def status(self, wait_s: float = 0.0) -> Readiness:
        """One answer from the sidecar; `wait_s` > 0 holds it until ready or that many seconds."""
        path = f"/readyz?wait={wait_s:.3f}" if wait_s > 0 else "/readyz"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=wait_s + ANSWER_SLACK_S)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            status = Readiness.from_body(json.loads(connection.getresponse().read()))
        except (OSError, http.client.HTTPException, ValueError) as error:
            status = Readiness(False, "unreachable", f"the sidecar at {self.url} did not answer: {error}")
        finally:
            connection.close()
        if status.state != "unreachable" and status.stack != self.stack:
            status = Readiness(
                False,
                FOREIGN,
                f"what answers on port {self.port} (SIDECAR_PORT) is not this stack's sidecar (it says it is "
                f"stack {status.stack or 'unnamed'}, this is {self.stack}): is the port taken by another worker?",
            )
        return status

    def wait_ready(self, until: float, stop: threading.Event | None = None) -> Readiness:
        """Long-poll until ComfyUI is ready or the Unix time `until`; returns the last answer.

        With `stop` (a job's cancellation), each long-poll is short, so a cancelled job stops
        waiting within STOPPABLE_POLL_S; readiness still arrives the moment the sidecar sees it.
        """
        chunk_s = MAX_POLL_S if stop is None else STOPPABLE_POLL_S
        while True:
            asked_at = time.time()
            wait_s = min(max(until - asked_at, 0.0), chunk_s)
            status = self.status(wait_s)
            if status.ready or status.failed or time.time() >= until or (stop is not None and stop.is_set()):
                return status
            if time.time() - asked_at < wait_s:
                # Answered early without being ready (sidecar not up yet): do not spin.
                time.sleep(min(RETRY_PAUSE_S, max(until - time.time(), 0.0)))


def ready_for_job(
    gate: Gate, ctx: JobContext, wait_s: float, recent: Readiness | None = None, gone_pid: int | None = None
) -> Readiness:
    """ComfyUI's readiness for a job: wait up to `wait_s` (and the job's time) for a restarting ComfyUI.

    `recent` is a "ready" answer the caller knows still holds (READY_FRESH_S old at most, and
    ComfyUI has not restarted since): it is used without asking again. `gone_pid` is a ComfyUI
    process that just refused a connection: until the sidecar notices, it may still call that
    process ready, so a ready answer naming a dead `gone_pid` counts as not ready. A sidecar that says "failed"
    (ComfyUI is given up on) fails the job at once, and an unreachable sidecar lets the job
    try: ComfyUI's own answers will tell.
    """
    status = recent if recent is not None and gone_pid is None else gate.status()
    until = time.time() + max(0.0, min(wait_s, ctx.left_s()))
    while not status.failed and not _usable(status, gone_pid) and time.time() < until:
        if _stale(status, gone_pid):
            _sleep(ctx, RETRY_PAUSE_S, status)
            status = gate.status()
        else:
            status = gate.wait_ready(until, ctx.cancelled)
        _sleep(ctx, 0.0, status)
    if _usable(status, gone_pid):
        return status
    after = f" after waiting {wait_s:g} s (JOB_READY_WAIT_S)" if wait_s > 0 and not status.failed else ""
    raise JobError(
        Reason.COMFYUI_UNAVAILABLE, f"ComfyUI is not ready{after}, so the job was not started: {status.describe()}"
    )


def _sleep(ctx: JobContext, seconds: float, status: Readiness) -> None:
    """ctx.sleep, its time-out saying why the job was still waiting: the sidecar's reason."""
    try:
        ctx.sleep(seconds)
    except JobError as error:
        if error.reason is not Reason.TIMEOUT:
            raise
        raise error.amended(f" while it waited for ComfyUI to become ready: {status.describe()}") from None


def _usable(status: Readiness, gone_pid: int | None) -> bool:
    if status.state == "unreachable":
        return gone_pid is None
    return status.ready and not _stale(status, gone_pid)


def _stale(status: Readiness, gone_pid: int | None) -> bool:
    """A "ready" that names a process known to have refused, and that has ended since."""
    return status.ready and gone_pid is not None and status.comfyui_pid == gone_pid and not _alive(gone_pid)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class RestartWait:
    """Waiting for a restarting ComfyUI on a job's behalf: JOB_READY_WAIT_S in all, across every wait."""

    def __init__(self, gate: Gate, ctx: JobContext, budget_s: float) -> None:
        self.gate = gate
        self.ctx = ctx
        self.budget_s = budget_s
        self.since: float | None = None

    def next(self, ready: Readiness) -> Readiness:
        """The readiness of a ComfyUI other than the one that just failed `ready`'s job; raises when none comes."""
        self.since = self.since or time.monotonic()
        self.ctx.sleep(RETRY_PAUSE_S)  # a ComfyUI that answers at once but badly must not be hammered
        left_s = self.budget_s - (time.monotonic() - self.since)
        if left_s <= 0:
            raise JobError(
                Reason.COMFYUI_UNAVAILABLE,
                f"ComfyUI did not come back within JOB_READY_WAIT_S={self.budget_s:g} s: "
                f"{self.gate.status().describe()}",
            )
        return ready_for_job(self.gate, self.ctx, left_s, gone_pid=ready.comfyui_pid)
