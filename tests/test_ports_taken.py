"""A port that is taken: the stack says so as its exit reason, and never trusts another stack's readiness."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.handler_harness import Rig
from tests.stack import Stack, traversable_tmp


@pytest.fixture
def taken() -> Iterator[socket.socket]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


@pytest.mark.parametrize("setting", ["SIDECAR_PORT", "LOCAL_API_PORT"])
def test_a_taken_port_is_the_exit_reason(taken: socket.socket, setting: str) -> None:
    port = taken.getsockname()[1]
    with traversable_tmp() as root:
        stack = Stack(root, {setting: str(port), "COMFY_READY_TIMEOUT_S": "60"})
        try:
            code = stack.start().wait_exit(120)
        finally:
            stack.kill_everything()
    assert code == 78, "\n".join(stack.lines)
    last = stack.lines[-1]
    assert last.startswith("[entrypoint] exiting with code 78: "), last
    assert f"cannot listen on 127.0.0.1:{port} ({setting}): Address already in use" in last, last


def test_the_handler_never_takes_readiness_from_another_stacks_sidecar(tmp_path: Path) -> None:
    rig = Rig(tmp_path).start_without_handler()  # a ready stack: its sidecar answers "ready"
    try:
        rig.wait_for(lambda: _ready(rig), 30, what="the other stack's sidecar to be ready")
        env = {"WORKER_RUN_DIR": str(tmp_path / "this-stack"), "COMFY_READY_TIMEOUT_S": "2"}
        handler = rig.start_handler(env | {"WORKER_STARTED_AT": str(time.time())}, wait=False)
        assert handler.popen.wait(30) == 3, "this stack's ComfyUI was never reported ready"
        handler.stop()
        last = [line for line in handler.lines if line.strip()][-1]
        assert f"what answers on port {rig.sidecar_port} (SIDECAR_PORT) is not this stack's sidecar" in last, last
    finally:
        rig.stop()


def _ready(rig: Rig) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{rig.sidecar_port}/readyz", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False  # not listening yet
