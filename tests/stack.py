"""Boots the real worker stack for tests: services/entrypoint -> supervisord -> programs.

Each `Stack` runs in its own copy of the project tree (so it has its own `.run/`, control
socket and stand-in ComfyUI folders) with free loopback ports, the stand-in ComfyUI as
COMFYUI_DIR and the checkout's venv as both the worker's and ComfyUI's venv. Everything
it starts is real: supervisord with supervisord.conf, the launch scripts, the sidecar,
the handler with the runpod SDK's local API.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.processes import Process, free_port

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".run", "__pycache__", ".pytest_cache", ".ruff_cache", "bench", "tests", "deploy"
)


def copy_project(destination: Path) -> Path:
    """A private copy of the project (code, services, stand-in) to run one stack from."""
    home = destination / "worker"
    shutil.copytree(REPO, home, ignore=_COPY_IGNORE, symlinks=True)
    return home


class Stack:
    """One running worker stack, with helpers to talk to each of its parts."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.home = copy_project(tmp_path)
        self.comfyui_dir = self.home / "standin" / "ComfyUI"  # the "volume's" ComfyUI
        self.data_dir = self.home / ".run" / "comfyui"  # the worker's own folders (WORKER_DATA_DIR)
        self.comfy_port = free_port()
        self.sidecar_port = free_port()
        self.api_port = free_port()
        self.env = self._environment(env or {})
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None
        self._entrypoint: Process | None = None

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "COMFY", "S3_", "BUCKET_"))}
        env.update(
            WORKER_VENV=str(VENV),
            COMFYUI_DIR=str(self.comfyui_dir),
            COMFYUI_VENV=str(VENV),
            COMFY_VENV_REQUIRED_MODULES="aiohttp PIL",
            COMFY_PORT=str(self.comfy_port),
            SIDECAR_HOST="127.0.0.1",
            SIDECAR_PORT=str(self.sidecar_port),
            LOCAL_API_PORT=str(self.api_port),
            HANDLER_STOP_WAIT_S="10",
        )
        env.update(extra)
        return env

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Stack:
        self._entrypoint = Process("entrypoint", [str(self.home / "services" / "entrypoint")], self.env, self.home)
        self.process = self._entrypoint.popen
        self.lines = self._entrypoint.lines
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        """Signal the entrypoint and return its exit code."""
        assert self.process
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait_exit(timeout_s)

    def wait_exit(self, timeout_s: float = 60) -> int:
        assert self.process
        code = self.process.wait(timeout=timeout_s)
        if self._entrypoint:
            self._entrypoint.join_output()
        return code

    def kill_everything(self) -> None:
        """Clean-up after a test: no process may outlive it.

        supervisord puts each program in its own process group, so the entrypoint's group
        is not enough: every descendant is found first, then all are killed.
        """
        if not self.process or self.process.poll() is not None:
            return
        try:
            family = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for member in [psutil.Process(self.process.pid), *family]:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        self.process.wait(timeout=10)

    # -- waiting -------------------------------------------------------------------

    def wait_for(self, predicate, timeout_s: float = 60, interval_s: float = 0.05, what: str = "") -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.process and self.process.poll() is not None:
                raise AssertionError(f"stack exited ({self.process.returncode}) waiting for {what}:\n{self.output()}")
            time.sleep(interval_s)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}:\n{self.output()}")

    def wait_accepting_jobs(self, timeout_s: float = 60) -> None:
        """Until the runpod local API answers, which the handler starts only after readiness."""

        def answering() -> bool:
            try:
                return requests.get(f"{self.api_url}/", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        self.wait_for(answering, timeout_s, what="the handler's local API")

    def wait_running(
        self, programs: tuple[str, ...] = ("comfyui", "sidecar", "handler"), timeout_s: float = 60
    ) -> None:
        """Until supervisord shows every program RUNNING (ComfyUI needs `startsecs` first)."""

        def running() -> bool:
            infos = self.rpc().supervisor.getAllProcessInfo()
            return all(i["statename"] == "RUNNING" for i in infos if i["name"] in programs)

        self.wait_for(running, timeout_s, 0.2, what=f"{programs} RUNNING")

    def wait_line(self, text: str, timeout_s: float = 60) -> str:
        return self.wait_for(lambda: next((ln for ln in self.lines if text in ln), None), timeout_s, what=text)

    # -- talking to the parts ----------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sidecar_url(self) -> str:
        return f"http://127.0.0.1:{self.sidecar_port}"

    @property
    def comfy_url(self) -> str:
        return f"http://127.0.0.1:{self.comfy_port}"

    def runsync(self, job_input: dict, timeout_s: float = 120) -> dict:
        response = requests.post(f"{self.api_url}/runsync", json={"input": job_input}, timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def supervisorctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        command = [str(VENV / "bin" / "supervisorctl"), "-c", str(self.home / "supervisord.conf"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=check)

    def rpc(self):
        from worker_common.supervisor_rpc import supervisor_proxy

        return supervisor_proxy(self.home / ".run" / "supervisor.sock")

    def pid_of(self, program: str) -> int:
        return self.rpc().supervisor.getProcessInfo(program)["pid"]

    def output(self) -> str:
        return "\n".join(self.lines[-200:])
