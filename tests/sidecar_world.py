"""The sidecar tests' World: a stand-in ComfyUI, a small supervisord, the sidecar (no tests here).

Everything here starts real processes on loopback with free ports, in short temporary
directories (supervisord's unix socket path must stay under ~100 characters), and kills
them by pid at the end. The full worker stack lives in tests/stack.py; these pieces are
smaller so each sidecar test can shape exactly the situation it checks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import requests

from tests.processes import Process, free_port, wait_until
from worker_common.layout import Layout

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STANDIN_DIR = REPO / "standin" / "ComfyUI"
STANDIN_MAIN = STANDIN_DIR / "main.py"
STARTUP_TIMEOUT_S = 30.0


def short_tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))


def worker_layout(run_dir: Path) -> Layout:
    """The worker's own folders under `run_dir`, with the checkout's stand-in as the volume's ComfyUI."""
    layout = Layout(STANDIN_DIR, Path(PYTHON).parent.parent, run_dir / "worker", "test")
    layout.prepare()
    return layout


def standin_command(port: int, run_dir: Path) -> list[str]:
    """The stand-in writing only into the worker's folders under `run_dir` (never into the checkout)."""
    folders = worker_layout(run_dir).comfy_args()
    return [PYTHON, str(STANDIN_MAIN), "--listen", "127.0.0.1", "--port", str(port), *folders]


def launched_standin_command(port: int, run_dir: Path) -> str:
    """The stand-in as supervisord starts it through services/comfyui: a launch line naming the pid, then exec."""
    launch_line = f"starting ComfyUI from {STANDIN_DIR} with {PYTHON}: main.py (pid $$)"
    return f"""/bin/bash -c 'echo "{launch_line}"; exec {" ".join(standin_command(port, run_dir))}'"""


