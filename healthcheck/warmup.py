"""WARMUP_WORKFLOW: run one workflow through ComfyUI before reporting the worker ready.

The first job on a fresh worker otherwise pays for loading models from the volume into
VRAM. With a warm-up workflow (API format, the same JSON a job sends), the sidecar queues
it once, right after ComfyUI first answers, waits for it to finish (polling /history,
which also works if the run outlives a WebSocket), and only then lets the state become
ready. It runs in its own thread so the probe loop keeps ticking (and /livez stays 200).

A failed warm-up is reported in the readiness reason and leaves the worker starting; it is
tried again only when ComfyUI restarts (a broken workflow would fail the same way again)
or when ComfyUI was merely unreachable. If it never succeeds, the start-up window ends in
`failed`, as for a ComfyUI that never answers.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker_common.comfy_client import ComfyClient, ComfyError, ComfyHTTPError, ComfyUnavailable
from worker_common.comfy_protocol import PREFIX_INPUT, HistoryEntry, Rejection
from worker_common.layout import Layout

log = logging.getLogger(__name__)

POLL_S = 0.1


class WarmupState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class WarmupFailed(Exception):
    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


def load_workflow(path: Path) -> dict[str, Any]:
    """An API-format graph; also accepts {"prompt": graph} and RunPod's {"input": {"workflow": graph}}."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WarmupFailed(f"cannot read {path}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("input"), dict) and "workflow" in data["input"]:
        data = data["input"]["workflow"]
    elif isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) for v in data.values()):
        raise WarmupFailed(f"{path} is not an API-format workflow (node id -> {{class_type, inputs}})")
    return data


def _rejection(error: ComfyHTTPError) -> str:
    answer = Rejection.from_body(error.json())
    if answer is None:
        return str(error)
    details = [
        f"node {node.node_id} ({node.class_type or '?'}): {node.message} {node.details}".strip()
        for node in answer.node_errors[:4]
    ]
    top = answer.error.message + (f" ({answer.error.details})" if answer.error.details and not details else "")
    return "; ".join([top, *details]) if details else (top or str(error))


def in_folder(workflow: dict[str, Any], folder: str) -> dict[str, Any]:
    """The workflow with every `filename_prefix` under `folder`, so its outputs can be removed after."""
    return {
        node_id: {
            **node,
            "inputs": {
                name: f"{folder}/{value}" if name == PREFIX_INPUT and isinstance(value, str) else value
                for name, value in (node.get("inputs") or {}).items()
            },
        }
        for node_id, node in workflow.items()
    }


def run_workflow(client: ComfyClient, workflow: dict[str, Any], timeout_s: float, layout: Layout) -> float:
    """Queue `workflow`, wait until it completes, remove what it wrote; its duration or WarmupFailed."""
    started = time.monotonic()
    prompt_id = str(uuid.uuid4())
    folder = f"warmup-{prompt_id[:8]}"
    try:
        client.queue_prompt(in_folder(workflow, folder), client_id=f"warmup-{prompt_id[:8]}", prompt_id=prompt_id)
    except ComfyHTTPError as error:
        raise WarmupFailed(f"ComfyUI rejected it: {_rejection(error)}") from None
    except ComfyUnavailable as error:
        raise WarmupFailed(f"ComfyUI did not answer: {error}", retry=True) from None
    try:
        _wait(client, prompt_id, started + timeout_s, timeout_s)
    finally:
        _remove_outputs(client, prompt_id, layout, folder)
    return time.monotonic() - started


