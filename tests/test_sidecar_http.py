"""The sidecar's HTTP contract (docs/design.md): codes, bodies, long-poll, /metrics format.

The server under test is the real one, on a free port; the snapshots it serves are built
here, so every state can be shown without waiting for a ComfyUI to get there.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from healthcheck.collectors import build_registry
from healthcheck.gpu import GpuFigures, GpuReading, TorchFigures
from healthcheck.handler_metrics import HandlerMetricsReaper
from healthcheck.probe import ProgramStatus
from healthcheck.server import SidecarServer
from healthcheck.snapshot import Snapshot, SnapshotStore
from healthcheck.state import State
from tests.sidecar_world import promtool_check, sample_value
from worker_common import settings
from worker_common.contract import GpuStatus, SidecarStatus, stack_identity

NOW = 1_790_000_000.0


class Monotonic:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def snapshot(state: State = State.STARTING, **fields) -> Snapshot:
    base = Snapshot(
        state=state,
        since=NOW,
        reason="GET /system_stats: connection refused",
        started_at=NOW - 10,
        window_s=300.0,
        window_left_s=290.0,
        tick_at=500.0,
        stack=stack_identity(settings.run_dir()),
    )
    return replace(base, **fields)


class Served:
    def __init__(self, store: SnapshotStore, server: SidecarServer, clock: Monotonic) -> None:
        self.store = store
        self.server = server
        self.clock = clock
        self.url = f"http://127.0.0.1:{server.server_address[1]}"

    def publish(self, state: State, **fields) -> None:
        self.store.publish(snapshot(state, **fields))


def serve(multiproc_dir: Path | None = None) -> Iterator[Served]:
    store = SnapshotStore(snapshot())
    clock = Monotonic()
    server = SidecarServer(
        ("127.0.0.1", 0), store, build_registry(lambda: store.current, multiproc_dir), 5.0, monotonic=clock
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Served(store, server, clock)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served() -> Iterator[Served]:
    yield from serve()


@pytest.mark.parametrize(
    ("state", "ping", "readyz"),
    [
        (State.STARTING, 204, 503),
        (State.READY, 200, 200),
        (State.UNREADY, 503, 503),
        (State.FAILED, 503, 503),
    ],
)
def test_ping_and_readyz_codes_follow_the_state(served: Served, state: State, ping: int, readyz: int) -> None:
    served.publish(state, comfyui_pid=42, comfyui_statename="RUNNING", comfyui_restarts=2)
    response = requests.get(served.url + "/ping", timeout=5)
    assert response.status_code == ping
    if ping == 204:
        assert response.content == b""
    response = requests.get(served.url + "/readyz", timeout=5)
    assert response.status_code == readyz
    assert response.json() == {
        "stack": stack_identity(settings.run_dir()),
        "ready": state is State.READY,
        "state": str(state),
        "since": NOW,
        "startup_window_left_s": 290.0,
        "comfyui": {"pid": 42, "state": "RUNNING", "restarts": 2},
        "reason": "GET /system_stats: connection refused",
    }


def test_livez_reports_the_loop_age_and_fails_when_the_loop_stalls(served: Served) -> None:
    served.clock.now = 501.5
    response = requests.get(served.url + "/livez", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"alive": True, "loop_age_s": 1.5}
    served.clock.now = 506.0  # 6 s without a tick, the limit is 5 s
    response = requests.get(served.url + "/livez", timeout=5)
    assert response.status_code == 503
    assert response.json()["alive"] is False


def test_unknown_paths_and_bad_wait_values(served: Served) -> None:
    assert requests.get(served.url + "/nope", timeout=5).status_code == 404
    assert requests.get(served.url + "/readyz?wait=soon", timeout=5).status_code == 400


def test_readyz_wait_is_woken_by_readiness(served: Served) -> None:
    """A waiting /readyz returns as soon as the state becomes ready, not at the end of its wait."""
    results: list[tuple[int, dict, float]] = []

    def wait() -> None:
        started = time.monotonic()
        response = requests.get(served.url + "/readyz?wait=60", timeout=90)
        results.append((response.status_code, response.json(), time.monotonic() - started))

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)  # let it block
    assert not results, "returned before readiness"
    served.publish(State.STARTING, reason="still starting")  # not ready: must keep waiting
    time.sleep(0.1)
    assert not results, "a snapshot that is not ready woke the waiter"
    served.publish(State.READY, reason="ComfyUI answers")
    waiter.join(timeout=30)
    assert results, "the waiter was not woken"
    status, body, elapsed = results[0]
    assert (status, body["ready"], body["reason"]) == (200, True, "ComfyUI answers")
    assert elapsed < 30  # far below the 60 s it asked for: it was woken, not timed out


def test_readyz_wait_times_out_with_the_current_state(served: Served) -> None:
    response = requests.get(served.url + "/readyz?wait=0.2", timeout=30)
    assert response.status_code == 503
    assert response.json()["state"] == "starting"


def test_readyz_wait_returns_at_once_when_already_ready_or_failed(served: Served) -> None:
    served.publish(State.READY)
    assert requests.get(served.url + "/readyz?wait=60", timeout=30).status_code == 200
    served.publish(State.FAILED, reason="not ready within 300 s")
    response = requests.get(served.url + "/readyz?wait=60", timeout=30)
    assert response.status_code == 503
    assert response.json()["state"] == "failed"


def test_many_waiters_are_all_woken(served: Served) -> None:
    codes: list[int] = []

    def wait() -> None:
        codes.append(requests.get(served.url + "/readyz?wait=60", timeout=90).status_code)

    waiters = [threading.Thread(target=wait) for _ in range(8)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.2)
    served.publish(State.READY)
    for waiter in waiters:
        waiter.join(timeout=30)
    assert codes == [200] * 8


def rich_snapshot() -> Snapshot:
    programs = (
        ProgramStatus("comfyui", "RUNNING", 101, NOW - 50, 0, "", 2),
        ProgramStatus("sidecar", "RUNNING", 102, NOW - 49, 0, "", 0),
        ProgramStatus("handler", "BACKOFF", 0, NOW - 1, 1, "", 5),
        ProgramStatus("log-forwarder", "RUNNING", 99, NOW - 51, 0, "", 0),
    )
    gpu = GpuReading(
        True,
        (
            GpuFigures("0", 'NVIDIA H100 80GB "HBM3"', "GPU-abc", "nvml", 8.5e10, 1.2e9, 8.38e10, 0.37, 41.0, 71.5),
            GpuFigures("1", "NVIDIA H100\\80GB", "GPU-def", "nvml", 8.5e10, 0.0, 8.5e10, None, None, None),
        ),
        (TorchFigures("0", 8.4e10, 8.2e10),),
    )
    return snapshot(
        State.READY,
        startup_duration_s=5.51,
        programs=programs,
        comfyui_pid=101,
        comfyui_statename="RUNNING",
        comfyui_restarts=2,
        comfyui_rss_bytes=1.5e9,
        comfyui_cpu_seconds=42.25,
        gpu=gpu,
        queue_running=1,
        queue_pending=3,
        last_answer_at=NOW - 0.5,
    )


def test_status_serves_the_snapshot_that_metrics_renders(served: Served) -> None:
    """`comfy-worker status` reads this: the state itself, not the /metrics text parsed back."""
    served.store.publish(rich_snapshot())
    served.clock.now = 501.25
    response = requests.get(served.url + "/status", timeout=5)
    assert response.status_code == 200
    status = SidecarStatus.from_body(response.json())
    assert status.readiness == rich_snapshot().readiness()
    assert status.loop_age_s == 1.25
    assert (status.startup_duration_s, status.comfyui_version) == (5.51, None)
    assert (status.queue_running, status.queue_pending) == (1, 3)
    assert status.restarts == {"comfyui": 2, "sidecar": 0, "handler": 5, "log-forwarder": 0}
    assert status.gpus[0] == GpuStatus("0", 'NVIDIA H100 80GB "HBM3"', "nvml", 1.2e9, 8.5e10, 0.37, 41.0, 71.5)
    assert status.gpus[1] == GpuStatus("1", "NVIDIA H100\\80GB", "nvml", 0.0, 8.5e10)
    assert "GET /system_stats" not in response.text.replace(status.readiness.reason, ""), "no log text"


def test_metrics_pass_promtool_and_carry_the_snapshot(served: Served) -> None:
    served.store.publish(rich_snapshot())
    response = requests.get(served.url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.text
    promtool_check(text)
    expected = {
        ("comfy_worker_ready", ()): 1,
        ("comfy_worker_state", (("state", "ready"),)): 1,
        ("comfy_worker_state", (("state", "starting"),)): 0,
        ("comfy_worker_startup_duration_seconds", ()): 5.51,
        ("comfy_worker_state_change_timestamp_seconds", ()): NOW,
        ("comfy_worker_startup_window_seconds", ()): 300,
        ("comfy_worker_program_up", (("program", "handler"),)): 0,
        ("comfy_worker_program_state", (("program", "handler"), ("state", "BACKOFF"))): 1,
        ("comfy_worker_program_state", (("program", "handler"), ("state", "RUNNING"))): 0,
        ("comfy_worker_program_restarts_total", (("program", "comfyui"),)): 2,
        ("comfy_worker_program_start_time_seconds", (("program", "sidecar"),)): NOW - 49,
        ("comfy_worker_comfyui_resident_memory_bytes", ()): 1.5e9,
        ("comfy_worker_comfyui_cpu_seconds_total", ()): 42.25,
        ("comfy_worker_nvml_available", ()): 1,
        ("comfy_worker_gpu_info", (("gpu", "0"), ("uuid", "GPU-abc"), ("source", "nvml"))): 1,
        ("comfy_worker_gpu_memory_used_bytes", (("gpu", "0"), ("source", "nvml"))): 1.2e9,
        ("comfy_worker_gpu_memory_free_bytes", (("gpu", "1"), ("source", "nvml"))): 8.5e10,
        ("comfy_worker_gpu_torch_memory_free_bytes", (("gpu", "0"), ("source", "comfyui"))): 8.2e10,
        ("comfy_worker_gpu_utilization_ratio", (("gpu", "0"),)): 0.37,
        ("comfy_worker_gpu_temperature_celsius", (("gpu", "0"),)): 41,
        ("comfy_worker_gpu_power_watts", (("gpu", "0"),)): 71.5,
        ("comfy_worker_queue_running", ()): 1,
        ("comfy_worker_queue_pending", ()): 3,
        ("comfy_worker_comfyui_last_probe_timestamp_seconds", ()): NOW - 0.5,
    }
    for (name, labels), value in expected.items():
        assert sample_value(text, name, **dict(labels)) == pytest.approx(value), (name, labels)
    # A device without a figure has no sample rather than a made-up one.
    assert sample_value(text, "comfy_worker_gpu_power_watts", gpu="1") is None
    assert sample_value(text, "comfy_worker_gpu_info", gpu="0", name='NVIDIA H100 80GB "HBM3"') == 1


def test_metrics_of_a_starting_worker_without_supervisor_or_comfyui_pass_promtool(served: Served) -> None:
    text = requests.get(served.url + "/metrics", timeout=5).text
    promtool_check(text)
    assert sample_value(text, "comfy_worker_ready") == 0
    assert sample_value(text, "comfy_worker_state", state="starting") == 1
    assert sample_value(text, "comfy_worker_startup_duration_seconds") is None
    assert "comfy_worker_program_up" not in text
    assert "comfy_worker_comfyui_last_probe_timestamp_seconds" not in text


HANDLER_LIKE = """
import os, sys, time
from prometheus_client import Counter, Gauge, Histogram
jobs = Counter("comfy_worker_jobs", "Jobs.", ["outcome", "reason"])
duration = Histogram("comfy_worker_job_duration_seconds", "Job time.", ["outcome"])
in_progress = Gauge("comfy_worker_jobs_in_progress", "Jobs running.", multiprocess_mode="livesum")
jobs.labels("success", "none").inc(int(sys.argv[1]))
jobs.labels("failed", "timeout").inc()
duration.labels("success").observe(0.25)
in_progress.inc()
print("written", flush=True)
if sys.argv[2] == "stay":
    time.sleep(60)
