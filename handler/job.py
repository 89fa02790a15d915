"""One job, top to bottom: validate -> stage inputs -> queue -> follow -> collect -> deliver -> clean up."""

from __future__ import annotations

import functools
import time
from typing import Any

from runpod.serverless import progress_update

from . import collect, deliver, follow, metrics, stage, submit, validate
from .context import JobContext
from .gate import ready_for_job
from .progress import Progress
from .runtime import Runtime


def run(rt: Runtime, ctx: JobContext) -> dict[str, Any]:
    """The job's result; raises JobError when it fails. Clean-up runs either way, afterwards."""
    rt.cleaner.wait()
    try:
        job_input = validate.parse(ctx.job.get("input"), rt.config.image_max_bytes)
        _wait_until_ready(rt, ctx)
        stage.stage_inputs(rt, ctx, job_input)
        ctx.check()
        with rt.sockets.socket() as sock:
            submit.queue(rt, ctx, sock.client_id, job_input)
            outputs = follow.follow(rt, ctx, sock, _progress(rt, ctx, job_input.workflow))
        collected = collect.collect(rt, outputs)
        try:
            result = deliver.deliver(rt, ctx, collected)
        finally:
            collected.discard_scratch()
        result["prompt_id"] = ctx.prompt_id
        return result
    finally:
        rt.cleaner.submit(rt, ctx)


def _wait_until_ready(rt: Runtime, ctx: JobContext) -> None:
    started = time.monotonic()
    ctx.comfy_pid = ready_for_job(rt.gate, rt.config.job_ready_wait_s, rt.sockets.idle_alive()).comfyui_pid
    metrics.READY_WAIT.observe(time.monotonic() - started)


def _progress(rt: Runtime, ctx: JobContext, workflow: dict[str, Any]) -> Progress:
    send = functools.partial(progress_update, ctx.job) if rt.config.progress_url_set else None
    return Progress(workflow, send)
