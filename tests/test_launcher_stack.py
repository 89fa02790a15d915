"""The launcher and the entrypoint in the real stack: ComfyUI's flags and user, supervisord's death, the logs."""

from __future__ import annotations

import os
import platform
import pwd
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.cli_args_files import RELEASE_9_0_0, write_install
from tests.stack import Stack, traversable_tmp
from tests.test_stack import EMPTY_IMAGE_JOB, assert_job_returns_png

SECRET = "comfy-org-key-only-the-handler-may-see"
PREFIXED = re.compile(r"^\[(entrypoint|supervisord|comfyui|sidecar|handler|watchdog)\] ")
REPORT_LINE = re.compile(r"^\[entrypoint\] (volume report for |volume \(shared|worker \S+ \(its own|models/)")
# Run by ComfyUI's own venv Python as ComfyUI's user: what that user may do with a path.
TRY = """
import sys
action, path = sys.argv[1:]
try:
    open(path, "w").close() if action == "write" else open(path, "rb").read()
    print("allowed")
except PermissionError:
    print("denied")
"""


@pytest.fixture
def stacks() -> Iterator[Callable[..., Stack]]:
    """Build (not start) stacks with Stack's options, in a folder every user can traverse; all killed at the end."""
    made: list[Stack] = []
    with traversable_tmp() as root:

        def build(env: dict[str, str] | None = None, **options) -> Stack:
            made.append(Stack(root / f"stack{len(made)}", env, **options))
            return made[-1]

        yield build
        for stack in made:
            stack.kill_everything()


