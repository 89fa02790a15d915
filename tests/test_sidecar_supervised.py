"""The sidecar as a process, against a real supervisord running the stand-in ComfyUI.

Each test shapes one situation with the stand-in's knobs (boot delay, never ready, crash on
start, hang) and checks what the sidecar reports: state, reason, restarts, metrics and the
one log line per transition. Nothing waits on a wall-clock threshold: the tests wait for
states with generous timeouts and check the record (log lines, counters) afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from healthcheck.gpu import from_system_stats
from tests.releases import NEWEST, RELEASES
from tests.sidecar_world import (
    REPO,
    Sidecar,
    World,
    base_env,
    http_get,
    promtool_check,
    sample_value,
    wait_until,
)


def log_lines(sidecar: Sidecar, text: str) -> list[str]:
    return [line for line in sidecar.proc.output().splitlines() if text in line]


def test_starting_then_ready_when_comfyui_answers(world: World) -> None:
    # The sidecar starts first, so it must see ComfyUI not up yet, whatever the machine's speed.
    sidecar = world.sidecar()
    status, body = sidecar.readyz()
    assert (status, body["state"], body["ready"]) == (503, "starting", False)
    assert body["startup_window_left_s"] > 0
    assert requests.get(sidecar.url + "/ping", timeout=5).status_code == 204

    supervisor = world.supervisor(standin_env={"STANDIN_BOOT_DELAY_S": "0.5"})
    status, body = sidecar.readyz(wait_s=30)
    assert status == 200, body
    assert body["ready"] is True and body["state"] == "ready"
    assert body["comfyui"] == {"pid": supervisor.info()["pid"], "state": body["comfyui"]["state"], "restarts": 0}
    assert body["comfyui"]["state"] in ("STARTING", "RUNNING")
    assert body["startup_window_left_s"] == 0
    assert requests.get(sidecar.url + "/ping", timeout=5).status_code == 200

    transitions = log_lines(sidecar, "readiness ")
    assert len(transitions) == 1 and "readiness starting -> ready" in transitions[0], transitions
    assert "Traceback" not in sidecar.proc.output()

    text = sidecar.metrics_with("comfy_worker_queue_pending")
    promtool_check(text)
    assert sample_value(text, "comfy_worker_ready") == 1
    assert sample_value(text, "comfy_worker_startup_duration_seconds") > 0
    assert sample_value(text, "comfy_worker_program_up", program="comfyui") in (0, 1)  # STARTING until startsecs
    assert sample_value(text, "comfy_worker_program_restarts_total", program="comfyui") == 0
    assert sample_value(text, "comfy_worker_comfyui_resident_memory_bytes") > 1e6
    assert sample_value(text, "comfy_worker_comfyui_cpu_seconds_total") > 0
    assert sample_value(text, "comfy_worker_queue_running") == 0
    assert sample_value(text, "comfy_worker_comfyui_last_probe_timestamp_seconds") > 0

    assert sidecar.close() == 0  # SIGTERM, as supervisord stops it: a clean exit
    assert "received SIGTERM: stopping" in sidecar.proc.output()


def test_nvml_absent_falls_back_to_the_figures_of_system_stats(world: World) -> None:
    world.supervisor()
    sidecar = world.sidecar()
    assert sidecar.readyz(wait_s=30)[0] == 200
    text = sidecar.metrics_with("comfy_worker_gpu_info")
    stats = requests.get(f"http://127.0.0.1:{world.comfy_port}/system_stats", timeout=5).json()
    gpus, torch = from_system_stats(stats)
    assert gpus, "the stand-in reports no devices"
    assert sample_value(text, "comfy_worker_nvml_available") == 0
    assert "NVML unavailable" in sidecar.proc.output()
    assert "Traceback" not in sidecar.proc.output()
    # On a CPU device the stand-in reports the host's RAM, whose free figure moves between two
    # reads: totals must match exactly, free figures closely, and used + free must make the total.
    for gpu in gpus:
        labels = {"gpu": gpu.gpu, "source": "comfyui"}
        assert sample_value(text, "comfy_worker_gpu_info", name=gpu.name, uuid="", **labels) == 1
        total = sample_value(text, "comfy_worker_gpu_memory_total_bytes", **labels)
        free = sample_value(text, "comfy_worker_gpu_memory_free_bytes", **labels)
        used = sample_value(text, "comfy_worker_gpu_memory_used_bytes", **labels)
        assert total == gpu.memory_total_bytes
        assert free == pytest.approx(gpu.memory_free_bytes, abs=0.05 * total)
        assert used + free == total
    for figures in torch:
        labels = {"gpu": figures.gpu, "source": "comfyui"}
        assert sample_value(text, "comfy_worker_gpu_torch_memory_total_bytes", **labels) == figures.total_bytes
        torch_free = sample_value(text, "comfy_worker_gpu_torch_memory_free_bytes", **labels)
        assert torch_free == pytest.approx(figures.free_bytes, abs=0.05 * figures.total_bytes)
    assert "comfy_worker_gpu_utilization_ratio" not in text  # NVML-only figures are absent, not zero


def test_a_crash_makes_it_unready_then_ready_again_with_the_restart_counted(world: World) -> None:
    supervisor = world.supervisor(standin_env={"STANDIN_BOOT_DELAY_S": "0.3"})
    sidecar = world.sidecar()
    status, body = sidecar.readyz(wait_s=30)
    assert status == 200, body
    first_pid = body["comfyui"]["pid"]

    os.kill(first_pid, signal.SIGKILL)  # a real crash; supervisord restarts it
    wait_until(lambda: supervisor.info()["pid"] not in (0, first_pid), what="comfyui respawned")
    body = wait_until(
        lambda: (b := sidecar.readyz()[1])["ready"] and b["comfyui"]["pid"] != first_pid and b, what="ready again"
    )
    assert body["comfyui"]["restarts"] == 1
    assert body["comfyui"]["pid"] == supervisor.info()["pid"]

    transitions = [line.split("readiness ", 1)[1] for line in log_lines(sidecar, "readiness ")]
    assert [t.split(" at ")[0] for t in transitions] == [
        "starting -> ready",
        "ready -> unready",
        "unready -> ready",
    ], transitions
    assert any(cause in transitions[1] for cause in ("is gone", "restarted", "killed (SIGKILL")), transitions
    text = sidecar.metrics()
    assert sample_value(text, "comfy_worker_program_restarts_total", program="comfyui") == 1
    assert sample_value(text, "comfy_worker_state", state="ready") == 1


def test_never_ready_ends_failed_when_the_window_runs_out(world: World) -> None:
    world.supervisor(standin_env={"STANDIN_NEVER_READY": "1"})
    sidecar = world.sidecar(COMFY_READY_TIMEOUT_S="2")
    body = sidecar.wait_state("failed", timeout_s=30)
    assert body["ready"] is False
    assert body["reason"].startswith("not ready within the start-up window of 2 s; now: "), body
    assert body["startup_window_left_s"] == 0
    assert requests.get(sidecar.url + "/ping", timeout=5).status_code == 503
    # A waiting gate is answered at once: failed is final.
    status, body = sidecar.readyz(wait_s=60)
    assert (status, body["state"]) == (503, "failed")
    text = sidecar.metrics()
    assert sample_value(text, "comfy_worker_state", state="failed") == 1
    assert sample_value(text, "comfy_worker_startup_window_seconds") == 2
    transitions = log_lines(sidecar, "readiness ")
    assert len(transitions) == 1 and "starting -> failed" in transitions[0] and "not ready within 2 s" in transitions[0]


SECRET = "a castle at dusk, token sk-7f3a9c"  # what a job's prompt could put in ComfyUI's log


def run_status(world: World) -> str:
    env = base_env(WORKER_RUN_DIR=str(world.run_dir))
    result = subprocess.run(
        [sys.executable, "-m", "healthcheck", "status"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    return result.stdout + result.stderr


def served_text(sidecar: Sidecar) -> str:
    """Everything the sidecar serves to anyone who asks."""
    return "\n".join(requests.get(sidecar.url + path, timeout=10).text for path in ("/readyz", "/ping", "/metrics"))


def test_a_crash_loop_names_the_exit_code_and_serves_no_log_text(world: World) -> None:
    world.supervisor(standin_env={"STANDIN_CRASH_ON_START": f"RuntimeError: {SECRET}"}, startsecs=10, startretries=1)
    sidecar = world.sidecar()
    reasons = set()

    def fatal() -> dict | None:
        body = sidecar.readyz()[1]
        reasons.add(body["reason"])
        return body if body["comfyui"]["state"] == "FATAL" else None

    body = wait_until(fatal, what="comfyui FATAL")
    assert body["reason"] == "comfyui exited with code 1 twice during start-up and supervisord gave up (FATAL)"
    assert body["state"] == "starting"
    assert not [reason for reason in reasons if "sk-7f3a9c" in reason or "could not be started" in reason], reasons
    assert "sk-7f3a9c" not in served_text(sidecar)
    # The log's words are for a person in the Pod: `status` quotes the crash of the process that died.
    status = run_status(world)
    errors = status.split("last errors", 1)[1]
    assert f"comfyui  RuntimeError: {SECRET}" in errors, status
    assert "exited with code 1" in errors, status
    assert len(log_lines(sidecar, "exited with code 1 after")) == 2, sidecar.proc.output()


def test_sigkill_is_named_with_the_oom_hint_and_nothing_of_an_earlier_life_is_quoted(world: World) -> None:
    supervisor = world.supervisor(standin_env={"STANDIN_BOOT_DELAY_S": "1"})
    sidecar = world.sidecar()
    status, body = sidecar.readyz(wait_s=60)
    assert status == 200, body
    first_pid = body["comfyui"]["pid"]
    fail_a_job(world, sidecar)

    os.kill(first_pid, signal.SIGKILL)  # what the kernel's OOM killer does
    killed = f"comfyui (pid {first_pid}) was killed (SIGKILL: often the kernel's out-of-memory killer)"
    reasons = reasons_until_ready_again(sidecar, first_pid)
    assert any(reason.startswith(killed) for reason in reasons), reasons
    # The new life logged no error: status shows the kill, and nothing of the job that failed before it.
    status = run_status(world)
    assert "sk-7f3a9c" not in status, status
    assert f"comfyui  pid {first_pid} was killed (SIGKILL: often the kernel's out-of-memory killer)" in status
    assert len(log_lines(sidecar, f"WARNING healthcheck.monitor: {killed} after ")) == 1, sidecar.proc.output()
    # The transition's own line (what a job failing at that moment hears too) already names the signal.
    [transition] = log_lines(sidecar, "readiness ready -> unready")
    assert killed in transition, transition
    assert supervisor.info()["pid"] != first_pid


def test_once_ready_again_readyz_still_says_how_the_previous_process_ended(world: World) -> None:
    # A job that lost its ComfyUI may ask only after the restart is ready: the account must still be there.
    world.supervisor()
    sidecar = world.sidecar()
    status, body = sidecar.readyz(wait_s=60)
    assert status == 200, body
    first_pid = body["comfyui"]["pid"]
    assert "last_end" not in body["comfyui"], body  # no earlier process: nothing to say

    os.kill(first_pid, signal.SIGKILL)
    reasons_until_ready_again(sidecar, first_pid)
    status, body = sidecar.readyz(wait_s=60)
    assert status == 200 and body["comfyui"]["pid"] != first_pid, body
    assert (
        body["comfyui"]["last_end"]
        == f"comfyui (pid {first_pid}) was killed (SIGKILL: often the kernel's out-of-memory killer)"
    ), body


def test_after_a_crash_and_a_requested_restart_readyz_names_the_stopped_process(world: World) -> None:
    # The process before the current one was stopped on request: an older crash is not its end.
    supervisor = world.supervisor()
    sidecar = world.sidecar()
    status, body = sidecar.readyz(wait_s=60)
    assert status == 200, body
    first_pid = body["comfyui"]["pid"]
    os.kill(first_pid, signal.SIGKILL)
    reasons_until_ready_again(sidecar, first_pid)
    second_pid = sidecar.readyz(wait_s=60)[1]["comfyui"]["pid"]

    supervisor.rpc().stopProcess("comfyui")
    supervisor.rpc().startProcess("comfyui")
    reasons_until_ready_again(sidecar, second_pid)
    status, body = sidecar.readyz(wait_s=60)
    assert status == 200 and body["comfyui"]["pid"] not in (first_pid, second_pid), body
    assert body["comfyui"]["last_end"] == f"comfyui (pid {second_pid}) was stopped", body


def test_a_crash_with_an_exit_code_names_the_code(world: World) -> None:
    world.supervisor(standin_env={"STANDIN_BOOT_DELAY_S": "1"})
    sidecar = world.sidecar()
    status, body = sidecar.readyz(wait_s=60)
    assert status == 200, body
    first_pid = body["comfyui"]["pid"]
    fail_a_job(world, sidecar)

    image = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
    crash = {"class_type": "StandinExit", "inputs": {"code": 7, "image": ["1", 0]}}
    save = {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}
    queue(world, {"1": image, "2": crash, "3": save})
    reasons = reasons_until_ready_again(sidecar, first_pid)
    assert any(reason.startswith(f"comfyui (pid {first_pid}) exited with code 7") for reason in reasons), reasons
    status = run_status(world)
    assert "sk-7f3a9c" not in status, status
    assert f"comfyui  pid {first_pid} exited with code 7" in status


def queue(world: World, prompt: dict) -> str:
    comfy = f"http://127.0.0.1:{world.comfy_port}"
    answer = requests.post(comfy + "/prompt", json={"prompt": prompt, "client_id": "test"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["prompt_id"]


def fail_a_job(world: World, sidecar: Sidecar) -> None:
    """A job fails with its prompt in the error: ComfyUI logs it, `status` shows it (it is this life's error)."""
    fail = {"class_type": "StandinFail", "inputs": {"message": SECRET}}
    save = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}
    prompt_id = queue(world, {"1": fail, "2": save})
    history = f"http://127.0.0.1:{world.comfy_port}/history/{prompt_id}"
    wait_until(lambda: requests.get(history, timeout=10).json(), what="the job ended")
    assert f"comfyui  RuntimeError: {SECRET}" in run_status(world)
    assert "sk-7f3a9c" not in served_text(sidecar)


