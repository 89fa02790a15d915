"""Real processes for the handler's tests and benchmark, without supervisord.

`Rig` starts the stand-in ComfyUI (its folders in a temp dir), the real sidecar
(`python -m healthcheck serve`) and the real handler (`python -m handler`, runpod's local
API), each on a free loopback port. The handler can be restarted with other settings
while ComfyUI and the sidecar keep running. Tests that need supervisord (ComfyUI killed
and restarted) use tests/stack.py instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.processes import OnLoopback, Process, answers_200, free_port, wait_until
from worker_common.layout import Layout, worker_id

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python")
STANDIN_MAIN = REPO / "standin" / "ComfyUI" / "main.py"
_SCRUBBED = ("RUNPOD_", "COMFY", "S3_", "BUCKET_", "STANDIN_", "PROMETHEUS_", "WORKER_")


def base_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_SCRUBBED)}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass(frozen=True)
class RigShape:
    """How a test module wants its `rig`: its settings, and whether the handler starts with it."""

    comfy_env: dict[str, str] = field(default_factory=dict)  # the stand-in's (STANDIN_COMFYUI_VERSION, say)
    shared_env: dict[str, str] = field(default_factory=dict)  # the sidecar's and the handler's
    handler_env: dict[str, str] | None = field(default_factory=dict)  # None: the test starts the handler
    prepare: Callable[[Rig], None] = lambda _rig: None  # files the rig needs before it starts


class Rig(OnLoopback):
    """Stand-in ComfyUI + sidecar + handler, all real, on loopback."""

    def __init__(
        self,
        root: Path,
        comfy_env: dict[str, str] | None = None,
        shared_env: dict[str, str] | None = None,
        outputs_on_volume: bool = False,
    ):
        """`shared_env` goes to both the sidecar and the handler (PROMETHEUS_MULTIPROC_DIR, say)."""
        self.root = root
        self.comfy_dir = root / "comfy"  # the "volume's" ComfyUI
        self.data_dir = root / "data"  # the worker's own folders (worker_common.layout)
        for folder in ("input", "output", "models/checkpoints"):
            (self.comfy_dir / folder).mkdir(parents=True, exist_ok=True)
        self.layout = Layout(self.comfy_dir, self.comfy_dir / "com_venv", self.data_dir, worker_id(), outputs_on_volume)
        self.layout.prepare()
        self.comfy_port = free_port()
        self.sidecar_port = free_port()
        self.api_port = free_port()
        self.comfy_env = comfy_env or {}
        self.shared_env = shared_env or {}
        self.comfy: Process | None = None
        self.sidecar: Process | None = None
        self.handler: Process | None = None
        self.session = requests.Session()

    # -- lifecycle ---------------------------------------------------------------

    def start(self, handler_env: dict[str, str] | None = None) -> Rig:
        self.start_without_handler()
        self.start_handler(handler_env)
        return self

    def start_without_handler(self, comfy: bool = True) -> Rig:
        if comfy:
            self.start_comfy()
        self.sidecar = Process("sidecar", [PYTHON, "-m", "healthcheck", "serve"], self._sidecar_env())
        return self

    def start_comfy(self) -> None:
        env = base_env() | self.comfy_env
        command = [PYTHON, str(STANDIN_MAIN), "--listen", "127.0.0.1", "--port", str(self.comfy_port)]
        command += ["--base-directory", str(self.comfy_dir), *self.layout.comfy_args()]
        self.comfy = Process("comfyui", command, env, cwd=STANDIN_MAIN.parent)

    def start_handler(self, env: dict[str, str] | None = None, wait: bool = True) -> Process:
        if self.handler is not None:
            self.handler.stop()
        self.handler = Process("handler", [PYTHON, "-m", "handler"], self.handler_env(env))
        if wait:
            self.wait_accepting_jobs()
        return self.handler

    def in_process_worker(self, monkeypatch: Any, extra: dict[str, str] | None = None) -> Any:
        """The handler's Worker in this process, with the handler's settings (for driving runpod's side by hand)."""
        for name, value in self.handler_env(extra).items():
            monkeypatch.setenv(name, value)
        from handler import config
        from handler.runtime import Runtime
        from handler.worker import Worker

        return Worker(Runtime.build(config.load()))

    def handler_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = base_env()
        env.update(
            COMFY_PORT=str(self.comfy_port),
            COMFYUI_DIR=str(self.comfy_dir),
            WORKER_DATA_DIR=str(self.data_dir),
            WORKER_RUN_DIR=str(self.root / "run"),
            OUTPUTS_ON_VOLUME=str(self.layout.outputs_on_volume).lower(),
            SIDECAR_PORT=str(self.sidecar_port),
            LOCAL_API_PORT=str(self.api_port),
            COMFY_READY_TIMEOUT_S="60",
            RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true",
            UVICORN_LOG_LEVEL="warning",
            IMAGE_DOWNLOAD_ALLOWED_HOSTS="localhost",  # FileServer's host: loopback, which downloads refuse
        )
        env.update(self.shared_env)
        env.update(extra or {})
        return env

    def _sidecar_env(self) -> dict[str, str]:
        env = base_env()
        env.update(
            COMFY_PORT=str(self.comfy_port),
            SIDECAR_PORT=str(self.sidecar_port),
            SIDECAR_HOST="127.0.0.1",
            WORKER_RUN_DIR=str(self.root / "run"),
            COMFYUI_DIR=str(self.comfy_dir),
            WORKER_DATA_DIR=str(self.data_dir),
            COMFY_READY_TIMEOUT_S="60",
            PROBE_INTERVAL_S="0.2",
        )
        env.update(self.shared_env)
        return env

    def stop(self) -> None:
        for process in (self.handler, self.sidecar, self.comfy):
            if process is not None:
                process.stop()
        self.session.close()

    def output(self) -> str:
        return "\n".join(p.output() for p in (self.handler, self.sidecar, self.comfy) if p is not None)

    # -- waiting -----------------------------------------------------------------

    def wait_for(self, predicate, timeout_s: float = 30, interval_s: float = 0.05, what: str = "") -> Any:
        return wait_until(predicate, timeout_s, what, interval_s=interval_s, context=self.output)

    def wait_accepting_jobs(self, timeout_s: float = 60) -> None:
        handler = self.handler
        assert handler is not None

        def handler_exited() -> str | None:
            return None if handler.alive() else f"the handler exited ({handler.popen.returncode})"

        wait_until(
            lambda: answers_200(f"{self.api_url}/"),
            timeout_s,
            "the handler's local API",
            interval_s=0.05,
            ended=handler_exited,
            context=self.output,
        )

    # -- talking to the parts ----------------------------------------------------

    def runsync(self, job_input: Any, timeout_s: float = 60) -> dict[str, Any]:
        response = self.session.post(f"{self.api_url}/runsync", json={"input": job_input}, timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def comfy_get(self, path: str) -> Any:
        return self.session.get(self.comfy_url + path, timeout=10).json()

    def files(self, folder: str) -> list[str]:
        """The files in one of the worker's folders (input, output, temp), as paths relative to it."""
        base = self.layout.folder(folder) or self.data_dir / folder
        # os.walk, not rglob: a job's folder removed by the background clean-up mid-walk is skipped, not an error.
        return sorted(
            os.path.relpath(os.path.join(parent, name), base)
            for parent, _, names in os.walk(base)
            for name in names
            if name != ".gitkeep" and os.path.isfile(os.path.join(parent, name))
        )


class Recorder:
    """A loopback HTTP server that records every POST: RunPod's job-done/progress URL in tests."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    parsed: Any = json.loads(body)
                except ValueError:
                    parsed = body.decode("utf-8", "replace")
                recorder.posts.append((self.path, parsed))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def s3_env(
    endpoint: str, bucket: str, access_key: str = "test", secret_key: str = "test-secret-key", **extra: str
) -> dict[str, str]:
    """The worker's S3 settings for `bucket` at `endpoint` (moto, or a broken stand-in for S3)."""
    return {
        "S3_ENDPOINT_URL": endpoint,
        "S3_BUCKET_NAME": bucket,
        "S3_BUCKET_CREDS_ACCESS_KEY_ID": access_key,
        "S3_BUCKET_CREDS_SECRET_ACCESS_KEY": secret_key,
        "S3_REGION": "us-east-1",
        **extra,
    }


class MotoServer:
    """moto's S3-compatible server on loopback (or on `host`: podman's bridge, for a container to reach)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        moto = str(Path(sys.executable).parent / "moto_server")
        if not Path(moto).exists():
            moto = str(REPO / ".venv" / "bin" / "moto_server")
        self.process = Process("moto", [moto, "-H", host, "-p", str(self.port)], base_env())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                requests.get(self.url, timeout=1)
                return
            time.sleep(0.1)
        raise AssertionError(f"moto_server did not start\n{self.process.output()}")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
        )

    def stop(self) -> None:
        self.process.stop()


class FileServer:
    """A loopback HTTP server of fixed files (path -> bytes); 404 for anything else."""

    def __init__(self, files: dict[str, bytes]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = files.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://localhost:{self.server.server_address[1]}"  # Rig allows this host name

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
