"""One job, top to bottom: parse -> prepare -> stage inputs -> run the prompt -> collect -> deliver -> clean up.

Each step takes what it needs and returns what it made: validate.parse the job's input,
api.set_params and namespace.prepare the workflow ComfyUI gets, stage.stage_inputs its files,
prompt_session.run_prompt the prompt's whole conversation with ComfyUI (its outputs and
times), collect.collect the output files, destination.deliver_to and api.api_results the
result. `run` never raises for a job's failure: it returns the job's `Outcome` (the result
for RunPod, the failure reason, and where the time went). Every prompt the job sent to
ComfyUI is stopped if the job ends before it did (prompt_session.py), and the job's files and
history are cleaned up afterwards, in the background, whatever happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from worker_common import model_cache, startup
from worker_common.comfy_client import ComfyError
from worker_common.contract import FIRST_JOB_RECORD

from . import (
    api,
    collect,
    describe,
    destination,
    metrics,
    namespace,
    prompt_session,
    stage,
    submit,
    validate,
    workflows,
)
from .catalog import Catalog
from .cleanup import Leftovers
from .context import JobContext
from .errors import JobError, Reason
from .gate import READY_FRESH_S, ready_for_job
from .namespace import JobSpace
from .results import LoadedModel
from .runtime import Runtime
from .validate import JobInput
from .ws import Vouched

log = logging.getLogger(__name__)


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

    def rounded(self) -> dict[str, float]:
        """The seconds so far, as the result's `timings` gives them."""
        return {phase: round(seconds, 4) for phase, seconds in self.seconds.items()}


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
        _answer, catalog = _ready_for(rt, ctx)
        return describe.describe(raw["describe"], rt.workflows, catalog, ctx.request_timeout_s(10), rt.config.budgets)
    with phases.timing("validating"):
        job_input = validate.parse(workflows.resolve(raw, rt.workflows), rt.config.budgets)
        own_destination = destination.own(raw, rt.config)
    with phases.timing("staging_inputs"):
        answer, catalog = _ready_for(rt, ctx)
        timeout_s = ctx.request_timeout_s(10)
        workflow, loaded = api.set_params(rt, catalog, raw, job_input, timeout_s)
        _models_ready(rt, ctx, loaded)
        rt.model_hashes.warm([model.path for model in loaded])  # from a copy on the disk, when it is whole
        prepared = namespace.prepare(workflow, space, {image.name for image in job_input.images}, catalog, timeout_s)
        stage.stage_inputs(rt, ctx, job_input, space, prepared)
    ctx.check()
    submission = submit.Submission(
        prompt_id, prepared.workflow, workflow, _extra_data(rt, job_input), space, prepared.intermediate_nodes, catalog
    )
    ran = prompt_session.run_prompt(rt, ctx, submission, answer)
    phases.add("queue_wait", ran.queue_wait_s)
    phases.add("executing", ran.executing_s)
    with phases.timing("collecting"):
        collected = collect.collect(rt, ran.outputs, space)
    try:
        with phases.timing("delivering"):
            delivered = destination.deliver_to(rt, ctx, collected, own_destination)
            result = api.api_results(rt, catalog, delivered, collected, workflow, loaded, timeout_s)
    finally:
        collected.discard_scratch()
    first = startup.record_once(FIRST_JOB_RECORD, {})
    if first is not None:
        log.info("first job done %.1f s after the container started", first)
    return {**result, "prompt_id": prompt_id, "timings": phases.rounded()}


def _ready_for(rt: Runtime, ctx: JobContext) -> tuple[Vouched, Catalog]:
    """ComfyUI's readiness for the job (and when the sidecar said it), and the node classes of the ready process.

    A "ready" that an idle WebSocket still vouches for, given less than READY_FRESH_S ago, is
    used without asking the sidecar again.
    """
    started = time.monotonic()
    vouched = rt.sockets.recent_ready(READY_FRESH_S)
    ready = ready_for_job(rt.gate, ctx, rt.config.job_ready_wait_s, vouched.ready if vouched else None)
    answer = vouched if vouched is not None and vouched.ready is ready else Vouched(ready, time.monotonic())
    metrics.READY_WAIT.observe(time.monotonic() - started)
    return answer, rt.catalog.for_process(ready.comfyui_pid)


def _models_ready(rt: Runtime, ctx: JobContext, loaded: list[LoadedModel]) -> None:
    """Wait while the read-ahead still reads the job's models (the loader's one stream from the volume, or
    the hashing's, would be slower and take the volume's bandwidth from it), then drop copies whose file
    on the volume changed since (worker_common/model_cache.py)."""
    sources = {model.name: model.path for model in loaded}
    waited, dropped = model_cache.ready_for(rt.config.layout.model_cache, sources, max(ctx.left_s(), 0.0))
    if waited >= 0.1:
        log.info("job %s waited %.1f s for its models to be read ahead from the volume", ctx.job_id, waited)
    if dropped:
        log.info("the volume's %s changed since it was copied to the disk: read from the volume", ", ".join(dropped))


def _extra_data(rt: Runtime, job_input: JobInput) -> dict[str, Any] | None:
    api_key = job_input.api_key or rt.config.comfy_org_api_key
    return {"api_key_comfy_org": api_key} if api_key else None
