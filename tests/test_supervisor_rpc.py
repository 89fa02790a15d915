"""The shared supervisord proxy: a timeout keeps a stuck supervisord from stalling its caller."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from worker_common.supervisor_rpc import supervisor_proxy


def test_a_call_to_a_supervisord_that_never_answers_times_out(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.sock"
    with socket.socket(socket.AF_UNIX) as silent:  # accepts connections, never answers
        silent.bind(str(path))
        silent.listen()
        with pytest.raises(TimeoutError):
            supervisor_proxy(path, timeout_s=0.2).supervisor.getPID()
