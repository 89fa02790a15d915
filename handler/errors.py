"""The one error a job can fail with: a reason code for metrics and a message for the caller."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Why a job failed; the `reason` label of comfy_worker_jobs_total (docs/design.md)."""

    NONE = "none"
    INVALID_INPUT = "invalid_input"
    VALIDATION = "validation"
    EXECUTION = "execution"
    TIMEOUT = "timeout"
    COMFYUI_UNAVAILABLE = "comfyui_unavailable"
    OUTPUT_TOO_LARGE = "output_too_large"
    UPLOAD = "upload"
    INTERNAL = "internal"
    INTERRUPTED = "interrupted"


class JobError(Exception):
    """A job failure the caller can act on.

    `message` is written for the person who sent the job: it names the field, node or file
    and says what was expected. `details` carries the same facts as structured data.
    """

    def __init__(self, reason: Reason, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details or {}

    def amended(self, clause: str) -> JobError:
        """This failure with `clause` added to its message (what was done about it), as a new error."""
        return JobError(self.reason, self.message + clause, self.details) if clause else self

    def result(self) -> dict[str, Any]:
        """The handler's result for this failure: worker-comfyui's {"error": str}, plus details."""
        details = {"reason": self.reason.value, **self.details}
        return {"error": self.message, "details": details}


def invalid_input(problem: str, details: dict[str, Any] | None = None) -> JobError:
    """A job refused for its input: one problem, named by the field it is in."""
    return JobError(Reason.INVALID_INPUT, f"Invalid input: {problem}", {"problems": [problem], **(details or {})})
