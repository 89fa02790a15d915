"""The runpod SDK's private parts the handler uses (handler/runpod_sdk.py), pinned.

Each use is checked for its name and signature, and for what the handler relies on it to do,
against the installed SDK: an upgrade that renames, re-signs or changes one fails here. The
network-facing ones run in a fresh interpreter (the SDK reads its URLs from the environment
when imported) against a loopback server that records what arrives.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import runpod.serverless
from runpod.serverless.modules import rp_fastapi, rp_fitness, rp_logger, rp_progress

from handler import runpod_sdk

REPO = Path(__file__).resolve().parent.parent


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_private_names_have_the_signatures_used() -> None:
    assert _parameters(rp_progress._thread_target) == ["job", "progress"]
    assert _parameters(rp_fitness._report_unhealthy) == ["check", "reason"]
    assert _parameters(rp_logger.RunPodLogger.log) == ["self", "message", "message_level", "job_id"]
    assert rp_logger.LOG_LEVELS == ["NOTSET", "TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
    assert runpod_sdk.sdk_log_levels() == rp_logger.LOG_LEVELS
    assert runpod_sdk.LocalApiRequest is rp_fastapi.DefaultRequest
    assert "input" in {field.name for field in dataclasses.fields(rp_fastapi.DefaultRequest)}


def test_routed_logger_receives_every_level_with_its_job_id() -> None:
    seen: list[tuple[str, str, str | None]] = []
    original = rp_logger.RunPodLogger.log
    try:
        runpod_sdk.route_logger(lambda _self, message, level="INFO", job_id=None: seen.append((message, level, job_id)))
        sdk = rp_logger.RunPodLogger()
        sdk.info("started", "job-1")
        sdk.debug("a detail")
        sdk.error("failed", "job-2")
    finally:
        rp_logger.RunPodLogger.log = original
    assert seen == [("started", "INFO", "job-1"), ("a detail", "DEBUG", None), ("failed", "ERROR", "job-2")]


def test_the_sdk_reads_the_local_api_and_test_input_from_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["handler", "--test_input", "{}"])
    assert runpod_sdk.rewrite_test_input(lambda value: {"input": {"given": value}})
    runpod_sdk.serve_local_api("127.0.0.1", 8123)
    args = runpod.serverless._set_config_args({})["rp_args"]
    assert args["rp_serve_api"] is True
    assert (args["rp_api_host"], args["rp_api_port"]) == ("127.0.0.1", 8123)
    assert args["test_input"] == {"input": {"given": "{}"}}
    assert sys.argv == ["handler"]  # the SDK took every option it was given


def test_rewrite_test_input_with_equals_and_without_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["handler", "--test_input=x"])
    assert runpod_sdk.rewrite_test_input(lambda value: {"input": value})
    assert sys.argv == ["handler", '--test_input={"input": "x"}']
    monkeypatch.setattr(sys, "argv", ["handler"])
    assert not runpod_sdk.rewrite_test_input(lambda value: {"input": value})


class _Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _record

    def log_message(self, *_args: object) -> None:
        pass


SCRIPT = """
from handler import runpod_sdk
runpod_sdk.post_progress({"id": "job-1"}, {"step": 3})
runpod_sdk.report_unhealthy("ComfyUI was not ready")
"""


def test_progress_and_unhealthy_reports_reach_runpod() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    env = {
        **os.environ,
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/done?id=$ID",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping",
        "RUNPOD_AI_API_KEY": "test-key",
        "RUNPOD_POD_ID": "pod-1",
    }
    try:
        subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, check=True, timeout=60, capture_output=True)
    finally:
        server.shutdown()
        server.server_close()
    posts = [(path, body) for method, path, body in _Recorder.received if method == "POST"]
    gets = [path for method, path, _body in _Recorder.received if method == "GET"]
    assert len(posts) == 1 and posts[0][0].startswith("/done?id=job-1")
    assert json.loads(posts[0][1]) == {"status": "IN_PROGRESS", "output": {"step": 3}}
    assert len(gets) == 1
    query = parse_qs(urlsplit(gets[0]).query)
    assert query["status"] == ["unhealthy"]
    assert query["check"] == [runpod_sdk.FITNESS_CHECK]
    assert query["reason"] == ["ComfyUI was not ready"]
