"""`python -m handler`: check the settings, wait for ComfyUI, then serve jobs with runpod.

Off RunPod (no RUNPOD_WEBHOOK_GET_JOB) and without --test_input it serves runpod's local
API on LOCAL_API_HOST:LOCAL_API_PORT. `--test_input` takes inline JSON or a file path (a
request `{"input": {...}}`, its input alone, or an API-format workflow), runs that one job
and exits 0 or 1 with its status.

Exit codes: 3 when ComfyUI is not ready within COMFY_READY_TIMEOUT_S of the container's
start (the watchdog makes it the container's exit code), 78 for a configuration error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import runpod
import websocket

from worker_common.contract import PROGRAM_HANDLER, ExitCode
from worker_common.settings import ConfigError, cannot_listen, record_config_error

from . import config as handler_config
from . import logs, metrics, runpod_sdk
from .cleanup import clear_leftovers
from .runpod_sdk import LocalApiRequest
from .runtime import Runtime
from .worker import Worker

log = logging.getLogger("handler")


def main() -> None:
    logs.configure()
    _exit_normally_on_sigterm()
    test_input = _test_input_given()
    try:
        config = handler_config.load()
        on_runpod = config.on_runpod and not test_input
        if not on_runpod and not test_input:
            _check_free(config.local_api_host, config.local_api_port)
        rt = Runtime.build(config)
    except ConfigError as error:
        log.error("configuration error: %s", error)
        sys.exit(record_config_error(PROGRAM_HANDLER, error))
    for line in handler_config.ignored_settings():
        log.warning(line)
    if config.ws_trace:
        websocket.enableTrace(True, handler=logging.NullHandler())  # the root's handler prints it
    metrics.initialise()
    if on_runpod:
        # Fitness checks run before the worker takes jobs, and only on RunPod.
        def comfyui_ready() -> None:
            wait_for_comfyui(rt, on_runpod=True)

        runpod.serverless.register_fitness_check(comfyui_ready)
    else:
        if not test_input:
            _warm_local_api()
        wait_for_comfyui(rt, on_runpod=False, stack_handler=not test_input)
    if not on_runpod and not test_input:
        runpod_sdk.serve_local_api(config.local_api_host, config.local_api_port)
    worker = Worker(rt)
    with contextlib.redirect_stdout(logs.PrintsToLog()):
        runpod.serverless.start({"handler": worker.handler, "concurrency_modifier": worker.concurrency})


def _exit_normally_on_sigterm() -> None:
    """End on SIGTERM (supervisord's stop) through SystemExit, as the runpod SDK ends on SIGINT.

    uvicorn, serving the local API, catches SIGTERM, drains its requests, then raises the signal
    again under the handler it found: with the default action the process would die at once and
    cut off the clean-up of the last job, still running in its thread (ComfyUI then logs a lost
    connection). A normal exit waits for that thread. On RunPod the SDK installs its own handler.
    """
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))


def wait_for_comfyui(rt: Runtime, on_runpod: bool, stack_handler: bool = True) -> None:
    """Block until the sidecar says ComfyUI is ready; exit 3 with the reason at the deadline.

    The stack's own handler then clears what an earlier one left; `--test_input` (run beside the
    stack's handler, whose prompts ComfyUI may be running) leaves ComfyUI's queue and history alone.
    """
    config = rt.config
    status = rt.gate.wait_ready(config.ready_deadline)
    if not status.ready:
        line = (
            f"ComfyUI was not ready within COMFY_READY_TIMEOUT_S={config.ready_timeout_s:g} s "
            f"of the container's start: {status.describe()}"
        )
        log.error(line)
        if on_runpod:
            runpod_sdk.report_unhealthy(line)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(ExitCode.NOT_READY)
    if stack_handler:
        clear_leftovers(rt.comfy, rt.cleaner)
    log.info(
        "ComfyUI is ready %.2f s after the container's start; accepting jobs (%s at a time; files in %s)",
        time.time() - config.started_at,
        config.pipeline_depth or f"up to {config.pipeline_max_depth}, as measured,",
        config.layout.data_dir,
    )


def _check_free(host: str, port: int) -> None:
    """Raise ConfigError when the local API could not listen on `host:port` (as uvicorn binds it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise cannot_listen(host, port, "LOCAL_API_PORT", error) from None


def _warm_local_api() -> None:
    """Build a throwaway FastAPI route on the SDK's request model while ComfyUI starts.

    The first FastAPI app of a process costs about 40 ms of pydantic and FastAPI set-up; paid
    here, it no longer delays the local API from answering once ComfyUI is ready.
    """
    from fastapi import APIRouter, FastAPI

    async def route(job: LocalApiRequest) -> dict:
        return {}

    router = APIRouter()
    router.add_api_route("/warm", route, methods=["POST"], response_model_exclude_none=True)
    FastAPI().include_router(router)


def _test_input_given() -> bool:
    """Whether --test_input was given; its value becomes the request runpod expects (see _test_request)."""
    return runpod_sdk.rewrite_test_input(_test_request)


def _test_request(value: str) -> dict[str, Any]:
    """The request `{"input": ...}` from inline JSON or a file: a request, its input alone, or a workflow."""
    body = _json_or_file(value)
    if not isinstance(body, dict):
        _test_input_error(f"{value!r:.80} is JSON but not an object")
    if _is_workflow(body):
        body = {"workflow": body}
    return body if "input" in body else {"input": body}


def _is_workflow(body: dict[str, Any]) -> bool:
    """An API-format workflow (ComfyUI's "Export (API)"): every value is a node with a class_type."""
    return bool(body) and all(isinstance(node, dict) and "class_type" in node for node in body.values())


def _json_or_file(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        pass
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        _test_input_error(f"{value!r:.80} is neither JSON nor a readable file")
    try:
        return json.loads(text)
    except ValueError as error:
        _test_input_error(f"{path} is not a JSON file: {error}")


def _test_input_error(problem: str) -> NoReturn:
    log.error(
        "--test_input: %s; give a request file or inline JSON: %s, its input alone, or a workflow in API format",
        problem,
        '{"input": {"workflow": {...}}}',
    )
    sys.exit(ExitCode.CONFIG)


if __name__ == "__main__":
    main()
