"""What one job carries through its steps: its id, deadline, cancellation and clean-up list."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import JobError, Reason


@dataclass
class JobContext:
    """Per-job state. `cancelled` is set from the event loop when RunPod cancels the job."""

    job: dict[str, Any]
    timeout_s: float
    started: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    prompt_id: str | None = None
    comfy_pid: int | None = None
    created_inputs: list[Path] = field(default_factory=list)
    delivered_outputs: list[Path] = field(default_factory=list)

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
