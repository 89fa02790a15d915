"""The supervised stack end to end: real supervisord, launch scripts, listeners, programs."""

from __future__ import annotations

import base64
import io
import re
import signal
import stat
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from tests.stack import Stack

PROGRAMS = ("comfyui", "sidecar", "handler")
EMPTY_IMAGE_JOB = {
    "workflow": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0xFF0000}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "stacktest"}},
    }
}


def assert_job_returns_png(stack: Stack) -> None:
    result = stack.runsync(EMPTY_IMAGE_JOB)
    assert result["status"] == "COMPLETED", result
    [item] = result["output"]["images"]
    assert item["type"] == "base64"
    image = Image.open(io.BytesIO(base64.b64decode(item["data"])))
    assert image.format == "PNG"
    assert image.size == (64, 48)
    assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def states(stack: Stack) -> dict[str, str]:
    return {info["name"]: info["statename"] for info in stack.rpc().supervisor.getAllProcessInfo()}


def test_stack_boots_and_runs_a_job(stack: Stack) -> None:
    stack.wait_running()
    assert {name: states(stack)[name] for name in PROGRAMS} == dict.fromkeys(PROGRAMS, "RUNNING")
    assert_job_returns_png(stack)


def test_supervisorctl_status_tail_restart(stack: Stack) -> None:
    stack.wait_running()
    status = stack.supervisorctl("status")
    for program in PROGRAMS:
        assert re.search(rf"^{program}\s+RUNNING", status.stdout, re.M), status.stdout
    tail = stack.supervisorctl("tail", "comfyui")
    assert "To see the GUI go to" in tail.stdout
    old_pid = stack.pid_of("comfyui")
    restart = stack.supervisorctl("restart", "comfyui")
    assert "comfyui: started" in restart.stdout, restart.stdout + restart.stderr
    assert stack.pid_of("comfyui") != old_pid
    stack.wait_for(lambda: stack.runsync(EMPTY_IMAGE_JOB)["status"] == "COMPLETED", 60, 0.5, "a job after restart")


def test_comfyui_killed_is_restarted_and_next_job_succeeds(stack: Stack) -> None:
    old_pid = stack.pid_of("comfyui")
    psutil.Process(old_pid).kill()
    stack.wait_for(lambda: states(stack)["comfyui"] == "RUNNING" and stack.pid_of("comfyui") != old_pid, 30)
    stack.wait_for(lambda: stack.runsync(EMPTY_IMAGE_JOB)["status"] == "COMPLETED", 60, 0.5, "a job after the kill")


def test_comfyui_listens_on_loopback_only(stack: Stack) -> None:
    listening = [
        conn.laddr
        for conn in psutil.Process(stack.pid_of("comfyui")).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening, "ComfyUI has no listening socket"
    assert all(addr.ip == "127.0.0.1" for addr in listening), listening


def test_control_socket_is_private_and_there_is_no_tcp_control(stack: Stack) -> None:
    sock = stack.home / ".run" / "supervisor.sock"
    assert sock.stat().st_mode & 0o777 == 0o700
    supervisord = psutil.Process(stack.rpc().supervisor.getPID())
    assert [c for c in supervisord.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN] == []


def test_every_stdout_line_names_its_program(stack: Stack) -> None:
    assert_job_returns_png(stack)
    stack.stop()
    prefix = re.compile(r"^\[(entrypoint|supervisord|comfyui|sidecar|handler|watchdog)\] ")
    unnamed = [line for line in stack.lines if not prefix.match(line)]
    assert unnamed == [], unnamed
    for program in PROGRAMS:
        assert any(line.startswith(f"[{program}] ") for line in stack.lines), program


def test_sigterm_stops_handler_sidecar_comfyui_in_order(stack: Stack) -> None:
    stack.wait_running()
    assert stack.stop(signal.SIGTERM, timeout_s=60) == 0
    # supervisord's own log is the authority on order: the log-forwarder, stopped last,
    # may be gone before it could copy the very last state change to stdout.
    supervisord_log = (stack.home / ".run" / "logs" / "supervisord.log").read_text()
    stopped = re.findall(r"stopped: (comfyui|sidecar|handler) ", supervisord_log)
    assert stopped == ["handler", "sidecar", "comfyui"], supervisord_log
    assert "stopped: handler (exit status 0)" in supervisord_log, "the handler ends by itself on SIGTERM"
    assert "Stopped server" in (stack.home / ".run" / "logs" / "comfyui.log").read_text(), "ComfyUI got SIGINT"
    assert stack.lines[-1] == "[entrypoint] exiting with code 0"


def test_logs_are_readable_by_their_owner_alone(stack: Stack) -> None:
    """They hold job error text: LOG_DIR 0700, every log file 0600 (supervisord runs with umask 077)."""
    assert_job_returns_png(stack)
    assert stack.stop() == 0
    logs = stack.home / ".run" / "logs"
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in logs.iterdir()}
    assert {"supervisord.log", "comfyui.log", "sidecar.log", "handler.log"} <= set(modes)
    assert {name: oct(mode) for name, mode in modes.items() if mode & 0o077} == {}