def http_get(url: str, timeout_s: float = 5.0) -> requests.Response | None:
    try:
        return requests.get(url, timeout=timeout_s)
    except requests.RequestException:
        return None


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STANDIN_", "COMFY", "SIDECAR_", "PORT_HEALTH", "WARMUP_", "PROBE_", "PROMETHEUS_"))
    }
    env.pop("WORKER_STARTED_AT", None)
    env.pop("UNREADY_AFTER_FAILURES", None)
    env.pop("STARTUP_PROBE_INTERVAL_S", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class MiniSupervisor:
    """supervisord with a minimal config: the stand-in ComfyUI as program `comfyui`.

    `extra_programs` maps a program name to a command line, for a handler-like process.
    """

    def __init__(
        self,
        run_dir: Path,
        comfy_port: int,
        standin_env: dict[str, str] | None = None,
        startsecs: int = 1,
        startretries: int = 2,
        autostart: bool = True,
        extra_programs: dict[str, list[str]] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.comfy_port = comfy_port
        self.socket = run_dir / "supervisor.sock"
        self.conf = run_dir / "supervisord.conf"
        env_items = ",".join(f'{k}="{v}"' for k, v in (standin_env or {}).items())
        sections = [
            "[unix_http_server]",
            f"file={self.socket}",
            "chmod=0700",
            "[supervisord]",
            "nodaemon=true",
            "silent=true",
            f"logfile={run_dir}/supervisord.log",
            f"pidfile={run_dir}/supervisord.pid",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{self.socket}",
            "[program:comfyui]",
            "command=" + launched_standin_command(comfy_port, run_dir),
            f"directory={STANDIN_DIR}",
            "priority=100",
            f"autostart={'true' if autostart else 'false'}",
            f"startsecs={startsecs}",
            f"startretries={startretries}",
            "autorestart=true",
            "stopsignal=INT",
            "stopwaitsecs=1",
            "redirect_stderr=true",
            f"stdout_logfile={run_dir}/comfyui.log",
        ]
        if env_items:
            sections.append(f"environment={env_items}")
        for name, command in (extra_programs or {}).items():
            sections += [
                f"[program:{name}]",
                "command=" + " ".join(command),
                f"directory={REPO}",
                "priority=300",
                "startsecs=0",
                "autorestart=true",
                "redirect_stderr=true",
                f"stdout_logfile={run_dir}/{name}.log",
            ]
        self.conf.write_text("\n".join(sections) + "\n")
        env = base_env(**(extra_env or {}))
        self.proc = Process("supervisord", [str(Path(PYTHON).parent / "supervisord"), "-c", str(self.conf)], env)
        wait_until(self._answers, what="supervisord's socket")

    def rpc(self) -> Any:
        from worker_common.supervisor_rpc import supervisor_proxy

        return supervisor_proxy(self.socket).supervisor

    def _answers(self) -> bool:
        try:
            self.rpc().getState()
            return True
        except (OSError, xmlrpc.client.Error):
            if self.proc.popen.poll() is not None:
                raise AssertionError(f"supervisord exited: {self.proc.output()}") from None
            return False

    def info(self, name: str = "comfyui") -> dict[str, Any]:
        return self.rpc().getProcessInfo(name)

    def close(self) -> None:
        with contextlib.suppress(OSError, xmlrpc.client.Error, subprocess.TimeoutExpired):
            self.rpc().shutdown()
            self.proc.popen.wait(timeout=20)
        self.proc.stop(sig=signal.SIGTERM)


class Sidecar:
    """`python -m healthcheck serve` as its own process, as supervisord would run it."""

    def __init__(self, run_dir: Path, comfy_port: int, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = base_env(
            WORKER_RUN_DIR=str(run_dir),
            COMFYUI_DIR=str(STANDIN_DIR),
            WORKER_DATA_DIR=str(run_dir / "worker"),
            COMFY_PORT=str(comfy_port),
            SIDECAR_HOST="127.0.0.1",
            SIDECAR_PORT=str(self.port),
            **env,
        )
        self.proc = Process("sidecar", [PYTHON, "-m", "healthcheck", "serve"], full_env)
        wait_until(self._live, what="the sidecar's /livez")

    def _live(self) -> bool:
        if self.proc.popen.poll() is not None:
            raise AssertionError(f"sidecar exited {self.proc.popen.returncode}:\n{self.proc.output()}")
        response = http_get(self.url + "/livez", 1)
        return response is not None and response.status_code == 200

    def readyz(self, wait_s: float | None = None) -> tuple[int, dict[str, Any]]:
        suffix = "" if wait_s is None else f"?wait={wait_s}"
        response = requests.get(self.url + "/readyz" + suffix, timeout=(wait_s or 0) + 10)
        return response.status_code, response.json()

    def state(self) -> str:
        return self.readyz()[1]["state"]

    def wait_state(self, state: str, timeout_s: float = STARTUP_TIMEOUT_S) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            body = self.readyz()[1]
            return body if body["state"] == state else None

        try:
            return wait_until(reached, timeout_s, what=f"state {state}")
        except AssertionError as error:
            raise AssertionError(f"{error}; last /readyz {self.readyz()}\n{self.proc.output()}") from None

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=5).text

    def metrics_with(self, name: str) -> str:
        """A scrape that includes `name` (figures refreshed once per probe interval may lag)."""

        def scrape() -> str | None:
            text = self.metrics()
            return text if name in text else None

        return wait_until(scrape, what=f"{name} in /metrics")

    def close(self) -> int | None:
        return self.proc.stop(sig=signal.SIGTERM)


class World:
    """A temporary run dir with optional supervisord, stand-in and sidecars; all closed at the end."""

    def __init__(self) -> None:
        self.run_dir = short_tmp()
        self.comfy_port = free_port()
        self.closers: list = []

    def supervisor(self, **kwargs) -> MiniSupervisor:
        supervisor = MiniSupervisor(self.run_dir, self.comfy_port, **kwargs)
        self.closers.append(supervisor.close)
        return supervisor

    def sidecar(self, port: int | None = None, **env: str) -> Sidecar:
        env.setdefault("WORKER_STARTED_AT", repr(time.time()))
        sidecar = Sidecar(self.run_dir, self.comfy_port, port, **env)
        self.closers.append(sidecar.close)
        return sidecar

    def standin(self, *args: str, **env: str) -> Process:
        proc = Process("standin", [*standin_command(self.comfy_port, self.run_dir), *args], base_env(**env))
        self.closers.append(lambda: proc.stop(sig=signal.SIGTERM))
        return proc

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install Debian's `prometheus` package (scripts/install-system-deps)"
    return path


def promtool_check(text: str) -> None:
    result = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"promtool check metrics failed:\n{result.stdout}{result.stderr}"


def sample_value(text: str, metric: str, /, **labels: str) -> float | None:
    """The value of one sample in an exposition text, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None
