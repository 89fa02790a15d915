"""One format per program: the handler's own lines, the runpod SDK's and uvicorn's look alike.

The rules over a whole `make run` are checked in test_make_run.py; here the handler's logging
set-up runs in a fresh interpreter with the real runpod SDK and uvicorn, and the log
forwarder's blank-line rule is checked on its own.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from listeners.log_forwarder import LineJoiner
from tests.log_format import PYTHON_LOGGING, violations

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import contextlib, logging
from handler import logs
logs.configure()
from runpod.serverless.modules.rp_logger import RunPodLogger
sdk = RunPodLogger()
sdk.info("Starting API server.")
sdk.info("Started.", "job-1")
sdk.info("Finished.", "job-1")
sdk.debug("a debug line the SDK keeps to itself at INFO")
sdk.error("Captured Handler Exception", "job-2")
sdk.info("x" * 10000)
import uvicorn.config
config = uvicorn.config.Config(app=None, log_level="info", access_log=False)
config.configure_logging()
logging.getLogger("uvicorn.error").info("Started server process [1]")
with contextlib.redirect_stdout(logs.PrintsToLog()):
    print("--- Starting Serverless Worker |  Version 1.12.0 ---")
"""


def handler_lines(**env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")} | env
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=environ, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "nothing bypasses the handler's format on stderr either"
    return result.stdout.splitlines()


def test_sdk_uvicorn_and_prints_share_the_handler_format() -> None:
    lines = handler_lines(RUNPOD_DEBUG_LEVEL="INFO")
    assert [line for line in lines if not PYTHON_LOGGING.match(line)] == []
    messages = [line.split(": ", 1)[1] for line in lines]
    assert messages[:2] == ["Starting API server.", "job job-2: Captured Handler Exception"]
    assert " ERROR runpod: " in lines[1]
    assert len(messages[2]) < 4200 and "characters left out" in messages[2], "a huge SDK message is shortened"
    assert lines[3].endswith(" INFO uvicorn: Started server process [1]")
    assert lines[4].endswith(" INFO runpod: --- Starting Serverless Worker |  Version 1.12.0 ---")
    assert len(lines) == 5


def test_the_sdk_keeps_its_own_level_and_its_job_lines_go_to_debug() -> None:
    lines = handler_lines(RUNPOD_DEBUG_LEVEL="ERROR")
    assert [line.split(": ", 1)[1] for line in lines if " runpod: " in line][:1] == [
        "job job-2: Captured Handler Exception"
    ]
    assert not any("Starting API server." in line for line in lines)


def test_at_the_sdk_default_level_its_debug_lines_are_printed_in_the_handler_format() -> None:
    lines = handler_lines()  # no RUNPOD_DEBUG_LEVEL: the SDK logs at DEBUG
    assert [line for line in lines if not PYTHON_LOGGING.match(line)] == []
    assert any(line.endswith(" DEBUG runpod: a debug line the SDK keeps to itself at INFO") for line in lines)
    assert any(line.endswith(" DEBUG runpod: job job-1: Started.") for line in lines)


def test_forwarder_leaves_out_blank_lines() -> None:
    out = io.StringIO()
    LineJoiner(out).feed("comfyui", "Starting server\n\n   \r\nTo see the GUI go to: http://127.0.0.1:8188\n")
    assert out.getvalue().splitlines() == [
        "[comfyui] Starting server",
        "[comfyui] To see the GUI go to: http://127.0.0.1:8188",
    ]
    assert violations(out.getvalue().splitlines()) == []


def test_the_rules_catch_a_second_format_and_unnamed_lines() -> None:
    assert violations(["[handler] INFO   | Started.", "[handler] INFO:     Uvicorn running", "no prefix"]) == [
        "[handler] INFO   | Started.",
        "[handler] INFO:     Uvicorn running",
        "no prefix",
    ]
