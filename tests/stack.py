"""Boots the real worker stack for tests: services/entrypoint -> supervisord -> programs.

Each `Stack` runs in its own copy of the project tree (so it has its own `.run/`, control
socket and stand-in ComfyUI folders) with free loopback ports, the stand-in ComfyUI as
COMFYUI_DIR and the checkout's venv as both the worker's and ComfyUI's venv. Everything
it starts is real: supervisord with supervisord.conf, the launch scripts, the sidecar,
the handler with the runpod SDK's local API.

Options: `comfyui_dir` (one ComfyUI shared by several stacks), `comfyui_version` (the release
the launcher reads from the install, and the stand-in plays), `comfyui_user` (the user ComfyUI
runs as: give the stack a folder from `traversable_tmp`, see `run_comfyui_as`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.processes import OnLoopback, Process, answers_200, first_line_with, free_port, wait_until
from worker_common.layout import Layout, worker_id

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


def open_to_everyone(folder: Path) -> None:
    """Let every user traverse `folder` and the folders above it."""
    for path in [folder, *folder.parents]:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(stat.S_IMODE(mode) | stat.S_IXOTH | stat.S_IXGRP)


@contextlib.contextmanager
def traversable_tmp() -> Iterator[Path]:
    """A temporary folder every user can traverse, removed afterwards.

    For stacks whose ComfyUI runs as another user: pytest's tmp_path lies under a 0700 folder
    that every pytest run (another one on the same machine, too) makes 0700 again.
    """
    folder = Path(tempfile.mkdtemp(prefix="comfy-worker-test-"))
    open_to_everyone(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def runs_for(user: str, python: Path) -> bool:
    probe = [str(python), "-c", "import aiohttp, PIL"]
    try:
        return subprocess.run(probe, user=user, capture_output=True, timeout=60, check=False).returncode == 0
    except PermissionError:  # the interpreter itself is out of the user's reach
        return False


def venv_for(user: str, root: Path) -> Path:
    """A ComfyUI venv `user` can run with the test venv's packages.

    The test venv itself when `user` can run it; else (its interpreter lies under a folder closed
    to that user, such as pyenv's under /root) a venv made from the system's Python of the same
    version, which sees the test venv's packages through a .pth file.
    """
    if runs_for(user, VENV / "bin" / "python"):
        return VENV
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system_python = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    venv = root / "com_venv"
    if system_python:
        subprocess.run([system_python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        site = venv / "lib" / version / "site-packages"
        (site / "test-venv.pth").write_text(f"{VENV / 'lib' / version / 'site-packages'}\n")
        if runs_for(user, venv / "bin" / "python"):
            return venv
    raise AssertionError(
        f"no {version} that {user} can run: {VENV}'s interpreter ({(VENV / 'bin' / 'python').resolve()}) is under a "
        f"folder closed to it, and there is no system {version} (install Debian's {version}, or let {user} traverse it)"
    )


def declare_flags(comfyui_dir: Path, version: str) -> None:
    """Give a stand-in install the comfy/cli_args.py of the release it will play, as a real install has
    (standin_server/release_files.py); a folder that is no stand-in, or a release it has no flags for, is left as is."""
    writer = comfyui_dir / "standin_server" / "release_files.py"
    if not writer.is_file():
        return
    subprocess.run(
        [sys.executable, "-m", "standin_server.release_files", version],
        cwd=comfyui_dir,
        capture_output=True,
        timeout=60,
    )


class Stack(OnLoopback):
    """One running worker stack, with helpers to talk to each of its parts."""

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str] | None = None,
        *,
        comfyui_dir: Path | None = None,
        comfyui_version: str | None = None,
        comfyui_user: str | None = None,
    ) -> None:
        self.home = copy_project(tmp_path)
        self.comfyui_dir = comfyui_dir or self.home / "standin" / "ComfyUI"
        self.comfy_port = free_port()
        self.sidecar_port = free_port()
        self.api_port = free_port()
        self.env = self._environment(env or {})
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None
        self._entrypoint: Process | None = None
        self._output_file: Path | None = None
        if comfyui_version:
            self.play_version(comfyui_version)
        else:
            declare_flags(Path(self.env["COMFYUI_DIR"]), self.env.get("STANDIN_COMFYUI_VERSION") or "0.3.64")
        if comfyui_user:
            self.run_comfyui_as(comfyui_user, tmp_path)

    def play_version(self, version: str) -> None:
        """The launcher reads `version` from the install; the stand-in plays it (STANDIN_COMFYUI_VERSION)."""
        self.env["STANDIN_COMFYUI_VERSION"] = version
        version_file = self.comfyui_dir / "comfyui_version.py"
        if not version_file.exists():  # a stand-in that reads its version from the environment keeps its own
            version_file.write_text(f'__version__ = "{version}"\n')
        declare_flags(Path(self.env["COMFYUI_DIR"]), version)

    def run_comfyui_as(self, user: str, tmp_path: Path) -> None:
        """ComfyUI as `user`: the tree, the worker's folders and ComfyUI's venv where that user reaches them."""
        open_to_everyone(tmp_path)
        self.env["COMFYUI_USER"] = user
        self.env.setdefault("WORKER_DATA_DIR", str(tmp_path / "worker-data"))
        if self.env["COMFYUI_VENV"] == str(VENV):
            self.env["COMFYUI_VENV"] = str(venv_for(user, tmp_path))

    @property
    def layout(self) -> Layout:
        """This stack's folders, as its programs see them (worker_common.layout)."""
        data_dir = self.env.get("WORKER_DATA_DIR") or self.home / ".run" / "comfyui"
        on_volume = self.env.get("OUTPUTS_ON_VOLUME", "").lower() in ("1", "true", "yes", "on")
        return Layout(self.comfyui_dir, Path(self.env["COMFYUI_VENV"]), Path(data_dir), worker_id(), on_volume)

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

    def start(self, output_file: Path | None = None) -> Stack:
        """Start the entrypoint; its output is kept in `lines`, or written to `output_file` (read at exit)."""
        command = [str(self.home / "services" / "entrypoint")]
        if output_file is None:
            self._entrypoint = Process("entrypoint", command, self.env, self.home)
            self.process = self._entrypoint.popen
            self.lines = self._entrypoint.lines
            return self
        self._output_file = output_file
        with output_file.open("w") as out:  # not append: the entrypoint must cope with a plain `> file`
            self.process = subprocess.Popen(
                command, env=self.env, cwd=self.home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
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
        if self._output_file:
            self.lines[:] = self._output_file.read_text().splitlines()
        return code

    def kill_everything(self) -> None:
        """Clean-up after a test: no process may outlive it.

        supervisord puts each program in its own process group, so the entrypoint's group
        is not enough: every descendant is found first, then all are killed, with whatever is
        left of supervisord's session (a test may have killed supervisord).
        """
        if not self.process:
            return
        family = [*self._supervisord_session()]
        if self.process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                entrypoint = psutil.Process(self.process.pid)
                family += [entrypoint, *entrypoint.children(recursive=True)]
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        self.process.wait(timeout=10)

    def _supervisord_session(self) -> list[psutil.Process]:
        """supervisord runs in a session of its own: what is left of it, should supervisord be gone."""
        try:
            session = int((self.home / ".run" / "supervisord.pid").read_text())
        except (OSError, ValueError):
            return []
        members = []
        for process in psutil.process_iter():
            with contextlib.suppress(OSError):
                if os.getsid(process.pid) == session:
                    members.append(process)
        return members

    # -- waiting -------------------------------------------------------------------

    def wait_for(self, predicate, timeout_s: float = 60, interval_s: float = 0.05, what: str = "") -> Any:
        return wait_until(predicate, timeout_s, what, interval_s=interval_s, ended=self._exited, context=self.output)

    def _exited(self) -> str | None:
        if self.process and self.process.poll() is not None:
            return f"stack exited ({self.process.returncode})"
        return None

    def wait_accepting_jobs(self, timeout_s: float = 60) -> None:
        """Until the runpod local API answers, which the handler starts only after readiness."""
        self.wait_for(lambda: answers_200(f"{self.api_url}/"), timeout_s, what="the handler's local API")

    def wait_running(
        self, programs: tuple[str, ...] = ("comfyui", "sidecar", "handler"), timeout_s: float = 60
    ) -> None:
        """Until supervisord shows every program RUNNING (ComfyUI needs `startsecs` first)."""

        def running() -> bool:
            infos = self.rpc().supervisor.getAllProcessInfo()
            return all(i["statename"] == "RUNNING" for i in infos if i["name"] in programs)

        self.wait_for(running, timeout_s, 0.2, what=f"{programs} RUNNING")

    def wait_line(self, text: str, timeout_s: float = 60) -> str:
        return self.wait_for(lambda: first_line_with(self.lines, text), timeout_s, what=text)

    # -- talking to the parts ----------------------------------------------------

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
        lines = self._output_file.read_text().splitlines() if self._output_file else self.lines
        return "\n".join(lines[-200:])
