"""Every use of the runpod SDK's private parts, in one place (runpod 1.12).

The SDK's public surface (`serverless.start`, `register_fitness_check`, `progress_update`,
`concurrency_modifier`) does not cover four things the handler needs, so it reaches below it,
and only here. tests/test_runpod_sdk.py pins each of them (names, signatures, behaviour), so an
SDK upgrade that moves one fails that test instead of breaking the worker silently:

- `post_progress`: `rp_progress._thread_target`, the body of `progress_update` without its
  thread per call, so one sender thread per job posts its reports in order (progress.py).
- `report_unhealthy`: `rp_fitness._report_unhealthy`, what a failing fitness check sends to
  RunPod before the worker exits, for a ComfyUI that never became ready.
- `route_logger`: `RunPodLogger.log` replaced, so the SDK's lines reach `logging` in the
  handler's format while the SDK's own level rule (`rp_logger.LOG_LEVELS`) still decides
  what is printed (logs.py).
- `serve_local_api` and `rewrite_test_input`: the SDK reads its options from `sys.argv` (it
  parses them itself when `serverless` is imported, and again in `start`), so the local API
  and `--test_input` are asked for there; `LocalApiRequest` is the local API's
  request model (`rp_fastapi.DefaultRequest`), built once ahead of time to warm FastAPI.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

# The local API's module, imported now rather than once ComfyUI is ready (it takes ~0.3 s).
from runpod.serverless.modules import rp_fastapi, rp_fitness, rp_logger, rp_progress

# The request model of the SDK's local API routes (to warm FastAPI before it serves).
LocalApiRequest = rp_fastapi.DefaultRequest
FITNESS_CHECK = "comfyui_ready"  # the check name RunPod's fitness_failed event carries

# (self, message, message_level, job_id): the replacement for RunPodLogger.log.
SdkLog = Callable[[Any, Any, str, "str | None"], None]


def post_progress(job: dict[str, Any], payload: dict[str, Any]) -> None:
    """Post one progress report for `job` now, in this thread (progress_update would start one)."""
    rp_progress._thread_target(job, payload)


def report_unhealthy(reason: str) -> None:
    """Tell RunPod why the worker is unhealthy, as a failing fitness check would (best effort).

    Looked up when called: the worker exits right after, and must even if an SDK lacks it.
    """
    report = getattr(rp_fitness, "_report_unhealthy", None)
    if report is not None:
        report(FITNESS_CHECK, reason)


def sdk_log_levels() -> list[str]:
    """rp_logger's level names, lowest first ("NOTSET", "TRACE", "DEBUG", "INFO", "WARN", "ERROR")."""
    return list(rp_logger.LOG_LEVELS)


def route_logger(log: SdkLog) -> None:
    """Every RunPodLogger's `log(message, message_level, job_id)` becomes `log`."""
    rp_logger.RunPodLogger.log = log


def serve_local_api(host: str, port: int) -> None:
    """Have `serverless.start` serve the local API on host:port (it reads sys.argv)."""
    sys.argv += ["--rp_serve_api", "--rp_api_host", host, "--rp_api_port", str(port)]


def rewrite_test_input(request: Callable[[str], dict[str, Any]]) -> bool:
    """Whether --test_input was given; its value is replaced by `request(value)` as JSON, as the SDK expects."""
    for index, arg in enumerate(sys.argv):
        if arg == "--test_input" and index + 1 < len(sys.argv):
            sys.argv[index + 1] = json.dumps(request(sys.argv[index + 1]))
            return True
        if arg.startswith("--test_input="):
            sys.argv[index] = "--test_input=" + json.dumps(request(arg.partition("=")[2]))
            return True
    return False