def expect_launch_failure(stack: Stack, message: str) -> None:
    code = stack.start().wait_exit(timeout_s=90)
    assert code == 78, stack.output()
    comfy_lines = [line for line in stack.lines if line.startswith("[comfyui] comfyui launch check failed")]
    assert comfy_lines and message in comfy_lines[-1], stack.output()
    assert "exiting with code 78" in stack.lines[-1]
    assert message in stack.lines[-1], "the container's last line should carry the cause"


def test_missing_volume(make_stack, tmp_path: Path) -> None:
    stack = make_stack(COMFYUI_DIR="", VOLUME_MOUNTS=f"{tmp_path}/no-runpod-volume {tmp_path}/no-workspace")
    expect_launch_failure(stack, "no network volume")


def test_missing_main_py(make_stack, tmp_path: Path) -> None:
    empty = tmp_path / "ComfyUI"
    empty.mkdir()
    expect_launch_failure(make_stack(COMFYUI_DIR=str(empty)), "has no main.py")


def test_dangling_venv_python(make_stack, tmp_path: Path) -> None:
    venv = tmp_path / "com_venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to("/nonexistent/bin/python3.10")
    (venv / "pyvenv.cfg").write_text("home = /nonexistent/bin\nversion = 3.10.14\n")
    stack = make_stack(COMFYUI_VENV=str(venv))
    expect_launch_failure(stack, "dangling link to /nonexistent/bin/python3.10")
    assert "Python 3.10.14" in stack.lines[-1]


def test_venv_without_torch(make_stack) -> None:
    stack = make_stack(COMFY_VENV_REQUIRED_MODULES="torch")
    expect_launch_failure(stack, "cannot import: torch")


def test_never_ready_exits_non_zero_after_the_window(make_stack) -> None:
    stack = make_stack(STANDIN_NEVER_READY="1", COMFY_READY_TIMEOUT_S="4")
    started = time.monotonic()
    code = stack.start().wait_exit(timeout_s=60)
    assert code == 3, stack.output()
    assert time.monotonic() - started >= 4
    assert "ComfyUI did not become ready in time" in stack.lines[-1]


@pytest.mark.parametrize("crash", ["ModuleNotFoundError: No module named 'torchsde'"])
def test_comfyui_crash_loop_goes_fatal_and_exits_with_the_cause(make_stack, crash: str) -> None:
    stack = make_stack(STANDIN_CRASH_ON_START=crash)
    code = stack.start().wait_exit(timeout_s=90)
    assert code == 4, stack.output()
    assert sum("STARTING -> BACKOFF" in line for line in stack.lines if line.startswith("[supervisord] comfyui")) == 3
    assert crash in stack.lines[-1]


def test_bad_handler_setting_exits_78_naming_the_variable(make_stack) -> None:
    stack = make_stack(JOB_TIMEOUT_S="ten minutes")
    code = stack.start().wait_exit(timeout_s=90)
    assert code == 78, stack.output()
    assert "handler cannot start" in stack.lines[-1] and "JOB_TIMEOUT_S" in stack.lines[-1]


def test_bad_sidecar_setting_exits_78_naming_the_variable(make_stack) -> None:
    stack = make_stack(PROBE_INTERVAL_S="soon")
    code = stack.start().wait_exit(timeout_s=90)
    assert code == 78, stack.output()
    assert "sidecar cannot start" in stack.lines[-1] and "PROBE_INTERVAL_S" in stack.lines[-1]