def reasons_until_ready_again(sidecar: Sidecar, dead_pid: int) -> list[str]:
    """Every /readyz reason from now until another ComfyUI process is ready; none may quote the log."""
    reasons: list[str] = []

    def ready_again() -> bool:
        body = sidecar.readyz()[1]
        reasons.append(body["reason"])
        return body["ready"] and body["comfyui"]["pid"] != dead_pid

    wait_until(ready_again, 60, "ready again")
    quoted = [r for r in reasons if "sk-7f3a9c" in r or "Prompt executed" in r or "could not be started" in r]
    assert quoted == [], quoted
    assert "sk-7f3a9c" not in served_text(sidecar)
    return reasons


def test_a_hung_comfyui_becomes_unready_after_consecutive_timeouts(world: World) -> None:
    world.supervisor(standin_env={"STANDIN_HANG_AFTER_S": "1"})
    sidecar = world.sidecar(PROBE_INTERVAL_S="0.1", PROBE_TIMEOUT_S="0.3", UNREADY_AFTER_FAILURES="3")
    assert sidecar.readyz(wait_s=30)[0] == 200
    body = sidecar.wait_state("unready")
    assert "no answer in time" in body["reason"], body
    transitions = log_lines(sidecar, "ready -> unready")
    assert len(transitions) == 1 and "3 probes in a row" in transitions[0], transitions
    # Scrapes stay quick and show the staleness instead of blocking on ComfyUI.
    text = sidecar.metrics()
    assert sample_value(text, "comfy_worker_comfyui_last_probe_timestamp_seconds") < time.time() - 0.2
    assert requests.get(sidecar.url + "/livez", timeout=5).status_code == 200


