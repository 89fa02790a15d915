"""The sidecar in the real worker stack (services/entrypoint, supervisord.conf, the launch scripts).

What only the whole stack shows: an orderly stop as supervisord performs it, `status` and
`probe` run from a checkout while another stack runs, and ComfyUI's custom node report read
from the log that services/comfyui starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import requests

from tests.sidecar_world import sample_value
from tests.stack import VENV, Stack
from worker_common.custom_nodes import FILE_NAME

FAILED_PACK_KNOB = "STANDIN_FAILED_CUSTOM_NODES"


def sidecar_lines(stack: Stack) -> list[str]:
    return [line for line in stack.lines if line.startswith("[sidecar] ")]


def cli(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m healthcheck ...` from the stack's checkout, in a shell that knows nothing of the stack."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "SIDECAR_", "COMFY", "PORT_"))}
    command = [str(VENV / "bin" / "python"), "-m", "healthcheck", *args]
    return subprocess.run(command, env=clean | env, cwd=stack.home, capture_output=True, text=True, timeout=60)


def run_ignoring_the_stop(stack: Stack, job: dict) -> None:
    with contextlib.suppress(requests.RequestException):
        stack.runsync(job)


def test_an_orderly_stop_logs_nothing_alarming(stack: Stack) -> None:
    """supervisord refuses questions (SHUTDOWN_STATE) while it waits for the handler to end its job."""
    stack.wait_running()
    assert requests.get(f"{stack.sidecar_url}/readyz", timeout=10).json()["ready"] is True
    sleep = {"1": {"class_type": "StandinSleep", "inputs": {"seconds": 4.0, "steps": 4}}}
    sleep["2"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "stop"}}
    job = threading.Thread(target=run_ignoring_the_stop, args=(stack, {"workflow": sleep}))
    job.start()
    queue = f"{stack.comfy_url}/queue"
    stack.wait_for(lambda: requests.get(queue, timeout=10).json()["queue_running"], 60, what="the job running")
    assert stack.stop(signal.SIGTERM, timeout_s=90) == 0
    job.join(timeout=60)
    lines = sidecar_lines(stack)
    assert any("INFO healthcheck.probe: supervisord is stopping the worker" in line for line in lines), lines
    assert any("received SIGTERM: stopping" in line for line in lines), lines
    alarming = [line for line in lines if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    assert alarming == [], alarming
    assert not (stack.home / ".run" / "sidecar.json").exists()  # the record goes with the sidecar


def test_status_and_probe_in_each_checkout_find_their_own_stack(make_stack) -> None:
    first, second = make_stack().start(), make_stack(STANDIN_NEVER_READY="1").start()
    first.wait_accepting_jobs()
    second.wait_for(lambda: (second.home / ".run" / "sidecar.json").exists(), 60, what="the second sidecar's record")
    record = json.loads((first.home / ".run" / "sidecar.json").read_text())
    assert record["url"] == first.sidecar_url and record["comfy_port"] == first.comfy_port

    # Each shell carries the *other* stack's ports, as after `SIDECAR_PORT=... make run` elsewhere.
    status = cli(first, "status", SIDECAR_PORT=str(second.sidecar_port), COMFY_PORT=str(second.comfy_port))
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"sidecar     answering at {first.sidecar_url}" in status.stdout
    comfy_row = next(line for line in status.stdout.splitlines() if line.startswith("comfyui "))
    assert comfy_row.split()[2] == str(first.pid_of("comfyui"))
    assert cli(first, "probe", SIDECAR_PORT=str(second.sidecar_port)).returncode == 0

    probe = cli(second, "probe", SIDECAR_PORT=str(first.sidecar_port))
    assert probe.returncode == 1 and probe.stdout.startswith("not ready: starting: "), probe.stdout
    status = cli(second, "status", SIDECAR_PORT=str(first.sidecar_port))
    assert f"sidecar     answering at {second.sidecar_url}" in status.stdout and "STARTING" in status.stdout


def test_a_pack_that_failed_to_import_shows_in_status_metrics_the_log_and_the_run_dir(make_stack) -> None:
    error = "ModuleNotFoundError: No module named 'cv2'"
    stack = make_stack(**{FAILED_PACK_KNOB: f"comfyui_controlnet_aux={error}"}).start()
    stack.wait_accepting_jobs()
    pack_path = str(Path(stack.comfyui_dir) / "custom_nodes" / "comfyui_controlnet_aux")
    run_dir = stack.home / ".run"
    stack.wait_for(lambda: (run_dir / FILE_NAME).exists(), 60, what="the custom node report")
    body = json.loads((run_dir / FILE_NAME).read_text())
    assert body["failed"] == [{"name": "comfyui_controlnet_aux", "path": pack_path, "error": error}]
    assert body["comfyui_pid"] == stack.pid_of("comfyui")

    text = requests.get(f"{stack.sidecar_url}/metrics", timeout=10).text
    assert sample_value(text, "comfy_worker_custom_node_import_failures") == 1
    assert sample_value(text, "comfy_worker_custom_node_import_failed_info", pack="comfyui_controlnet_aux") == 1
    assert "cv2" not in requests.get(f"{stack.sidecar_url}/readyz", timeout=10).text

    status = cli(stack, "status")
    assert "custom nodes  1 pack(s) failed to import; their nodes do not exist:" in status.stdout, status.stdout
    assert f"  comfyui_controlnet_aux  {error}  ({pack_path})" in status.stdout

    reported = [line for line in sidecar_lines(stack) if "could not import" in line]
    assert len(reported) == 1 and f"comfyui_controlnet_aux ({error})" in reported[0], reported