def _wait(client: ComfyClient, prompt_id: str, deadline: float, timeout_s: float) -> None:
    while time.monotonic() < deadline:
        try:
            entry = client.history(prompt_id, timeout_s=min(5.0, max(0.1, deadline - time.monotonic())))
        except ComfyUnavailable as error:
            raise WarmupFailed(f"ComfyUI stopped answering: {error}", retry=True) from None
        except (ComfyError, ValueError):
            entry = {}
        if entry:
            finished = HistoryEntry.from_entry(entry)
            if finished.failure is not None:
                raise WarmupFailed(finished.failure.summary())
            if finished.failed:
                raise WarmupFailed("finished with an error")
            return
        time.sleep(POLL_S)
    with contextlib.suppress(ComfyError):
        client.interrupt(prompt_id)
        client.delete_from_queue([prompt_id])
    raise WarmupFailed(f"did not finish within WARMUP_TIMEOUT_S={timeout_s:g} s")


def _remove_outputs(client: ComfyClient, prompt_id: str, layout: Layout, folder: str) -> None:
    """Warm-up outputs must not stay after every cold start: its folder, its previews, its history."""
    paths = [layout.output / folder]
    with contextlib.suppress(ComfyError):
        entry = client.history(prompt_id)
        paths += layout.output_paths(HistoryEntry.from_entry(entry).outputs) if entry else []
        client.delete_history([prompt_id])
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


class Warmup:
    """The warm-up's lifecycle, driven by the probe loop through `needed` and `start_if_due`."""

    def __init__(
        self,
        path: Path | None,
        comfy_host: str,
        comfy_port: int,
        timeout_s: float,
        layout: Layout,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.layout = layout
        self.comfy_host = comfy_host
        self.comfy_port = comfy_port
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self.state = WarmupState.PENDING if path else WarmupState.DONE
        self._error = ""
        self._retry = False
        self._failed_pid: int | None = None
        self._started_at = 0.0
        self._thread: threading.Thread | None = None
        self.on_finish: Callable[[], None] | None = None  # the probe loop's wake-up

    @property
    def needed(self) -> bool:
        """True until the warm-up has succeeded once (always False without a workflow)."""
        return self.state is not WarmupState.DONE

    def start_if_due(self, comfy_pid: int | None) -> None:
        """Called when ComfyUI answers: start (or retry) the run when it makes sense."""
        with self._lock:
            if self.state is WarmupState.PENDING or (
                self.state is WarmupState.FAILED and (self._retry or comfy_pid != self._failed_pid)
            ):
                self.state = WarmupState.RUNNING
                self._started_at = self._clock()
                self._thread = threading.Thread(target=self._run, args=(comfy_pid,), name="warmup", daemon=True)
                self._thread.start()

    def _run(self, comfy_pid: int | None) -> None:
        log.info("warm-up: running %s", self.path)
        client = ComfyClient(self.comfy_host, self.comfy_port, timeout_s=10.0)
        try:
            assert self.path is not None
            duration = run_workflow(client, load_workflow(self.path), self.timeout_s, self.layout)
            log.info("warm-up: done in %.2f s", duration)
            self._finish(WarmupState.DONE)
        except WarmupFailed as error:
            log.warning("warm-up failed: %s", error)
            self._finish(WarmupState.FAILED, str(error), error.retry, comfy_pid)
        except Exception as error:  # a bug here must not leave readiness waiting forever
            log.exception("warm-up crashed")
            self._finish(WarmupState.FAILED, f"{type(error).__name__}: {error}", False, comfy_pid)
        finally:
            client.close()
            if self.on_finish:
                self.on_finish()

    def _finish(self, state: WarmupState, error: str = "", retry: bool = False, pid: int | None = None) -> None:
        with self._lock:
            self.state, self._error, self._retry, self._failed_pid = state, error, retry, pid

    def describe(self) -> str:
        """The readiness reason while the warm-up holds readiness back."""
        if self.state is WarmupState.RUNNING:
            return f"ComfyUI answers; warm-up workflow {self.path} running for {self._clock() - self._started_at:.1f} s"
        if self.state is WarmupState.FAILED:
            return f"ComfyUI answers but the warm-up workflow {self.path} failed: {self._error}"
        return f"ComfyUI answers; warm-up workflow {self.path} about to run"