def test_without_supervisord_readiness_comes_from_http_alone(world: World) -> None:
    world.standin()
    sidecar = world.sidecar()
    status, body = sidecar.readyz(wait_s=30)
    assert status == 200, body
    assert body["comfyui"]["pid"] is None
    assert "judging ComfyUI by HTTP alone" in sidecar.proc.output()
    assert "comfy_worker_program_up" not in sidecar.metrics()


@pytest.mark.parametrize("version", RELEASES)
def test_the_version_is_reported_and_probes_start_no_asset_scan(world: World, version: str) -> None:
    """0.38.1 starts an asset scan on every /object_info; the probe asks /system_stats only."""
    world.standin("--database-url", "sqlite:///:memory:", STANDIN_COMFYUI_VERSION=version)
    frames: list[dict] = []
    socket = wait_until(lambda: _websocket(world.comfy_port), what="the stand-in's WebSocket")
    reader = threading.Thread(target=_collect, args=(socket, frames), daemon=True)
    reader.start()
    sidecar = world.sidecar(PROBE_INTERVAL_S="0.05")
    assert sidecar.readyz(wait_s=30)[0] == 200
    text = sidecar.metrics_with("comfy_worker_comfyui_info")
    assert sample_value(text, "comfy_worker_comfyui_info", version=version) == 1
    # Many probes later (each scrape refreshes with the loop), not one scan was started by them.
    first = sample_value(text, "comfy_worker_comfyui_last_probe_timestamp_seconds")
    wait_until(
        lambda: sample_value(sidecar.metrics(), "comfy_worker_comfyui_last_probe_timestamp_seconds") > first + 1,
        what="a second of probes",
    )
    socket.close()
    reader.join(timeout=10)
    assert frames and frames[0]["type"] == "status", frames  # the socket was read all along
    scans = [f for f in frames if f.get("type") == "assets.seed.started" and "output" in f["data"]["roots"]]
    assert scans == [], scans


