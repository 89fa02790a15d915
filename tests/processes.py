"""Child processes for tests: free loopback ports, and a process whose output lines are kept."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class QuietHandler(BaseHTTPRequestHandler):
    """The request handler of a test's own HTTP server: one call answers, nothing is logged."""

    def answer(self, status: int, body: bytes = b"", content_type: str | None = None, **headers: str) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child process whose output is kept for failure messages."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path = REPO) -> None:
        self.name = name
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        """Signal the process and its group (it leads a session of its own)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout_s: float = 10, sig: int = signal.SIGINT) -> int | None:
        """`sig`, then SIGKILL if it is still alive after `timeout_s`; returns the exit code."""
        self.send_signal(sig)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.send_signal(signal.SIGKILL)
            self.popen.wait(5)
        self._reader.join(timeout=2)
        return self.popen.returncode

    def join_output(self, timeout_s: float = 5) -> None:
        """After the process has exited: wait until its last output lines are read."""
        self._reader.join(timeout=timeout_s)

    def output(self, last: int | None = None) -> str:
        lines = self.lines if last is None else self.lines[-last:]
        return f"--- {self.name} ---\n" + "\n".join(lines)
