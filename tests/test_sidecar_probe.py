"""The probe's parts: restart counting from supervisor facts, the lean ComfyUI client, GPUs."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest
import requests

from healthcheck.comfy_http import ComfyHTTP, ProbeError
from healthcheck.config import SidecarConfig
from healthcheck.gpu import GpuReader, from_system_stats
from healthcheck.probe import ProcessStats, ProgramTracker
from tests.stack import free_port
from tests.test_sidecar_support import World, wait_until


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


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


def test_comfy_http_says_why_in_a_few_words(world: World) -> None:
    client = ComfyHTTP("127.0.0.1", free_port())
    with pytest.raises(ProbeError, match=r"^connection refused$"):
        client.get("/system_stats", 1.0)
    client = ComfyHTTP("127.0.0.1", world.comfy_port)
    world.standin(STANDIN_HANG_AFTER_S="0.5")
    wait_until(lambda: _answers(client), what="stand-in up")
    with pytest.raises(ProbeError, match=r"^answered HTTP 404$"):
        client.get("/no/such/route", 2.0)
    wait_until(lambda: not _answers(client, timeout_s=0.2), what="stand-in hung")
    with pytest.raises(ProbeError, match=r"^no answer in time$"):
        client.get("/system_stats", 0.2)


def _answers(client: ComfyHTTP, timeout_s: float = 1.0) -> bool:
    try:
        return isinstance(client.get_json("/system_stats", timeout_s), dict)
    except ProbeError:
        return False


def test_comfy_http_reconnects_after_comfyui_restarts(world: World) -> None:
    """A kept-alive connection to a ComfyUI that restarted is retried once, not reported as a failure."""
    client = ComfyHTTP("127.0.0.1", world.comfy_port)
    first = world.standin()
    wait_until(lambda: _answers(client), what="stand-in up")
    connection = client._connection
    first.signal(signal.SIGKILL)
    first.process.wait(timeout=30)
    world.standin()
    wait_until(lambda: _port_open(world.comfy_port), what="second stand-in up")
    assert isinstance(client.get_json("/system_stats", 2.0), dict)
    assert client._connection is not connection


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