"""


def write_handler_metrics(directory: Path, count: int, stay: bool) -> subprocess.Popen:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    process = subprocess.Popen(
        [sys.executable, "-c", HANDLER_LIKE, str(count), "stay" if stay else "exit"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout and process.stdout.readline().strip() == "written"
    return process


def test_handler_multiprocess_metrics_join_the_scrape_and_dead_live_gauges_go(tmp_path: Path) -> None:
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    for served in serve(multiproc):
        first = write_handler_metrics(multiproc, 2, stay=False)
        first.wait(timeout=30)
        second = write_handler_metrics(multiproc, 3, stay=True)
        try:
            text = requests.get(served.url + "/metrics", timeout=5).text
            promtool_check(text)
            assert sample_value(text, "comfy_worker_jobs_total", outcome="success", reason="none") == 5
            assert sample_value(text, "comfy_worker_jobs_total", outcome="failed", reason="timeout") == 2
            assert sample_value(text, "comfy_worker_job_duration_seconds_count", outcome="success") == 2
            # The dead writer's live gauge still counts until someone marks it dead.
            assert sample_value(text, "comfy_worker_jobs_in_progress") == 2

            reaper = HandlerMetricsReaper(multiproc)
            assert reaper.reap(None) == [first.pid]
            text = requests.get(served.url + "/metrics", timeout=5).text
            assert sample_value(text, "comfy_worker_jobs_in_progress") == 1
            assert sample_value(text, "comfy_worker_jobs_total", outcome="success", reason="none") == 5

            # The handler program restarted under supervisord: its old pid's gauges go too.
            handler = ProgramStatus("handler", "RUNNING", second.pid, NOW, 0, "", 0)
            assert reaper.reap((handler,)) == []
            replaced = replace(handler, pid=second.pid + 100000)
            assert reaper.reap((replaced,)) == [second.pid]
            text = requests.get(served.url + "/metrics", timeout=5).text
            assert sample_value(text, "comfy_worker_jobs_in_progress") is None  # no live writer left
            assert sample_value(text, "comfy_worker_jobs_total", outcome="success", reason="none") == 5
        finally:
            second.kill()
            second.wait(timeout=30)


def test_a_missing_multiproc_dir_is_not_an_error(tmp_path: Path) -> None:
    for served in serve(tmp_path / "not-yet"):
        text = requests.get(served.url + "/metrics", timeout=5).text
        assert "comfy_worker_ready" in text
        (tmp_path / "not-yet").mkdir()
        write_handler_metrics(tmp_path / "not-yet", 1, stay=False).wait(timeout=30)
        text = requests.get(served.url + "/metrics", timeout=5).text
        assert sample_value(text, "comfy_worker_jobs_total", outcome="success", reason="none") == 1


def raw_request(url: str, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client, which (unlike requests) lets HEAD show what it got."""
    connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        headers = {name: value for name, value in response.getheaders() if name != "Date"}
        return response.status, headers, body
    finally:
        connection.close()


@pytest.mark.parametrize("state", [State.STARTING, State.READY, State.UNREADY])
def test_head_answers_every_route_like_get_without_a_body(served: Served, state: State) -> None:
    served.store.publish(replace(rich_snapshot(), state=state))
    for path in ("/livez", "/readyz", "/readyz?wait=0.05", "/ping", "/metrics", "/nope", "/readyz?wait=x"):
        get_status, get_headers, get_body = raw_request(served.url, "GET", path)
        head_status, head_headers, head_body = raw_request(served.url, "HEAD", path)
        assert head_status == get_status, path
        assert head_body == b"", path
        if path == "/metrics":  # the figures may move between two scrapes; the length with them
            del get_headers["Content-Length"], head_headers["Content-Length"]
        assert head_headers == get_headers, path
        if get_status != 204:
            assert get_body, path


def test_changing_methods_are_refused_and_unknown_ones_not_implemented(served: Served) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _body = raw_request(served.url, method, "/readyz")
        assert (status, headers["Allow"]) == (405, "GET, HEAD"), method
        assert raw_request(served.url, method, "/nope")[0] == 404
    status, _headers, body = raw_request(served.url, "OPTIONS", "/readyz")
    assert status == 501 and b"OPTIONS" in body
