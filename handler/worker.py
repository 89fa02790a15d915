"""The job boundary: the async handler runpod calls, cancellation, logs and metrics.

runpod calls the handler inside its event loop, so the blocking job runs in a thread
(asyncio.to_thread). When RunPod cancels the job the awaiting task gets CancelledError: the
handler sets the job's `cancelled` flag, which every wait of the job asks, and lets the
cancellation through only once the job's thread has ended (its prompt stopped in ComfyUI),
so a cancelled job never runs on beside the next one. That takes at most the stop sequence's
bounds (context.py).

How many jobs runpod hands out at once is the Pipeline's depth (pipeline.py), through the SDK's
`concurrency_modifier`: the next jobs are validated, staged and queued in ComfyUI while the
current one runs, so ComfyUI starts each the moment the one before ends.

Every failure ends as {"error": "<message>", "details": {...}}; a broken job never takes the
worker down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import job, metrics
from .context import JobContext
from .errors import Reason
from .pipeline import Bounds, Pipeline
from .runtime import Runtime

log = logging.getLogger(__name__)

LOGGED_MESSAGE_CHARS = 400


class Result(dict):
    """The handler's result, with a short repr.

    runpod's run_job formats the whole result into a debug log line (f"Handler output:
    {output}") whether or not debug logging is on; for base64 outputs that is one more copy
    of every byte, and about a tenth of a second per 40 MB.
    """

    def __repr__(self) -> str:
        sizes = {key: (len(value) if isinstance(value, list | str) else value) for key, value in self.items()}
        return f"Result({sizes})"

    __str__ = __repr__


class Worker:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        config = rt.config
        self.pipeline = Pipeline(Bounds(config.pipeline_depth, config.pipeline_max_depth, config.pipeline_max_wait_s))

    def concurrency(self, current: int) -> int:
        """runpod's concurrency_modifier: how many jobs this worker takes at once."""
        return self.pipeline.concurrency(current)

    async def handler(self, job_request: dict[str, Any]) -> dict[str, Any]:
        """The function given to runpod.serverless.start."""
        ctx = JobContext(job_request, self.rt.config.job_timeout_s)
        task = asyncio.ensure_future(asyncio.to_thread(self.run, ctx))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            ctx.cancelled.set()
            log.info("job %s: RunPod cancelled it; stopping it", ctx.job_id)
            await _until_done(task)
            raise

    def run(self, ctx: JobContext) -> dict[str, Any]:
        """Run one job in this thread; always returns a result, never raises."""
        log.info("job %s started", ctx.job_id)
        metrics.IN_PROGRESS.inc()
        self.pipeline.started()
        outcome = None
        try:
            outcome = job.run(self.rt, ctx)
        finally:
            metrics.IN_PROGRESS.dec()
            self.pipeline.ended(outcome.phases if outcome else {}, ctx.elapsed_s())
        succeeded = outcome.reason is Reason.NONE
        metrics.record(outcome.reason, ctx.elapsed_s(), outcome.phases)
        if succeeded:
            log.info("job %s succeeded in %.3f s%s", ctx.job_id, ctx.elapsed_s(), _summary(outcome.result))
        else:
            log.info(
                "job %s failed (%s) in %.3f s: %s",
                ctx.job_id,
                outcome.reason.value,
                ctx.elapsed_s(),
                _first_line(outcome.result.get("error", "")),
            )
        if self.rt.config.refresh_worker:
            return Result(outcome.result, refresh_worker=True)
        return Result(outcome.result)


async def _until_done(task: asyncio.Future) -> None:
    """Wait for the job's thread to end, even if the waiting is cancelled again."""
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
        except Exception:
            return


def _first_line(message: str) -> str:
    line = message.splitlines()[0] if message else ""
    return line if len(line) <= LOGGED_MESSAGE_CHARS else line[: LOGGED_MESSAGE_CHARS - 1] + "…"


def _summary(result: dict[str, Any]) -> str:
    counts = [f"{len(value)} {key}" for key, value in result.items() if isinstance(value, list) and value]
    return f" ({', '.join(counts)})" if counts else ""
