"""Stopping a prompt the job no longer wants (deadline, cancellation, a failure after queueing).

Only this job's prompt is touched, by its id: ComfyUI 0.38.1 cancels it with
`/api/jobs/{id}/cancel`; 0.3.64 with `/interrupt {"prompt_id"}` (which interrupts only a
running prompt with that id) and `/queue {"delete": [id]}` (which drops it if it waits). A
prompt that waited in the queue is simply gone; a running one must stop at its next node
boundary. ComfyUI gets COMFY_INTERRUPT_GRACE_S in all to answer and to stop: a node that ignores
the interrupt, or a ComfyUI that does not answer (frozen, swapping), would make every next job
queue behind it, so then ComfyUI is restarted through supervisord and the job's error says so.
"""

from __future__ import annotations

import time

from worker_common.comfy_client import ComfyClient, ComfyError, ComfyRefused, ComfyUnavailable
from worker_common.comfy_protocol import Features, Frame

from .context import STOP_REQUEST_TIMEOUT_S
from .runtime import Runtime
from .tracking import Where, prompt_state
from .ws import ComfySocket, Dropped

POLL_S = 0.25


def stop_prompt(rt: Runtime, prompt_id: str, features: Features, sock: ComfySocket | None) -> str:
    """Stop the prompt if ComfyUI still has it; returns what was done, as a clause for the job's error.

    `features` are those of the ComfyUI the prompt was sent to, asked before: this one may not answer now.
    """
    grace_s = rt.config.interrupt_grace_s
    deadline = time.monotonic() + grace_s
    while True:
        try:
            running = _cancel(rt.comfy, features, prompt_id)
            break
        except ComfyRefused:
            return ""  # ComfyUI is down: nothing of the prompt runs
        except ComfyUnavailable:
            if time.monotonic() >= deadline:
                why = (
                    f"ComfyUI did not answer for {grace_s:g} s (COMFY_INTERRUPT_GRACE_S) when asked to stop the prompt"
                )
                return f"; {why}: {rt.restart_comfyui(why)}"
        except ComfyError:
            return ""  # it answered, oddly: the prompt is not known to be running
    if not running:
        return ""
    where = _wait_stopped(rt.comfy, features, prompt_id, sock, max(deadline - time.monotonic(), 0.0))
    if where is not None:
        return f"; ComfyUI was interrupted at {where}" if where else ""
    why = f"ComfyUI did not stop the prompt within {grace_s:g} s of the interrupt (COMFY_INTERRUPT_GRACE_S)"
    return f"; {why}: {rt.restart_comfyui(why)}"


def _cancel(comfy: ComfyClient, features: Features, prompt_id: str) -> bool:
    """Ask ComfyUI to drop or interrupt the prompt; returns whether it was running."""
    timeout_s = STOP_REQUEST_TIMEOUT_S
    if features.targeted_cancel:
        state = prompt_state(comfy, features, prompt_id, timeout_s)
        if state.where in (Where.PENDING, Where.RUNNING):
            comfy.cancel_job(prompt_id, timeout_s)
        return state.where is Where.RUNNING
    # Sent first: a ComfyUI that is frozen now still acts on it once it runs again.
    comfy.interrupt(prompt_id, timeout_s)
    comfy.delete_from_queue([prompt_id], timeout_s)
    return prompt_state(comfy, features, prompt_id, timeout_s).where is Where.RUNNING


def _wait_stopped(
    comfy: ComfyClient, features: Features, prompt_id: str, sock: ComfySocket | None, grace_s: float
) -> str | None:
    """Wait for the prompt to stop; where it stopped ("node 3 (KSampler)", or "" if unknown), None if it did not.

    The job's socket says it (`execution_interrupted`, then `executing` null for the prompt);
    without a socket, or at the end of the grace, ComfyUI is asked where the prompt is.
    """
    deadline = time.monotonic() + grace_s
    where, ended = _frames_until_stopped(sock, prompt_id, deadline)
    if ended:
        return where
    while True:
        try:
            if prompt_state(comfy, features, prompt_id, STOP_REQUEST_TIMEOUT_S).where is not Where.RUNNING:
                return where
        except ComfyError:
            pass  # a ComfyUI too busy to answer has not stopped yet
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def _frames_until_stopped(sock: ComfySocket | None, prompt_id: str, deadline: float) -> tuple[str, bool]:
    """(where the interrupt took effect, or ""; whether the socket saw the prompt end) by `deadline`."""
    where = ""
    while sock is not None and sock.is_open and time.monotonic() < deadline:
        try:
            message = sock.receive(max(deadline - time.monotonic(), 0.0))
        except Dropped:
            break
        frame = Frame.from_message(message)
        if frame.prompt_id != prompt_id:
            continue
        if frame.failure is not None:
            where = frame.failure.where
        elif frame.ends_prompt:
            return where, True
    return where, False
