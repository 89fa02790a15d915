"""Brings the container down, with a meaningful exit code, when the worker cannot work.

Three events end the container (docs/design.md, exit codes):
- a critical program stops on a configuration error (ComfyUI's launch checks, a bad
  setting of the handler or the sidecar): exit 78;
- a critical program goes FATAL (it kept dying during start-up): exit 4;
- the handler exits with code 3 (ComfyUI never got ready within the start-up window).

The cause, taken from the end of the program's own log, is logged as one line and
written to the run dir beside the code; then supervisord is asked to shut down in order.
The entrypoint exits with the recorded code, so RunPod sees a failed worker and replaces it.
(supervisord itself dying is the entrypoint's to notice: it exits 70.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from supervisor import childutils

from worker_common import settings
from worker_common.contract import (
    CRITICAL_PROGRAMS,
    EXIT_CODE_FILE,
    EXIT_REASON_FILE,
    PROGRAM_HANDLER,
    ExitCode,
)
from worker_common.supervisor_rpc import supervisor_proxy

LOG_TAIL_BYTES = 4096


def last_log_line(rpc, program: str) -> str:
    """The last non-empty line of a program's log: usually the error that killed it."""
    try:
        text, _offset, _overflow = rpc.supervisor.tailProcessStdoutLog(program, 0, LOG_TAIL_BYTES)
    except Exception as error:  # the cause is a nicety; never let it stop the shutdown
        return f"(log unavailable: {error})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def config_error_verdict(program: str) -> tuple[int, str] | None:
    # supervisord forgets the exit status of a start-up failure, so a program that stops on a
    # configuration error leaves it in a file (launcher.launch, settings.record_config_error).
    config_error = settings.config_error_file(program)
    if config_error.is_file():
        return ExitCode.CONFIG, f"{program} cannot start: {config_error.read_text().strip()}"
    return None


def fatal_verdict(rpc, program: str) -> tuple[int, str]:
    cause = last_log_line(rpc, program)
    if cause == "(no output)":
        cause = rpc.supervisor.getProcessInfo(program).get("spawnerr") or cause
    return ExitCode.FATAL, f"{program} kept exiting during start-up and is FATAL: {cause}"


def decide(rpc, event: str, program: str) -> tuple[int, str] | None:
    """The exit code and cause this event calls for, or None when the container should live on."""
    if program not in CRITICAL_PROGRAMS or event not in ("PROCESS_STATE_FATAL", "PROCESS_STATE_EXITED"):
        return None
    verdict = config_error_verdict(program)
    if verdict is None and event == "PROCESS_STATE_FATAL":
        verdict = fatal_verdict(rpc, program)
    if verdict is None and program == PROGRAM_HANDLER and _exit_status(rpc, program) == ExitCode.NOT_READY:
        verdict = ExitCode.NOT_READY, f"ComfyUI did not become ready in time: {last_log_line(rpc, PROGRAM_HANDLER)}"
    return verdict


def _exit_status(rpc, program: str) -> int | None:
    return rpc.supervisor.getProcessInfo(program)["exitstatus"]


def bring_down(rpc, code: int, cause: str, run_dir: Path) -> None:
    (run_dir / EXIT_REASON_FILE).write_text(cause + "\n")
    (run_dir / EXIT_CODE_FILE).write_text(f"{code}\n")
    sys.stderr.write(f"[watchdog] stopping the container with exit code {code}: {cause}\n")
    sys.stderr.flush()
    rpc.supervisor.shutdown()


def main() -> None:
    rpc = supervisor_proxy()
    run_dir = settings.run_dir()
    stopping = False
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        program = childutils.get_headers(payload.partition("\n")[0]).get("processname", "")
        verdict = None if stopping else decide(rpc, headers["eventname"], program)
        if verdict is not None:
            stopping = True
            bring_down(rpc, *verdict, run_dir)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
