"""`make run` end to end, as a person meets it: its exit, its last line, Ctrl-C, its log lines.

One `make run` serves the tests that need a running stack (the demo job, a second `make run`,
the `comfy-worker` commands, the README's Pod commands); the module's last test stops it
with Ctrl-C and checks the log-format rules over everything it printed. The failures each
get a `make run` of their own, which ends within seconds.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.log_format import PYTHON_LOGGING, violations
from tests.make_run import (
    MakeRun,
    assert_follows,
    matches,
    prepare_checkout,
    readme_example,
    split_example,
)
from tests.stack import REPO

MAKE_ERROR = re.compile(r"make: \*\*\* \[Makefile:\d+: run\] Error (\d+)$")
KEEPS_RUNNING = "[run-local] the stack keeps running"
# Long enough that the demo's own deadline (this + 30 s) cannot end a test: only the stack's end can.
NEVER = "900"
README_TEXT = (REPO / "README.md").read_text()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    run = MakeRun(prepare_checkout(tmp_path_factory.mktemp("make-run"))).start()
    try:
        run.wait_line(KEEPS_RUNNING)
        yield run
    finally:
        run.kill_everything()


def started_lines(run: MakeRun) -> list[str]:
    return [line for line in run.lines if re.search(r"\bjob \S+ started|Started\.", line)]


def tool(run: MakeRun, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """bin/comfy-worker or bin/supervisorctl of the running checkout, from a shell with its settings."""
    return subprocess.run(
        [str(run.home / "bin" / args[0]), *args[1:]],
        env=run.env,
        cwd=run.home,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


# -- a running stack ---------------------------------------------------------------


def test_demo_job_runs_once_and_the_stack_keeps_running(running: MakeRun) -> None:
    done = running.wait_line("[demo] job done in")
    image = Path(done.rpartition("output image: ")[2])
    assert image.is_relative_to(running.home / ".run" / "demo-output")
    assert Image.open(image).format == "PNG"
    [started] = started_lines(running)  # the handler's line only: the SDK's repeat goes to DEBUG
    assert PYTHON_LOGGING.match(started.removeprefix("[handler] "))
    assert running.alive()
    before_ctrl_c, _, _ = split_example(readme_example("make run"))
    assert_follows(before_ctrl_c, running.lines)


def test_a_second_make_run_in_the_same_checkout_is_refused(running: MakeRun) -> None:
    for command in (("make", "run"), ("scripts/run-local",)):
        second = MakeRun(running.home, running.env, command).start()
        code = second.wait(120)
        refusal = second.lines[-1]
        assert refusal.startswith("[entrypoint] exiting with code 75: a worker stack from "), second.output()
        assert "already running" in refusal, second.output()
        assert not [line for line in second.lines if line.startswith("[demo]")], "no job for the other stack"
        if command == ("scripts/run-local",):
            assert code == 75 and second.errors == [], second.output()
        else:
            assert code == 2 and [MAKE_ERROR.match(line)[1] for line in second.errors] == ["75"], second.output()
    assert len(started_lines(running)) == 1, "the running stack got no second job"


def test_comfy_worker_answers_for_this_stack(running: MakeRun) -> None:
    status = tool(running, "comfy-worker", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r"^readiness\s+ready\b", status.stdout, re.M | re.I), status.stdout
    assert f"127.0.0.1:{running.env['SIDECAR_PORT']}" in status.stdout, "it asked this stack's sidecar"
    assert tool(running, "comfy-worker", "probe").returncode == 0
    readyz = tool(running, "comfy-worker", "readyz")
    assert readyz.returncode == 0 and json.loads(readyz.stdout)["ready"] is True
    assert json.loads(tool(running, "comfy-worker", "livez").stdout)["alive"] is True
    assert tool(running, "comfy-worker", "ping").returncode == 0
    metrics = tool(running, "comfy-worker", "metrics")
    assert metrics.returncode == 0 and "\ncomfy_worker_ready 1.0\n" in metrics.stdout
    assert_all_running(running)


def assert_all_running(run: MakeRun, timeout_s: float = 60) -> None:
    """Every program RUNNING in `supervisorctl status`: supervisord says so only after its `startsecs`."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = tool(run, "supervisorctl", "status").stdout
        if all(re.search(rf"^{program}\s+RUNNING", status, re.M) for program in ("comfyui", "sidecar", "handler")):
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def test_test_input_takes_a_request_with_or_without_the_wrapper(running: MakeRun, tmp_path: Path) -> None:
    request = json.loads((REPO / "test_input.json").read_text())
    input_alone = tmp_path / "input.json"
    input_alone.write_text(json.dumps(request["input"]))
    # The whole request (test_input.json) runs in test_readme_pod_commands_work_on_this_stack.
    for value in (str(input_alone), json.dumps(request["input"]["workflow"])):
        result = tool(running, "comfy-worker", "test-input", value)
        assert result.returncode == 0, result.stdout + result.stderr
        assert [line for line in result.stdout.splitlines() if not PYTHON_LOGGING.match(line)] == [], result.stdout
        assert "completed successfully" in result.stdout
    missing = tool(running, "comfy-worker", "test-input", "no-such-request.json")
    assert missing.returncode == 78
    assert "--test_input: 'no-such-request.json' is neither JSON nor a readable file" in missing.stdout


