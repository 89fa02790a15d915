"""`python -m healthcheck status` and `probe`, as a person or Docker would run them."""

from __future__ import annotations

import subprocess
import sys

from healthcheck.status import Report, render
from tests.sidecar_world import REPO, World, base_env, wait_until
from worker_common.contract import Readiness, SidecarStatus


def run_cli(world: World, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m healthcheck ARGS` as a shell in this world's stack runs it: only the run dir is known."""
    full_env = base_env(WORKER_RUN_DIR=str(world.run_dir), **env)
    return subprocess.run(
        [sys.executable, "-m", "healthcheck", *args], env=full_env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_status_of_a_ready_worker(world: World) -> None:
    supervisor = world.supervisor()
    sidecar = world.sidecar()
    assert sidecar.readyz(wait_s=30)[0] == 200
    sidecar.metrics_with("comfy_worker_queue_pending")
    result = run_cli(world, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"sidecar     answering at http://127.0.0.1:{sidecar.port}" in out
    assert "readiness   READY for " in out and "answers on 127.0.0.1:" in out
    assert "start-up    ready " in out
    comfy_row = next(line for line in out.splitlines() if line.startswith("comfyui "))
    assert str(supervisor.info()["pid"]) in comfy_row
    assert comfy_row.split()[1] in ("RUNNING", "STARTING")
    assert comfy_row.split()[4] == "0"  # restarts
    assert "GPU  NAME" in out and "comfyui" in out.split("GPU  NAME", 1)[1].splitlines()[1]
    assert "queue       running 0, pending 0" in out
    assert "version     ComfyUI 0.3.64" in out
    assert "custom nodes  every pack imported" in out
    assert "none in the programs' recent logs" in out


def test_status_and_probe_when_the_sidecar_is_down(world: World) -> None:
    world.supervisor(
        standin_env={"STANDIN_CRASH_ON_START": "ModuleNotFoundError: No module named torchsde"},
        startsecs=10,
        startretries=0,
    )
    wait_until(lambda: _fatal(world), what="comfyui FATAL")
    result = run_cli(world, "status")
    assert (result.returncode, result.stderr) == (1, "")
    out = result.stdout
    assert f"sidecar     DOWN: no sidecar has recorded its address in {world.run_dir}/sidecar.json" in out, out
    assert "readiness   unknown" in out
    comfy_row = next(line for line in out.splitlines() if line.startswith("comfyui "))
    assert comfy_row.split()[1] == "FATAL" and comfy_row.split()[4] == "?"
    assert "queue       unknown" in out
    errors = out.split("last errors", 1)[1]
    assert "comfyui  ModuleNotFoundError: No module named torchsde" in errors, out
    assert "exited with code 1" in errors, out

    probe = run_cli(world, "probe")
    assert probe.returncode == 1
    assert probe.stdout.startswith("not ready: sidecar does not answer: no sidecar has recorded its address")
    # An explicit --url is asked, whatever the record says.
    assert "DOWN: no answer at http://127.0.0.1:1 " in run_cli(world, "status", "--url", "http://127.0.0.1:1").stdout
    probe = run_cli(world, "probe", "--url", "http://127.0.0.1:1")
    assert probe.returncode == 1 and probe.stdout.startswith("not ready: sidecar does not answer")


def test_status_and_probe_ask_their_own_stack_whatever_the_shell_says() -> None:
    """Two stacks: a shell with the other one's SIDECAR_PORT and COMFY_PORT still gets its own."""
    ready, starting = World(), World()
    try:
        ready.supervisor()
        ready_sidecar = ready.sidecar()
        starting_sidecar = starting.sidecar()  # no ComfyUI: starting for the whole test
        assert ready_sidecar.readyz(wait_s=30)[0] == 200
        other = {"SIDECAR_PORT": str(starting_sidecar.port), "COMFY_PORT": str(starting.comfy_port)}
        result = run_cli(ready, "status", **other)
        assert result.returncode == 0, result.stdout
        assert f"sidecar     answering at {ready_sidecar.url}" in result.stdout
        assert "readiness   READY" in result.stdout
        assert run_cli(ready, "probe", **other).returncode == 0
        other = {"SIDECAR_PORT": str(ready_sidecar.port), "COMFY_PORT": str(ready.comfy_port)}
        probe = run_cli(starting, "probe", **other)
        assert (probe.returncode, probe.stdout.split(": ")[1]) == (1, "starting"), probe.stdout
        assert "readiness   STARTING" in run_cli(starting, "status", **other).stdout
        # Stopped in order, a sidecar takes its record with it: the stack reads as down, not as the other one.
        assert ready_sidecar.close() == 0
        result = run_cli(ready, "status", SIDECAR_PORT=str(starting_sidecar.port))
        assert "sidecar     DOWN: no sidecar has recorded its address" in result.stdout, result.stdout
    finally:
        ready.close()
        starting.close()


def _fatal(world: World) -> bool:
    from worker_common.supervisor_rpc import supervisor_proxy

    return (
        supervisor_proxy(world.run_dir / "supervisor.sock").supervisor.getProcessInfo("comfyui")["statename"] == "FATAL"
    )


def test_probe_follows_readiness(world: World) -> None:
    sidecar = world.sidecar()
    result = run_cli(world, "probe")
    assert result.returncode == 1
    assert result.stdout.startswith("not ready: starting: ")
    status = run_cli(world, "status")  # no supervisord here: the table says so, nothing else does
    assert status.stderr == "" and "supervisord does not answer" in status.stdout, status.stdout + status.stderr
    world.standin()
    assert sidecar.readyz(wait_s=30)[0] == 200
    result = run_cli(world, "probe")
    assert (result.returncode, result.stdout) == (0, "")


def test_render_without_supervisord_or_figures() -> None:
    report = Report(url="http://127.0.0.1:8081", now=1_790_000_000.0)
    readiness = {
        "ready": False,
        "state": "unready",
        "since": 1_790_000_000.0 - 75,
        "startup_window_left_s": 0.0,
        "comfyui": {"pid": None, "state": "UNKNOWN", "restarts": 0},
        "reason": "GET /system_stats: no answer in time (3 probes in a row)",
    }
    report.sidecar = SidecarStatus(Readiness.from_body(readiness), loop_age_s=0.4)
    report.supervisor_error = "[Errno 2] No such file or directory"
    report.exit_reason = "comfyui went FATAL"
    text = render(report)
    assert "readiness   UNREADY for 1m15s: GET /system_stats: no answer in time (3 probes in a row)" in text
    assert "probe loop ticked 0.4s ago" in text
    assert "supervisord does not answer: [Errno 2] No such file or directory" in text
    assert "GPU         no figures" in text
    assert "exit-reason  comfyui went FATAL" in text
