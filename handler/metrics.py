"""The handler's metrics (names fixed by docs/design.md), exposed by the sidecar.

With PROMETHEUS_MULTIPROC_DIR set (the entrypoint sets it), prometheus_client writes the
values to files in that folder, which the sidecar reads at scrape time. Without it they
are plain in-process values that nothing reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from .errors import Reason

JOBS = Counter("comfy_worker_jobs_total", "Jobs handled, by outcome and failure reason.", ["outcome", "reason"])
JOB_DURATION = Histogram(
    "comfy_worker_job_duration_seconds",
    "Time from a job's start to its result, by outcome.",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
READY_WAIT = Histogram(
    "comfy_worker_job_ready_wait_seconds",
    "Time a job waited for ComfyUI to be ready before it was started.",
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OUTPUT_BYTES = Counter("comfy_worker_output_bytes_total", "Output bytes delivered, by delivery.", ["delivery"])
IN_PROGRESS = Gauge("comfy_worker_jobs_in_progress", "Jobs running now.", multiprocess_mode="livesum")

OUTCOMES = ("success", "failed")
# A job's phases in order (docs/design.md, "Where a job's time goes").
PHASES = ("validating", "staging_inputs", "queue_wait", "executing", "collecting", "delivering")
JOB_PHASE_DURATION = Histogram(
    "comfy_worker_job_phase_duration_seconds",
    "Time a job spent in each of its phases, by phase and the job's outcome.",
    ["phase", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)


def record(reason: Reason, duration_s: float, phases: Mapping[str, float]) -> None:
    """One finished job: its outcome, its duration and where its time went."""
    outcome = "success" if reason is Reason.NONE else "failed"
    JOBS.labels(outcome, reason.value).inc()
    JOB_DURATION.labels(outcome).observe(duration_s)
    record_phases(phases, outcome)


def record_phases(durations: Mapping[str, float], outcome: str) -> None:
    """Observe the seconds a finished job spent in each phase it reached.

    `durations` maps phase names of PHASES to seconds; phases the job never reached (a job
    that failed validation has no `executing`) are simply absent. `outcome` is the job's,
    "success" or "failed", as for `record`. An unknown name is a programming error: it raises
    ValueError instead of creating a new label value.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown job outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    unknown = set(durations) - set(PHASES)
    if unknown:
        raise ValueError(f"unknown job phases {sorted(unknown)}; expected names from {', '.join(PHASES)}")
    for phase, seconds in durations.items():
        JOB_PHASE_DURATION.labels(phase, outcome).observe(seconds)


def initialise() -> None:
    """Create every label combination at zero, so rates exist before the first failure."""
    JOBS.labels("success", Reason.NONE.value)
    for reason in Reason:
        if reason is not Reason.NONE:
            JOBS.labels("failed", reason.value)
    for outcome in OUTCOMES:
        JOB_DURATION.labels(outcome)
        for phase in PHASES:
            JOB_PHASE_DURATION.labels(phase, outcome)
    for delivery in ("base64", "s3"):
        OUTPUT_BYTES.labels(delivery)
