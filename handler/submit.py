"""Step 3: hand the workflow to ComfyUI with POST /prompt, under a prompt id the handler chose.

The prompt id is chosen before queueing (a canonical lowercase uuid4, which 0.38.1 requires),
so every prompt the worker ever sent can be found, stopped and cleaned, even when ComfyUI's
answer never came. Until ComfyUI has accepted the prompt, a ComfyUI that does not answer
(restarting after a crash) is waited for, up to JOB_READY_WAIT_S, and the prompt sent again:
only a job whose prompt ComfyUI accepted can fail for a crash. An answer that is late, an
error or not JSON is settled by asking ComfyUI whether it has the prompt; 0.47.1's 409 for a
prompt_id it already has says so itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from worker_common.comfy_client import ComfyError, ComfyHTTPError, ComfyRefused, ComfyUnavailable
from worker_common.comfy_protocol import Rejection, is_duplicate_prompt
from worker_common.contract import Readiness

from . import explain
from .catalog import Catalog
from .context import JobContext
from .errors import JobError
from .gate import RestartWait
from .namespace import JobSpace
from .runtime import Runtime
from .tracking import Where, prompt_state


def new_prompt_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Submission:
    """One prompt as the job hands it to ComfyUI, and what reading ComfyUI's answers about it takes."""

    prompt_id: str
    workflow: dict[str, Any]  # as ComfyUI gets it (namespace.prepare)
    original: dict[str, Any]  # as the user sent it, for explaining a rejection
    extra_data: dict[str, Any] | None
    space: JobSpace  # the job's names, shown to the user as they wrote them (JobSpace.unmask)
    intermediate_nodes: frozenset[str]  # nodes of known non-output classes: their outputs are not the job's
    catalog: Catalog  # the node classes of the ComfyUI the job was prepared for, to explain a rejection


def queue(
    rt: Runtime, ctx: JobContext, submission: Submission, client_id: str, ready: Readiness, waiting: RestartWait
) -> Readiness:
    """Queue the prompt for the WebSocket `client_id` until ComfyUI has it; the readiness of the ComfyUI that took it.

    `waiting` waits for a restarting ComfyUI (the job's JOB_READY_WAIT_S). Raises JobError for
    a rejection (the workflow's problems in words), for an error answer when ComfyUI does not
    have the prompt, or when ComfyUI stays away past JOB_READY_WAIT_S.
    """
    ask_first = False  # an earlier attempt may have reached ComfyUI: ask before sending again
    while True:
        ctx.check()
        if ask_first:
            known = _has(rt, ctx, submission.prompt_id, ready)
            if known:
                return ready
            if known is None:
                ready = waiting.next(ready)
                continue
        try:
            rt.comfy.queue_prompt(
                submission.workflow,
                client_id,
                submission.prompt_id,
                submission.extra_data,
                ctx.request_timeout_s(rt.comfy.timeout_s),
            )
            return ready
        except ComfyHTTPError as error:
            if is_duplicate_prompt(error.status, error.json()):
                return ready  # 0.47.1: an earlier attempt of this job's prompt got there
            answer = Rejection.from_body(error.json()) if error.status == 400 else None
            if answer is not None:
                raise _rejection(rt, answer, submission) from None
            failure: ComfyError = error
        except ComfyError as error:  # no answer (ComfyUnavailable), or one that is not JSON
            failure = error
        refused = isinstance(failure, ComfyRefused)
        known = None if refused else _has(rt, ctx, submission.prompt_id, ready)
        if known:
            return ready
        if known is False and not isinstance(failure, ComfyUnavailable):
            raise rt.comfy_failure(failure, "queueing the workflow") from failure
        ask_first = known is None and not refused
        if known is None:
            ready = waiting.next(ready)


def _rejection(rt: Runtime, answer: Rejection, submission: Submission) -> JobError:
    space = submission.space
    return explain.rejection(
        answer, submission.original, submission.catalog, space.unmask, rt.pack_failures, space.usable_inputs
    )


def _has(rt: Runtime, ctx: JobContext, prompt_id: str, ready: Readiness) -> bool | None:
    """Whether ComfyUI has the prompt (queued, running or finished); None when it does not answer."""
    try:
        state = prompt_state(
            rt.comfy, rt.features(ready.comfyui_pid), prompt_id, ctx.request_timeout_s(rt.comfy.timeout_s)
        )
    except ComfyError:
        return None
    return state.where is not Where.UNKNOWN
