"""The probe's parts: restart counting from supervisor facts, the shared ComfyUI client, GPUs."""

from __future__ import annotations

import logging
import select
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from unittest.mock import patch

import pytest
import requests

from healthcheck.config import SidecarConfig
from healthcheck.gpu import GpuReader, from_system_stats
from healthcheck.probe import ProcessStats, ProgramTracker
from tests.sidecar_world import World, wait_until
from tests.stack import free_port
from worker_common.comfy_client import MAX_IDLE_CONNECTIONS, ComfyClient, ComfyError, ComfyHTTPError, ComfyUnavailable


def info(name: str, start: int, pid: int, state: str = "RUNNING") -> dict:
    return {"name": name, "start": start, "pid": pid, "statename": state, "exitstatus": 0, "spawnerr": ""}


def restarts(tracker: ProgramTracker, *observations: dict) -> list[int]:
    return [tracker.update([o])[0].restarts for o in observations]


def test_the_first_spawn_is_a_start_every_later_one_a_restart() -> None:
    tracker = ProgramTracker()
    assert restarts(
        tracker,
        info("comfyui", 0, 0, "STOPPED"),
        info("comfyui", 100, 41, "STARTING"),
        info("comfyui", 100, 41),
        info("comfyui", 100, 0, "BACKOFF"),  # crashed
        info("comfyui", 102, 45, "STARTING"),  # respawned
        info("comfyui", 102, 45),
    ) == [0, 0, 0, 0, 1, 1]


def test_two_spawns_in_the_same_second_are_told_apart_by_pid() -> None:
    tracker = ProgramTracker()
    assert restarts(
        tracker,
        info("comfyui", 100, 41),
        info("comfyui", 100, 0, "BACKOFF"),
        info("comfyui", 100, 42, "STARTING"),
    ) == [0, 0, 1]


def test_a_spawn_seen_only_after_it_exited_still_counts() -> None:
    tracker = ProgramTracker()
    assert restarts(
        tracker,
        info("comfyui", 100, 41),
        info("comfyui", 103, 0, "BACKOFF"),  # spawned at 103 and died between two looks
        info("comfyui", 103, 0, "BACKOFF"),
        info("comfyui", 105, 50),
    ) == [0, 1, 1, 2]
    assert tracker.new_spawns == {"comfyui": 1}


def test_programs_are_counted_separately() -> None:
    tracker = ProgramTracker()
    tracker.update([info("comfyui", 100, 41), info("handler", 100, 42)])
    programs = tracker.update([info("comfyui", 100, 41), info("handler", 101, 43)])
    assert [(p.name, p.restarts) for p in programs] == [("comfyui", 0), ("handler", 1)]
    assert tracker.new_spawns == {"handler": 1}


def test_process_stats_of_a_live_and_a_gone_pid() -> None:
    import os

    stats = ProcessStats()
    assert stats.alive(os.getpid())
    usage = stats.usage(os.getpid())
    assert usage is not None and usage[0] > 1e6 and usage[1] > 0
    assert not stats.alive(2**22 + 12345)
    assert stats.usage(2**22 + 12345) is None


def _reason(call: Callable[[], Any]) -> str:
    with pytest.raises(ComfyError) as caught:
        call()
    return caught.value.reason


def test_comfy_client_says_why_in_a_few_words(world: World) -> None:
    client = ComfyClient("127.0.0.1", free_port())
    assert _reason(lambda: client.system_stats(1.0)) == "connection refused"
    client = ComfyClient("127.0.0.1", world.comfy_port)
    world.standin(STANDIN_HANG_AFTER_S="0.5")
    wait_until(lambda: _answers(client), what="stand-in up")
    with pytest.raises(ComfyHTTPError) as caught:
        client.get_json("/no/such/route", 2.0)
    assert (caught.value.reason, caught.value.status) == ("answered HTTP 404", 404)
    wait_until(lambda: not _answers(client, timeout_s=0.2), what="stand-in hung")
    with pytest.raises(ComfyUnavailable) as unavailable:
        client.system_stats(0.2)
    assert unavailable.value.reason == "no answer in time"


def _answers(client: ComfyClient, timeout_s: float = 1.0) -> bool:
    try:
        return isinstance(client.system_stats(timeout_s), dict)
    except ComfyError:
        return False


def test_comfy_client_reconnects_after_comfyui_restarts(world: World) -> None:
    """A kept-alive connection to a ComfyUI that restarted is not reported as a failure, for GET and POST."""
    client = ComfyClient("127.0.0.1", world.comfy_port)
    first = world.standin()
    wait_until(lambda: _answers(client), what="stand-in up")
    [connection] = client._idle
    first.send_signal(signal.SIGKILL)
    first.popen.wait(timeout=30)
    world.standin()
    wait_until(lambda: _port_open(world.comfy_port), what="second stand-in up")
    assert isinstance(client.system_stats(2.0), dict)
    assert client._idle and client._idle[0] is not connection
    # A connection the server closes while our request is on its way is retried once, fresh.
    [connection] = client._idle
    assert connection.sock is not None
    connection.sock.shutdown(socket.SHUT_WR)  # the server sees EOF and closes it
    wait_until(lambda: _readable(connection.sock), what="server closed the connection")
    sends = patch.object(ComfyClient, "_send", autospec=True, side_effect=ComfyClient._send)
    with patch("worker_common.comfy_client._dropped", return_value=False), sends as send:
        client.interrupt(timeout_s=2.0)
    assert send.call_count == 2
    assert client._idle and client._idle[0].sock is not None


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_one_comfy_client_serves_many_threads(world: World) -> None:
    """The handler's job and clean-up threads share one client: each request gets a connection of its own."""
    client = ComfyClient("127.0.0.1", world.comfy_port)
    world.standin()
    wait_until(lambda: _answers(client), what="stand-in up")

    def hammer(_: int) -> int:
        answers = 0
        for _ in range(30):
            answers += isinstance(client.system_stats(5.0), dict)
            answers += isinstance(client.queue(5.0), dict)
            client.delete_history(["no-such-prompt"])
        return answers

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(hammer, range(8))) == 8 * 30 * 2
    assert 1 <= len(client._idle) <= MAX_IDLE_CONNECTIONS
    client.close()
    assert client._idle == []
    assert isinstance(client.system_stats(2.0), dict)  # usable again after close