def port_is_free(port: int) -> bool:
    """Nothing listens on it (SO_REUSEADDR: connections of the dead server may linger in TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def comfyui_argv(stack: Stack) -> list[str]:
    return psutil.Process(stack.pid_of("comfyui")).cmdline()


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_comfyui_gets_the_worker_folders_and_its_releases_flags_prepared_once(stacks) -> None:
    # CLEANUP_INPUTS=false: the handler's own sweep (when no job is in flight) leaves input/ alone.
    stack = stacks({"CLEANUP_INPUTS": "false"}, comfyui_version="0.38.1").start()
    stack.wait_accepting_jobs()
    layout, argv = stack.layout, comfyui_argv(stack)
    assert flag_value(argv, "--input-directory") == str(layout.input)
    assert flag_value(argv, "--output-directory") == str(layout.output)
    assert flag_value(argv, "--user-directory") == str(layout.user)
    assert Path(flag_value(argv, "--temp-directory")) / "temp" == layout.temp
    assert "--disable-assets" in argv, "0.38.1 has the asset database: off for a worker"
    assert_job_returns_png(stack)

    reports = [i for i, line in enumerate(stack.lines) if line.startswith("[entrypoint] volume report for ")]
    assert [stack.lines[i] for i in reports] == [
        f"[entrypoint] volume report for {stack.comfyui_dir}: ComfyUI 0.38.1 (from comfyui_version.py), "
        f"venv Python {platform.python_version()}"
    ]
    assert (
        f"[entrypoint] worker {layout.worker_id} (its own, on the container's disk): input {layout.input},"
        in (stack.lines[reports[0] + 2])
    )

    queued = layout.input / "queued-job" / "photo.png"  # a job's input, waiting across a ComfyUI restart
    queued.parent.mkdir()
    queued.write_bytes(b"png")
    restart = stack.supervisorctl("restart", "comfyui")
    assert "comfyui: started" in restart.stdout, restart.stdout + restart.stderr
    assert queued.read_bytes() == b"png", "the worker's folders are prepared once per container start"
    assert sum(line.startswith("[entrypoint] volume report for ") for line in stack.lines) == 1
    stack.wait_for(lambda: stack.runsync(EMPTY_IMAGE_JOB)["status"] == "COMPLETED", 60, 0.5, "a job after restart")


def test_a_release_never_seen_starts_with_exactly_the_flags_its_cli_args_declares(stacks) -> None:
    """The install says 9.0.0 and holds 9.0.0's cli_args.py, which the stand-in parses its command line with:
    a flag it does not declare would end it with exit 2, and the worker would never come up."""
    stack = stacks({"COMFY_EXTRA_ARGS": "--gpu-bud 12 --assets=off", "COMFY_LOG_LEVEL": "warning"})
    cli_args = write_install(stack.comfyui_dir, "9.0.0", RELEASE_9_0_0) / "comfy" / "cli_args.py"
    stack.start().wait_accepting_jobs()
    argv = comfyui_argv(stack)
    assert "--disable-auto-launch" not in argv and "--disable-assets" not in argv, "9.0.0 has neither"
    assert argv[-5:] == ["--verbose", "WARNING", "--gpu-budget", "12", "--assets=off"]
    assert any(line.startswith(f"[comfyui] ComfyUI's flags: read from {cli_args} (") for line in stack.lines)
    assert_job_returns_png(stack)


@pytest.mark.parametrize(
    ("extra_args", "named"),
    [
        ("--highvram --normalvram", "COMFY_EXTRA_ARGS has --normalvram, a flag ComfyUI 0.38.1 does not know"),
        ("--liste 127.0.0.2", "may not contain --liste (ComfyUI reads it as --listen)"),
        ("--output-directory /tmp/elsewhere", "folders of its own under WORKER_DATA_DIR"),
    ],
)
def test_comfy_extra_args_that_may_not_pass_stop_the_container_with_78(stacks, extra_args: str, named: str) -> None:
    stack = stacks({"COMFY_EXTRA_ARGS": extra_args}, comfyui_version="0.38.1")
    code = stack.start().wait_exit(timeout_s=90)
    assert code == 78, stack.output()
    assert any(line.startswith("[comfyui] comfyui launch check failed: ") and named in line for line in stack.lines)
    assert stack.lines[-1].startswith("[entrypoint] exiting with code 78: comfyui cannot start: "), stack.output()
    assert named in stack.lines[-1]
    assert not any("To see the GUI go to" in line for line in stack.lines), "ComfyUI never started"


def test_supervisord_killed_takes_every_program_down_and_exits_70(stacks, tmp_path: Path) -> None:
    stack = stacks()
    log = tmp_path / "container.log"
    stack.start(output_file=log)
    stack.wait_accepting_jobs()
    rpc = stack.rpc()
    supervisord = rpc.supervisor.getPID()
    programs = {info["name"]: info["pid"] for info in rpc.supervisor.getAllProcessInfo()}
    assert set(programs) == {"comfyui", "sidecar", "handler", "log-forwarder", "watchdog"}
    assert all(programs.values()), programs

    os.kill(supervisord, signal.SIGKILL)
    assert stack.wait_exit(timeout_s=60) == 70, stack.output()
    alive = {name: pid for name, pid in programs.items() if psutil.pid_exists(pid) and not _zombie(pid)}
    assert alive == {}, "every program of supervisord goes down with it"
    ports = {"comfyui": stack.comfy_port, "sidecar": stack.sidecar_port, "local API": stack.api_port}
    assert {name: port for name, port in ports.items() if not port_is_free(port)} == {}
    assert stack.lines[-1] == (
        "[entrypoint] exiting with code 70: supervisord ended unexpectedly (killed by SIGKILL); "
        "every program it had started was stopped"
    ), stack.output()
    assert any(re.match(r"\[entrypoint\] stopping \d+ processes supervisord left running", ln) for ln in stack.lines)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(os.geteuid() != 0, reason="ComfyUI runs as a user of its own only when the stack runs as root")
def test_comfyui_as_its_own_user_reaches_neither_secrets_nor_logs_nor_the_volume(stacks, tmp_path: Path) -> None:
    stack = stacks({"COMFY_ORG_API_KEY": SECRET}, comfyui_user="nobody")
    log = tmp_path / "container.log"
    stack.start(output_file=log)
    stack.wait_accepting_jobs()
    assert_job_returns_png(stack)
    comfyui, handler = psutil.Process(stack.pid_of("comfyui")), psutil.Process(stack.pid_of("handler"))
    nobody = pwd.getpwnam("nobody").pw_uid
    assert tuple(comfyui.uids()) == (nobody, nobody, nobody)
    assert handler.environ().get("COMFY_ORG_API_KEY") == SECRET, "the handler has the key (as root sees it)"
    assert "COMFY_ORG_API_KEY" not in comfyui.environ()
    assert comfyui.environ()["HOME"] == str(stack.layout.home)

    python = Path(stack.env["COMFYUI_VENV"]) / "bin" / "python"
    logs = stack.home / ".run" / "logs"

    def as_comfyui(action: str, path: Path) -> str:
        done = subprocess.run(
            [str(python), "-c", TRY, action, str(path)], user="nobody", capture_output=True, text=True, timeout=60
        )
        return done.stdout.strip() or done.stderr

    assert as_comfyui("read", Path(f"/proc/{handler.pid}/environ")) == "denied"
    assert as_comfyui("read", logs / "handler.log") == "denied"
    assert as_comfyui("write", stack.comfyui_dir / "written-by-comfyui.txt") == "denied"
    assert as_comfyui("write", stack.comfyui_dir / "input" / "written-by-comfyui.png") == "denied"
    assert as_comfyui("write", stack.layout.output / "its-own-folder.txt") == "allowed"

    assert stack.stop() == 0
    assert [line for line in stack.lines if not PREFIXED.match(line)] == []
    own = [line for line in stack.lines if line.startswith("[entrypoint] ") and not REPORT_LINE.match(line)]
    assert [re.sub(r"\d+", "N", line) for line in own] == [
        "[entrypoint] supervisord started (pid N)",
        "[entrypoint] received SIGTERM: stopping handler, sidecar, comfyui in that order",
        "[entrypoint] exiting with code N",
    ], "nothing alarming on a normal stop"
    assert stack.lines[-1] == "[entrypoint] exiting with code 0", "a normal stop: the reason is the last line"
