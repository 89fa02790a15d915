"""Child processes for tests: free loopback ports, a process whose output lines are kept, and the waits.

Every harness (tests/handler_harness.py's Rig, tests/stack.py's Stack, tests/container.py's
Container, tests/sidecar_world.py's World) waits through `wait_until`, each adding what to show
when the wait fails and how to tell that what it waits on has ended.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import requests

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


_PORTS_HANDED_OUT: set[int] = set()  # this test run's: a port is handed out once


def free_port() -> int:
    """A loopback port nothing listens on, below the kernel's ephemeral range, never handed out before.

    A port the kernel hands out for port 0 comes from the range it also uses for outgoing
    connections' source ports (HTTP clients, podman, moto): between this call and the stack's
    bind, one of those could take it ("address already in use", seen in CI). Ports below that
    range are only ever taken on purpose. A port is free until whoever asked binds it, so two
    calls could pick the same one (a stack's sidecar and local API on one port, seen in CI): each
    is handed out once per test run."""
    while True:
        port = _unbound_port()
        if port not in _PORTS_HANDED_OUT:
            _PORTS_HANDED_OUT.add(port)
            return port


def _unbound_port() -> int:
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if lowest_ephemeral <= 11_000:  # no room below it: the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    while True:
        port = random.randrange(10_000, lowest_ephemeral)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_until(
    predicate: Callable[[], Any],
    timeout_s: float = 30.0,
    what: str = "",
    *,
    interval_s: float = 0.02,
    ended: Callable[[], str | None] = lambda: None,
    context: Callable[[], str] = lambda: "",
) -> Any:
    """Poll `predicate` until it returns something truthy, and return that.

    `ended()` names why waiting is over (the process waited on exited) or returns None; the
    failure shows `context()` (the processes' output). The timeout is the test's own limit,
    never a threshold it checks.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        why = ended()
        if why:
            raise AssertionError(f"{why} waiting for {what or predicate}:\n{context()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}:\n{context()}")
        time.sleep(interval_s)


def first_line_with(lines: Iterable[str], text: str) -> str | None:
    return next((line for line in lines if text in line), None)


def answers_200(url: str) -> bool:
    """Whether GET `url` answers 200 within a second (runpod's local API once the handler is ready)."""
    with contextlib.suppress(requests.RequestException):
        return requests.get(url, timeout=1).status_code == 200
    return False


class OnLoopback:
    """The URLs of a stack's parts from their loopback ports (each harness sets the ports it has)."""

    api_port: int
    sidecar_port: int
    comfy_port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sidecar_url(self) -> str:
        return f"http://127.0.0.1:{self.sidecar_port}"

    @property
    def comfy_url(self) -> str:
        return f"http://127.0.0.1:{self.comfy_port}"


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
