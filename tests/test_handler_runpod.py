"""The handler as RunPod runs it (RUNPOD_WEBHOOK_GET_JOB set): jobs taken from the job-take URL,
results posted back, the readiness gate run as a runpod fitness check. RunPod's side is a
loopback server that hands out one job and records what the worker sends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.handler_harness import PYTHON, Process, Rig

JOB = {
    "id": "rp-job-1",
    "input": {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFF0000}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "rp"}},
        }
    },
}


class FakeRunPod:
    """Job-take (one job, then 204; singular and batch forms), job-done and ping endpoints, recording every request."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        pending = [job]
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, None))
                if self.path.startswith("/job-take/") and pending:
                    self._reply(200, json.dumps(pending.pop()).encode())
                elif self.path.startswith("/job-take-batch/") and pending:
                    self._reply(200, json.dumps([pending.pop()]).encode())
                else:
                    self._reply(204, b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append(("POST", self.path, json.loads(body)))
                self._reply(200, b"")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                if body:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def env(self) -> dict[str, str]:
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/job-take/$ID?x=1",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/done/$ID?x=1",
            "RUNPOD_WEBHOOK_PING": f"{self.url}/ping/$RUNPOD_POD_ID",
            "RUNPOD_POD_ID": "pod-1",
        }

    def results(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.requests if method == "POST" and path.startswith("/done/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def runpod_api() -> Iterator[FakeRunPod]:
    fake = FakeRunPod(JOB)
    yield fake
    fake.close()


def test_on_runpod_a_job_is_taken_run_and_its_result_posted(tmp_path: Path, runpod_api: FakeRunPod) -> None:
    rig = Rig(tmp_path).start_without_handler()
    handler = Process("handler", [PYTHON, "-m", "handler"], rig.handler_env(runpod_api.env()))
    try:
        rig.wait_for(lambda: runpod_api.results(), 30, what="the job's result")
        [result] = runpod_api.results()
        [item] = result["output"]["images"]
        assert (item["type"], item["mime"]) == ("base64", "image/png")
        assert any("Fitness check passed: comfyui_ready" in line for line in handler.lines), handler.output()
    finally:
        handler.stop()
        rig.stop()


def test_on_runpod_comfyui_never_ready_is_reported_unhealthy_and_exits_3(
    tmp_path: Path, runpod_api: FakeRunPod
) -> None:
    rig = Rig(tmp_path).start_without_handler(comfy=False)
    never_ready = {"COMFY_READY_TIMEOUT_S": "1", "WORKER_STARTED_AT": str(time.time())}
    env = rig.handler_env({**runpod_api.env(), "RUNPOD_AI_API_KEY": "rp-key", **never_ready})
    handler = Process("handler", [PYTHON, "-m", "handler"], env)
    try:
        assert handler.popen.wait(60) == 3, handler.output()
        pings = [urlsplit(path) for method, path, _ in runpod_api.requests if path.startswith("/ping/pod-1")]
        [query] = [parse_qs(ping.query) for ping in pings]
        assert (query["status"], query["check"]) == (["unhealthy"], ["comfyui_ready"])
        assert query["reason"][0].startswith("ComfyUI was not ready within COMFY_READY_TIMEOUT_S=1 s")
        assert not any(path.startswith("/job-take/") for _, path, _ in runpod_api.requests), "no job is taken"
    finally:
        handler.stop()
        rig.stop()
