"""What one job carries through its steps: its id, its deadline and its cancellation.

The time budget of a job, in one place (every wait in the handler asks the context):

    JOB_TIMEOUT_S, counted from the moment the handler gets the job, bounds every step:
      waiting for a restarting ComfyUI   min(JOB_READY_WAIT_S, time left)
      downloading URL images            min(IMAGE_DOWNLOAD_TIMEOUT_S, time left), all together
      POST /prompt, /history, /queue    time left (each request), at most the client's timeout
      following the prompt              time left
      S3 uploads                        time left
    then, when the job ends before the prompt it sent (deadline, RunPod's cancellation, a failure):
      stopping the prompt               COMFY_INTERRUPT_GRACE_S for ComfyUI to answer and stop it,
                                        each request at most STOP_REQUEST_TIMEOUT_S; if it does
                                        not, supervisord is asked to restart ComfyUI (in the
                                        background: the job does not wait for it)

So a job's result comes at most JOB_TIMEOUT_S + COMFY_INTERRUPT_GRACE_S + 2 x
STOP_REQUEST_TIMEOUT_S after it started. Its clean-up runs after the result, in the
background; with JOB_PIPELINE_DEPTH=1 the next job waits for it (bounded by its own deadline).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import JobError, Reason

STOP_REQUEST_TIMEOUT_S = 2.0  # one request of the stop sequence; a frozen ComfyUI must not hold a job
MIN_REQUEST_TIMEOUT_S = 0.5  # no request gets less, even with less left (it would fail for nothing)


@dataclass
class JobContext:
    """Per-job deadline and cancellation; `cancelled` is set from the event loop when RunPod cancels."""

    job: dict[str, Any]
    timeout_s: float
    started: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def job_id(self) -> str:
        return str(self.job.get("id", "?"))

    @property
    def deadline(self) -> float:
        return self.started + self.timeout_s

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def request_timeout_s(self, limit_s: float) -> float:
        """A timeout for one request: the time left, at most `limit_s`."""
        return max(MIN_REQUEST_TIMEOUT_S, min(limit_s, self.left_s()))

    def stop_reason(self) -> JobError | None:
        """Why the job must stop now (RunPod cancelled it, or its deadline passed), else None."""
        if self.cancelled.is_set():
            return JobError(Reason.INTERRUPTED, "The job was cancelled")
        if self.left_s() <= 0:
            return JobError(
                Reason.TIMEOUT, f"The job ran longer than its time limit of {self.timeout_s:g} s (JOB_TIMEOUT_S)"
            )
        return None

    def check(self) -> None:
        """Raise the stop reason, if any: called between steps."""
        error = self.stop_reason()
        if error is not None:
            raise error

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less when the job is cancelled or its deadline comes first; then check."""
        self.cancelled.wait(max(0.0, min(seconds, self.left_s())))
        self.check()
