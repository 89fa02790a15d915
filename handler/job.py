"""One job, top to bottom: validate -> stage inputs -> queue -> follow -> collect -> deliver -> clean up.

`run` never raises for a job's failure: it returns the job's `Outcome` (the result for RunPod,
the failure reason, and where the time went). Every prompt the job sent to ComfyUI is stopped
if the job ends before it did, and the job's files and history are cleaned up afterwards, in
the background, whatever happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from worker_common.comfy_client import ComfyError, ComfyUnavailable
from worker_common.contract import Readiness

from . import api, collect, describe, destination, metrics, namespace, stage, stop, submit, validate, workflows
from .cleanup import Leftovers
from .context import JobContext
from .errors import JobError, Reason
from .follow import Followed, Follower
from .gate import RestartWait, ready_for_job
from .namespace import JobSpace, PreparedWorkflow
from .progress import Progress, RunPodProgress
from .runtime import Runtime
from .validate import JobInput
from .ws import ComfySocket

log = logging.getLogger(__name__)

# Failures that mean ComfyUI never took the prompt: there is nothing to stop.
NEVER_QUEUED = frozenset({Reason.VALIDATION, Reason.INVALID_INPUT})


@dataclass
class Outcome:
    result: dict[str, Any]
    reason: Reason  # Reason.NONE for a success
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase (metrics.PHASES)


class _Phases:
    """Seconds spent in each phase of the job, for metrics.record_phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(phase, time.monotonic() - started)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + max(seconds, 0.0)


def run(rt: Runtime, ctx: JobContext) -> Outcome:
    """Run the job; its outcome, success or failure, never an exception."""
    phases = _Phases()
    space = JobSpace.new(rt.config.layout)
    prompt_id: str | None = None
    if rt.config.pipeline_depth == 1:
        rt.cleaner.wait(max(ctx.left_s(), 0.0))  # one job at a time: the last one ends with its clean-up
    try:
        with rt.cleaner.job():
            prompt_id = submit.new_prompt_id()
            result = _run(rt, ctx, space, prompt_id, phases)
        if "prompt_id" in result:
            result["timings"] = {phase: round(seconds, 4) for phase, seconds in phases.seconds.items()}
        return Outcome(result, Reason.NONE, phases.seconds)
    except JobError as error:
        return Outcome(error.result(), error.reason, phases.seconds)
    except ComfyError as error:
        failure = rt.comfy_failure(error, "running the job")
        return Outcome(failure.result(), failure.reason, phases.seconds)
    except Exception as error:
        log.exception("job %s failed unexpectedly", ctx.job_id)
        failure = JobError(Reason.INTERNAL, f"The worker failed unexpectedly: {type(error).__name__}: {error}")
        return Outcome(failure.result(), failure.reason, phases.seconds)
    finally:
        rt.cleaner.submit(Leftovers(space, prompt_id))


def _run(rt: Runtime, ctx: JobContext, space: JobSpace, prompt_id: str, phases: _Phases) -> dict[str, Any]:
    raw = ctx.job.get("input")
    if isinstance(raw, dict) and "describe" in raw:  # nothing is queued (describe.py)
        _ready(rt, ctx)
        return describe.describe(
            raw["describe"], rt.workflows, rt.catalog, ctx.request_timeout_s(10), rt.config.budgets
        )
    with phases.timing("validating"):
        job_input = validate.parse(workflows.resolve(raw, rt.workflows), rt.config.budgets)
        own_destination = destination.own(raw, rt.config)
    with phases.timing("staging_inputs"):
        ready = _ready(rt, ctx)
        timeout_s = ctx.request_timeout_s(10)
        loaded = api.set_params(rt, raw, job_input, timeout_s)
        prepared = namespace.prepare(
            job_input.workflow, space, {image.name for image in job_input.images}, rt.catalog, timeout_s
        )
        stage.stage_inputs(rt, ctx, job_input, space, prepared)
    ctx.check()
    followed = _queue_and_follow(rt, ctx, job_input, space, prepared, prompt_id, ready, phases)
    with phases.timing("collecting"):
        collected = collect.collect(rt, followed.outputs, space)
    try:
        with phases.timing("delivering"):
            result = destination.deliver_to(rt, ctx, collected, own_destination)
            api.add_results(rt, result, collected, job_input, loaded, timeout_s)
    finally:
        collected.discard_scratch()
    result["prompt_id"] = prompt_id
    return result


def _ready(rt: Runtime, ctx: JobContext) -> Readiness:
    started = time.monotonic()
    ready = ready_for_job(rt.gate, ctx, rt.config.job_ready_wait_s, rt.sockets.idle_alive())
    rt.catalog.for_process(ready.comfyui_pid)
    rt.features(ready.comfyui_pid)  # asked now, while ComfyUI answers: stopping a prompt needs it
    metrics.READY_WAIT.observe(time.monotonic() - started)
    return ready


def _queue_and_follow(
    rt: Runtime,
    ctx: JobContext,
    job_input: JobInput,
    space: JobSpace,
    prepared: PreparedWorkflow,
    prompt_id: str,
    ready: Readiness,
    phases: _Phases,
) -> Followed:
    """Queue the prompt and follow it; a job that fails or stops meanwhile stops its prompt first."""
    waiting = RestartWait(rt.gate, ctx, rt.config.job_ready_wait_s)
    with rt.sockets.socket() as sock:
        submission = submit.Submission(
            prompt_id, sock.client_id, prepared.workflow, job_input.workflow, _extra_data(rt, job_input), space
        )
        reporter = RunPodProgress(ctx.job) if rt.config.progress_url_set else None
        progress = Progress(job_input.workflow, reporter.send if reporter else None, job_id=ctx.job_id)

        def send(ready: Readiness) -> Readiness:
            ready = _connect(sock, ready, waiting)
            return submit.queue(rt, ctx, submission, ready, waiting)

        def resubmit(lost: Readiness) -> Readiness:
            return send(waiting.next(lost))

        try:
            queued_at = time.monotonic()
            ready = send(ready)
            follower = Follower(
                rt, ctx, sock, prompt_id, ready, progress, prepared.intermediate_nodes, resubmit, space.unmask
            )
            followed = follower.run()
        except JobError as error:
            if error.reason not in NEVER_QUEUED:
                error.message += stop.stop_prompt(rt, prompt_id, ready.comfyui_pid, sock)
            raise
        except Exception:
            stop.stop_prompt(rt, prompt_id, ready.comfyui_pid, sock)
            raise
        finally:
            if reporter is not None:
                reporter.close()
    started = followed.started_at or followed.ended_at
    phases.add("queue_wait", started - queued_at)
    phases.add("executing", followed.ended_at - started)
    return followed


def _connect(sock: ComfySocket, ready: Readiness, waiting: RestartWait) -> Readiness:
    """Open the job's WebSocket before queueing, waiting for a restarting ComfyUI."""
    while True:
        try:
            sock.ensure_open()
            return ready
        except ComfyUnavailable:
            ready = waiting.next(ready)


def _extra_data(rt: Runtime, job_input: JobInput) -> dict[str, Any] | None:
    api_key = job_input.api_key or rt.config.comfy_org_api_key
    return {"api_key_comfy_org": api_key} if api_key else None
