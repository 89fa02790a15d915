"""The job boundary: the async handler runpod calls, errors, cancellation, logs and metrics.

runpod calls the handler inside its event loop, so the blocking job runs in a thread
(asyncio.to_thread). When RunPod cancels the job the awaiting task gets CancelledError:
the handler sets the job's `cancelled` flag, which the job thread sees within a tick, and
gives it a moment to interrupt ComfyUI before letting the cancellation through.

Every failure ends here as {"error": "<message>", "details": {...}}; a broken job never
takes the worker down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from worker_common.comfy_client import ComfyError

from . import job, metrics
from .context import JobContext
from .errors import JobError, Reason
from .follow import INTERRUPT_GRACE_S
from .runtime import Runtime

log = logging.getLogger(__name__)

CANCEL_GRACE_S = INTERRUPT_GRACE_S + 2.0
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

    async def handler(self, job_request: dict[str, Any]) -> dict[str, Any]:
        """The function given to runpod.serverless.start."""
        ctx = JobContext(job_request, self.rt.config.job_timeout_s)
        task = asyncio.ensure_future(asyncio.to_thread(self.run, ctx))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            ctx.cancelled.set()
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
            raise

    def run(self, ctx: JobContext) -> dict[str, Any]:
        """Run one job in this thread; always returns a result, never raises."""
        log.info("job %s started", ctx.job_id)
        metrics.IN_PROGRESS.inc()
        try:
            result, reason = self._attempt(ctx)
        finally:
            metrics.IN_PROGRESS.dec()
        outcome = "success" if reason is Reason.NONE else "failed"
        metrics.record(outcome, reason, ctx.elapsed_s())
        if self.rt.config.refresh_worker:
            result["refresh_worker"] = True
        return Result(result)

    def _attempt(self, ctx: JobContext) -> tuple[dict[str, Any], Reason]:
        try:
            result = job.run(self.rt, ctx)
        except JobError as error:
            return self._failed(ctx, error), error.reason
        except ComfyError as error:
            failure = self.rt.comfy_failure(error, "running the job")
            return self._failed(ctx, failure), failure.reason
        except Exception as error:
            log.exception("job %s failed unexpectedly", ctx.job_id)
            failure = JobError(Reason.INTERNAL, f"The worker failed unexpectedly: {type(error).__name__}: {error}")
            return self._failed(ctx, failure), failure.reason
        log.info("job %s succeeded in %.3f s%s", ctx.job_id, ctx.elapsed_s(), _summary(result))
        return result, Reason.NONE

    def _failed(self, ctx: JobContext, error: JobError) -> dict[str, Any]:
        message = error.message.splitlines()[0] if error.message else ""
        if len(message) > LOGGED_MESSAGE_CHARS:
            message = message[: LOGGED_MESSAGE_CHARS - 1] + "…"
        log.info("job %s failed (%s) in %.3f s: %s", ctx.job_id, error.reason.value, ctx.elapsed_s(), message)
        return error.result()


def _summary(result: dict[str, Any]) -> str:
    counts = [f"{len(value)} {key}" for key, value in result.items() if isinstance(value, list) and value]
    return f" ({', '.join(counts)})" if counts else ""