def pod_commands() -> list[str]:
    """The README's commands for a Pod shell."""
    section = README_TEXT.split("## Debugging in a Pod", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_pod_commands_work_on_this_stack(running: MakeRun) -> None:
    commands = pod_commands()
    assert commands
    for command in commands:
        words = shlex.split(command.replace("/opt/comfy-worker/", f"{running.home}/"))
        if "restart" in words:
            continue  # test_stack restarts ComfyUI; here the stack must stay as it is
        words = [word for word in words if word != "-f"]  # `tail -f` never ends
        result = tool(running, *words)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


def test_ctrl_c_stops_in_order_quietly_and_every_line_follows_its_format(running: MakeRun) -> None:
    running.interrupt()
    code = running.wait(120)
    assert code in (0, -signal.SIGINT), running.output()
    assert running.errors == [], "make says nothing on Ctrl-C"
    assert running.lines[-1] == "[entrypoint] exiting with code 0"
    assert not [line for line in running.lines if "Traceback" in line]
    assert violations(running.lines) == []
    _, after_ctrl_c, _ = split_example(readme_example("make run"))
    assert_follows(after_ctrl_c, running.lines)


# -- stacks that cannot run ----------------------------------------------------------


def test_missing_comfyui_ends_make_run_at_once_with_78_and_the_reason_last(tmp_path: Path) -> None:
    run = MakeRun(prepare_checkout(tmp_path), {"COMFYUI_DIR": "/nonexistent", "COMFY_READY_TIMEOUT_S": NEVER})
    try:
        code = run.start().wait(120)
    finally:
        run.kill_everything()
    assert code == 2 and [MAKE_ERROR.match(line)[1] for line in run.errors] == ["78"], run.output()
    last = "[entrypoint] exiting with code 78: comfyui cannot start: no ComfyUI at /nonexistent"
    assert run.lines[-1].startswith(last), run.output()
    assert not [line for line in run.lines if line.startswith("[demo]")], "the waiting demo is stopped quietly"
    example, _, make_lines = split_example(readme_example("COMFYUI_DIR=/nonexistent make run"))
    assert matches(example[-1], run.lines[-1]), "the README's last line is what is printed"
    assert matches(make_lines[-1], run.errors[-1])
    assert violations(run.lines) == []


def test_never_ready_comfyui_ends_run_local_with_3(tmp_path: Path) -> None:
    env = {"STANDIN_NEVER_READY": "1", "COMFY_READY_TIMEOUT_S": "4"}
    run = MakeRun(prepare_checkout(tmp_path), env, ("scripts/run-local",))
    try:
        code = run.start().wait(120)
    finally:
        run.kill_everything()
    assert code == 3, run.output()
    assert run.lines[-1].startswith("[entrypoint] exiting with code 3: ComfyUI did not become ready in time")
    assert not [line for line in run.lines if line.startswith("[demo]")]


def test_a_failed_demo_job_stops_the_stack_and_says_why_last(tmp_path: Path) -> None:
    run = MakeRun(prepare_checkout(tmp_path), {"RESPONSE_SIZE_LIMIT_BYTES": "1024"})  # the image cannot be returned
    try:
        code = run.start().wait(240)
    finally:
        run.kill_everything()
    assert code == 2 and [MAKE_ERROR.match(line)[1] for line in run.errors] == ["1"], run.output()
    assert "[entrypoint] exiting with code 0" in run.lines, "the stack was stopped in order"
    last = run.lines[-1]
    assert last.startswith("[run-local] exiting with code 1: the demo job failed: job ") and "FAILED" in last, last
    assert "RESPONSE_SIZE_LIMIT_BYTES" in last


def test_ctrl_c_while_the_demo_waits_for_its_job_stops_quietly(tmp_path: Path) -> None:
    run = MakeRun(prepare_checkout(tmp_path), {"STANDIN_EXEC_DELAY_S": "3"}).start()
    try:
        run.wait_line("[demo] sending")
        run.wait_line("[comfyui] got prompt")
        run.interrupt()
        code = run.wait(120)
    finally:
        run.kill_everything()
    assert code in (0, -signal.SIGINT), run.output()
    assert run.errors == []
    assert run.lines[-1] == "[entrypoint] exiting with code 0"
    assert not [line for line in run.lines if "Traceback" in line], run.output()
    assert not [line for line in run.lines if line.startswith("[demo]") and "sending" not in line]
    assert violations(run.lines) == []
