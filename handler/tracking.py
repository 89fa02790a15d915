"""Where a prompt is in ComfyUI: waiting in the queue, running, finished, or unknown to it.

ComfyUI 0.38.1 answers this directly (`GET /api/jobs/{id}`); 0.3.64 through `/history/{id}`
(finished prompts only) and `/queue` (pending and running ones). Both end the same way: a
finished prompt's history entry holds its outputs or its failure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from worker_common.comfy_client import ComfyClient
from worker_common.comfy_protocol import (
    JOB_FINISHED,
    JOB_PENDING,
    JOB_RUNNING,
    Features,
    HistoryEntry,
    QueueState,
    job_status,
)


class Where(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    UNKNOWN = "unknown"  # not queued, not running, not in history: never arrived, or lost in a restart


@dataclass(frozen=True)
class PromptState:
    where: Where
    entry: HistoryEntry | None = None  # set when FINISHED


def prompt_state(comfy: ComfyClient, features: Features, prompt_id: str, timeout_s: float) -> PromptState:
    """Ask ComfyUI where the prompt is; raises ComfyError when it does not answer."""
    if features.jobs_api:
        status = job_status(comfy.job(prompt_id, timeout_s))
        if status == JOB_PENDING:
            return PromptState(Where.PENDING)
        if status == JOB_RUNNING:
            return PromptState(Where.RUNNING)
        if status not in JOB_FINISHED:
            return PromptState(Where.UNKNOWN)
    # The queue first: ComfyUI moves a finished prompt from the queue to the history under one
    # lock, so a prompt in neither, asked in this order, is truly unknown.
    queue = QueueState.from_body(comfy.queue(timeout_s)) or QueueState()
    if queue.is_running(prompt_id):
        return PromptState(Where.RUNNING)
    if queue.is_pending(prompt_id):
        return PromptState(Where.PENDING)
    entry = comfy.history(prompt_id, timeout_s)
    return PromptState(Where.FINISHED, HistoryEntry.from_entry(entry)) if entry else PromptState(Where.UNKNOWN)