class _Flaky(BaseHTTPRequestHandler):
    """Answers GET with 503 `fail` times, then 200 with a JSON body (or `body`)."""

    protocol_version = "HTTP/1.1"
    fail = 0
    body = b'{"ok": true}'
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        failing = len(self.seen) <= self.fail
        body = b"busy" if failing else self.body
        self.send_response(503 if failing else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[type[_Flaky], int]]:
    handler = type("Flaky", (_Flaky,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_get_retries_retry_5xx_answers_only_as_often_as_asked(flaky: tuple[type[_Flaky], int]) -> None:
    handler, port = flaky
    handler.fail = 2
    assert ComfyClient("127.0.0.1", port, get_retries=2).get_json("/history/x") == {"ok": True}
    assert len(handler.seen) == 3
    handler.seen.clear()
    with pytest.raises(ComfyHTTPError) as caught:
        ComfyClient("127.0.0.1", port, get_retries=1).get_json("/history/x")
    assert (caught.value.status, caught.value.body, len(handler.seen)) == (503, "busy", 2)


def test_an_answer_that_is_not_json_is_a_comfy_error(flaky: tuple[type[_Flaky], int]) -> None:
    handler, port = flaky
    handler.body = b"<html>"
    client = ComfyClient("127.0.0.1", port)
    assert _reason(lambda: client.system_stats()) == "answered with something that is not JSON"
    assert client.call("GET", "/object_info") == b"<html>"  # the raw body is still there for who asks


def _port_open(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=1).ok
    except requests.RequestException:
        return False


SYSTEM_STATS = {
    "system": {"os": "posix", "ram_total": 25276510208, "ram_free": 24317276160},
    "devices": [
        {
            "name": "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync",
            "type": "cuda",
            "index": 0,
            "vram_total": 85045231616,
            "vram_free": 84200000000,
            "torch_vram_total": 1000,
            "torch_vram_free": 200,
        },
        {"name": "cpu", "type": "cpu", "index": None, "vram_total": 100, "vram_free": 40},
    ],
}


def test_system_stats_devices_become_gpu_figures() -> None:
    gpus, torch = from_system_stats(SYSTEM_STATS)
    assert [(g.gpu, g.name, g.source) for g in gpus] == [
        ("0", "cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync", "comfyui"),
        ("1", "cpu", "comfyui"),
    ]
    assert (gpus[0].memory_total_bytes, gpus[0].memory_free_bytes, gpus[0].memory_used_bytes) == (
        85045231616,
        84200000000,
        845231616,
    )
    assert gpus[0].utilization_ratio is None and gpus[0].power_watts is None
    assert [(t.gpu, t.total_bytes, t.free_bytes) for t in torch] == [("0", 1000, 200)]
    assert from_system_stats(None) == ((), ())
    assert from_system_stats({"devices": "nonsense"}) == ((), ())


def test_without_nvml_the_reader_falls_back_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    """This machine has no NVIDIA driver: the real pynvml fails to load its library."""
    caplog.set_level(logging.INFO, logger="healthcheck.gpu")
    reader = GpuReader()
    first = reader.read(SYSTEM_STATS)
    second = reader.read(SYSTEM_STATS)
    assert first.nvml_available is False and second.nvml_available is False
    assert (first.gpus, first.torch) == from_system_stats(SYSTEM_STATS)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("NVML unavailable ("), messages
    assert not any(r.exc_info for r in caplog.records)


def test_config_defaults_and_a_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker_common.settings import ConfigError

    for name in ("SIDECAR_HOST", "SIDECAR_PORT", "PORT_HEALTH", "PROBE_INTERVAL_S", "WARMUP_WORKFLOW"):
        monkeypatch.delenv(name, raising=False)
    config = SidecarConfig.from_env()
    assert (config.host, config.port, config.probe_interval_s, config.startup_probe_interval_s) == (
        "0.0.0.0",
        8081,
        1.0,
        0.05,
    )
    assert (config.unready_after_failures, config.probe_timeout_s, config.warmup_workflow) == (3, 2.0, None)
    assert config.local_url == "http://127.0.0.1:8081"
    assert config.loop_stale_after_s == 7.0
    monkeypatch.setenv("PORT_HEALTH", "9000")
    monkeypatch.setenv("SIDECAR_PORT", "9001")
    assert SidecarConfig.from_env().port == 9000
    monkeypatch.setenv("PROBE_INTERVAL_S", "often")
    with pytest.raises(ConfigError, match="PROBE_INTERVAL_S"):
        SidecarConfig.from_env()
    monkeypatch.setenv("PROBE_INTERVAL_S", "1")
    monkeypatch.setenv("WARMUP_WORKFLOW", "/no/such/workflow.json")
    with pytest.raises(ConfigError, match="WARMUP_WORKFLOW"):
        SidecarConfig.from_env()