def _websocket(port: int):
    import websocket

    try:
        return websocket.create_connection(f"ws://127.0.0.1:{port}/ws?clientId=probe-watch", timeout=30)
    except (OSError, websocket.WebSocketException):
        return None


def _collect(socket, frames: list[dict]) -> None:
    import websocket

    with contextlib.suppress(OSError, websocket.WebSocketException):
        while True:
            message = socket.recv()
            if isinstance(message, str) and message:
                frames.append(json.loads(message))


def test_the_sidecar_itself_writes_no_multiprocess_files(world: World) -> None:
    multiproc = world.run_dir / "metrics"
    multiproc.mkdir()
    world.standin()
    sidecar = world.sidecar(PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    assert sidecar.readyz(wait_s=30)[0] == 200
    for _ in range(3):
        promtool_check(sidecar.metrics())
    assert list(multiproc.iterdir()) == []


@pytest.mark.parametrize("version", [RELEASES[0], NEWEST])
def test_warmup_runs_once_before_ready(world: World, tmp_path: Path, version: str) -> None:
    workflow = tmp_path / "warmup.json"
    workflow.write_text(
        json.dumps(
            {
                "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "warmup"}},
            }
        )
    )
    world.supervisor(standin_env={"STANDIN_COMFYUI_VERSION": version})
    sidecar = world.sidecar(WARMUP_WORKFLOW=str(workflow))
    status, body = sidecar.readyz(wait_s=30)
    assert status == 200, body
    output = sidecar.proc.output()
    assert output.index("warm-up: done") < output.index("readiness starting -> ready")
    assert output.count("warm-up: running") == 1
    # Nothing of it stays: no history entry, no output file.
    assert requests.get(f"http://127.0.0.1:{world.comfy_port}/history", timeout=5).json() == {}
    assert list((world.run_dir / "worker" / "output").iterdir()) == []


def test_a_failing_warmup_holds_readiness_back_and_says_why(world: World, tmp_path: Path) -> None:
    workflow = tmp_path / "warmup.json"
    workflow.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    supervisor = world.supervisor()
    # ComfyUI answers before the sidecar starts, so the short window is the warm-up's alone.
    wait_until(lambda: http_get(f"http://127.0.0.1:{supervisor.comfy_port}/system_stats", 1), what="stand-in up")
    sidecar = world.sidecar(WARMUP_WORKFLOW=str(workflow), COMFY_READY_TIMEOUT_S="2")
    body = wait_until(lambda: (b := sidecar.readyz()[1])["reason"].find("failed") >= 0 and b, what="warm-up failure")
    assert body["state"] == "starting"
    assert "warm-up workflow" in body["reason"] and "NoSuchNode" in body["reason"], body
    body = sidecar.wait_state("failed")
    assert "warm-up workflow" in body["reason"], body
    assert http_get(sidecar.url + "/ping").status_code == 503
