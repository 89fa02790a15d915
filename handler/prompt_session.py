"""Steps 3 and 4: one prompt's whole conversation with ComfyUI, from its WebSocket to its end.

`run_prompt` takes the job's socket from the pool, connects (waiting out a restarting ComfyUI),
queues the prompt (submit.py: resending it where that is safe, settling an answer that was
lost), follows it to its end (follow.py), and when ComfyUI's process ended before starting it,
sends it again to the new process and follows it afresh. It returns what happened as a value,
`PromptRun`; a job that fails or stops meanwhile has its prompt stopped first (stop.py), and
the JobError it raises says so.

The parts stay in modules of their own on purpose: each is one exchange with ComfyUI with its
own rules (what may be resent, when a silent socket is dead, how long a stop may take), and
this module is the only one that strings them together. None calls back into another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from worker_common.comfy_client import ComfyUnavailable
from worker_common.contract import Readiness

from . import stop, submit
from .context import JobContext
from .errors import JobError, Reason
from .follow import Followed, Follower, Outputs
from .gate import RestartWait
from .progress import Progress, RunPodProgress
from .runtime import Runtime
from .submit import Submission
from .ws import ComfySocket, Vouched

# Failures that mean ComfyUI never took the prompt: there is nothing to stop.
NEVER_QUEUED = frozenset({Reason.VALIDATION, Reason.INVALID_INPUT})


@dataclass(frozen=True)
class PromptRun:
    """A prompt ComfyUI ran to its end: its outputs by node id, and where the time went."""

    outputs: Outputs
    queue_wait_s: float  # from queueing until ComfyUI started it
    executing_s: float  # from its start until its end


def run_prompt(rt: Runtime, ctx: JobContext, submission: Submission, answer: Vouched) -> PromptRun:
    """Queue the prompt with ComfyUI and follow it to its end; raises JobError (the prompt stopped first).

    `answer` is the sidecar's "ready" the job was prepared under. The socket, back in the pool,
    vouches for it (ws.SocketPool.recent_ready) only when the prompt ended well on the ComfyUI
    it names.
    """
    features = rt.features(answer.ready.comfyui_pid)  # asked while ComfyUI answers: stopping the prompt needs it
    with rt.sockets.socket() as sock:
        sock.vouched = None
        reporter = RunPodProgress(ctx.job) if rt.config.progress_url_set else None
        progress = Progress(submission.original, reporter.send if reporter else None, job_id=ctx.job_id)
        try:
            queued_at = time.monotonic()
            followed, ready = _send_and_follow(rt, ctx, submission, sock, answer.ready, progress)
        except JobError as error:
            if error.reason in NEVER_QUEUED:
                raise
            raise error.amended(stop.stop_prompt(rt, submission.prompt_id, features, sock)) from error.__cause__
        except Exception:
            stop.stop_prompt(rt, submission.prompt_id, features, sock)
            raise
        finally:
            if reporter is not None:
                reporter.close()
        sock.vouched = answer if ready is answer.ready else None
    started = followed.started_at or followed.ended_at
    return PromptRun(followed.outputs, max(started - queued_at, 0.0), max(followed.ended_at - started, 0.0))


def _send_and_follow(
    rt: Runtime, ctx: JobContext, submission: Submission, sock: ComfySocket, ready: Readiness, progress: Progress
) -> tuple[Followed, Readiness]:
    """Send the prompt and follow it; again to a new ComfyUI each time one ended before starting it.

    Returns how it ended, and the readiness of the ComfyUI that ran it.
    """
    waiting = RestartWait(rt.gate, ctx, rt.config.job_ready_wait_s)
    while True:
        ready = _connect(sock, ready, waiting)
        ready = submit.queue(rt, ctx, submission, sock.client_id, ready, waiting)
        ended = Follower(rt, ctx, sock, submission, ready, rt.features(ready.comfyui_pid), progress).run()
        if isinstance(ended, Followed):
            return ended, ready
        ready = waiting.next(ended.lost)


def _connect(sock: ComfySocket, ready: Readiness, waiting: RestartWait) -> Readiness:
    """Open the job's WebSocket before queueing, waiting for a restarting ComfyUI."""
    while True:
        try:
            sock.ensure_open()
            return ready
        except ComfyUnavailable:
            ready = waiting.next(ready)
