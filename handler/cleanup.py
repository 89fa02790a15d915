"""Step 7: remove what the job left in ComfyUI: its uploaded inputs, its delivered outputs, its history.

Only files the job created are removed, and outputs only once delivered (returned as base64
or uploaded): an output that could not be delivered stays on disk. A failed removal is
logged and never fails the job.

Clean-up runs after the result is handed back, in one background thread, so it adds
nothing to the job's time. The next job waits for it before touching ComfyUI, so a late
removal can never hit a file that job uploads under the same name.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

from worker_common.comfy_client import ComfyError, ComfyUnavailable

from .context import JobContext

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger(__name__)


class Cleaner:
    """Runs clean-ups one after another, off the jobs' path."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cleanup")
        self._last: Future | None = None

    def submit(self, rt: Runtime, ctx: JobContext) -> None:
        self._last = self._executor.submit(_clean_up_logged, rt, ctx)

    def wait(self) -> None:
        """Until every clean-up submitted so far has finished."""
        last = self._last
        if last is not None:
            wait([last])


def _clean_up_logged(rt: Runtime, ctx: JobContext) -> None:
    try:
        clean_up(rt, ctx)
    except Exception:  # a clean-up bug must not stop the next clean-ups
        log.exception("job %s: clean-up failed", ctx.job_id)


def clean_up(rt: Runtime, ctx: JobContext) -> None:
    config = rt.config
    if config.cleanup_inputs:
        _remove(ctx.job_id, ctx.created_inputs)
    if config.cleanup_outputs:
        _remove(ctx.job_id, ctx.delivered_outputs)
    if config.cleanup_history and ctx.prompt_id:
        try:
            rt.comfy.delete_history([ctx.prompt_id])
        except ComfyUnavailable:
            pass  # ComfyUI is down: its history, kept in memory, is gone anyway
        except ComfyError as error:
            log.warning("job %s: could not delete its ComfyUI history entry: %s", ctx.job_id, error)


def _remove(job_id: str, paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            log.warning("job %s: could not remove %s: %s", job_id, path, error)
