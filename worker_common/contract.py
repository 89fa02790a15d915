"""What the worker's processes must agree on, each defined once.

Everything written in Python imports them from here: exit codes, program names, the run
folder's file names, the default ports and ready timeout, the metric prefix, ComfyUI's address,
and the `/readyz` and `/status` bodies the sidecar serves (the handler's gate and
`comfy-worker status` read them). The entrypoint, bin/ and supervisord.conf cannot import
Python and repeat a few of these values; tests/test_contract.py fails when one of them differs
from what is here. docs/design.md is the table a person reads.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ComfyUI always listens on loopback only; nothing outside the container reaches it.
COMFY_HOST = "127.0.0.1"

# supervisord's program names (supervisord.conf).
PROGRAM_COMFYUI = "comfyui"
PROGRAM_SIDECAR = "sidecar"
PROGRAM_HANDLER = "handler"
CRITICAL_PROGRAMS = (PROGRAM_COMFYUI, PROGRAM_SIDECAR, PROGRAM_HANDLER)
# supervisord's event listeners (supervisord.conf): they serve the others and have no log of their own.
LISTENER_LOG_FORWARDER = "log-forwarder"
LISTENER_WATCHDOG = "watchdog"
LISTENERS = (LISTENER_LOG_FORWARDER, LISTENER_WATCHDOG)

# Files in the run folder ($WORKER_RUN_DIR) one process leaves for another.
EXIT_CODE_FILE = "exit-code"  # the watchdog's verdict, the entrypoint's exit code
EXIT_REASON_FILE = "exit-reason"  # its one line of cause
CONFIG_ERROR_SUFFIX = "-config-error"  # <program>-config-error: a program's configuration error
SUPERVISOR_SOCKET_FILE = "supervisor.sock"

# Defaults every program and script shares (each overridden by the variable named beside it).
DEFAULT_COMFY_PORT = 8188  # COMFY_PORT
DEFAULT_SIDECAR_PORT = 8081  # SIDECAR_PORT
DEFAULT_LOCAL_API_PORT = 8000  # LOCAL_API_PORT
DEFAULT_READY_TIMEOUT_S = 300.0  # COMFY_READY_TIMEOUT_S

# Every metric the worker exports starts with this (docs/design.md lists them).
METRIC_PREFIX = "comfy_worker_"


def config_error_file_name(program: str) -> str:
    """The run folder's file where `program` leaves its configuration error for the watchdog."""
    return f"{program}{CONFIG_ERROR_SUFFIX}"


# In the run directory: what the launcher's code copy did at ComfyUI's last start (launcher/codecopy.py
# writes it, the sidecar's /metrics and `comfy-worker status` read it).
CODE_COPY_RECORD = "code-copy.json"
# Later start-up phases, each written once per container by the part that sees it (worker_common/startup.py):
# ComfyUI's first answer (its imports done: the sidecar), the model prefetch's end (launcher/prefetch.py),
# the first model loaded (a loader node of the first job done: the handler) and the first job done (the handler).
COMFYUI_ANSWERED_RECORD = "comfyui-answered.json"
MODEL_PREFETCH_RECORD = "model-prefetch.json"
FIRST_MODEL_RECORD = "first-model.json"
FIRST_JOB_RECORD = "first-job.json"


class ExitCode(enum.IntEnum):
    """The container's exit codes (README, docs/design.md)."""

    OK = 0  # orderly stop
    NOT_READY = 3  # ComfyUI not ready within COMFY_READY_TIMEOUT_S
    FATAL = 4  # a critical program kept crashing during start-up
    SUPERVISOR_DIED = 70  # supervisord itself ended unexpectedly; every program was stopped
    ALREADY_RUNNING = 75  # a stack of this checkout (or container) already runs; nothing was started
    CONFIG = 78  # a configuration error (launch checks, a bad setting)


@functools.lru_cache(maxsize=4)
def stack_identity(run_dir: Path) -> str:
    """This stack's name in `/readyz`: its host and run dir (one stack per run dir), hashed.

    The handler takes readiness only from an answer that carries it: whatever else listens on
    the sidecar's port (another stack's sidecar) does not speak for this stack's ComfyUI.
    """
    text = f"{socket.gethostname()}\0{os.path.realpath(run_dir)}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True)
class Readiness:
    """The `/readyz` body: what the sidecar serves and the handler's gate reads.

    It carries program states and exit causes, never log text: the sidecar may listen on a
    public address, and ComfyUI's log can hold a previous job's prompt. `stack` is the
    serving stack's identity (stack_identity).
    """

    ready: bool
    state: str  # starting, ready, unready, failed; "unreachable" when the sidecar did not answer
    reason: str
    since: float = 0.0
    startup_window_left_s: float = 0.0
    comfyui_pid: int | None = None
    comfyui_state: str = "UNKNOWN"
    comfyui_restarts: int = 0
    stack: str = ""
    # How the previous ComfyUI process ended ("comfyui (pid N) exited with code 1"), kept once the
    # next one is ready: a job that lost its process learns why even when the restart was quicker.
    comfyui_last_end: str = ""

    def to_body(self) -> dict[str, Any]:
        comfyui = {"pid": self.comfyui_pid, "state": self.comfyui_state, "restarts": self.comfyui_restarts}
        if self.comfyui_last_end:
            comfyui["last_end"] = self.comfyui_last_end
        return {
            "stack": self.stack,
            "ready": self.ready,
            "state": self.state,
            "since": self.since,
            "startup_window_left_s": round(self.startup_window_left_s, 3),
            "comfyui": comfyui,
            "reason": self.reason,
        }

    @classmethod
    def from_body(cls, body: Any) -> Readiness:
        """Parse a `/readyz` body; raises ValueError when it is not one."""
        if not isinstance(body, dict) or not isinstance(body.get("comfyui", {}), dict):
            raise ValueError(f"unexpected /readyz body {body!r:.100}")
        comfyui = body.get("comfyui") or {}
        pid = comfyui.get("pid")
        return cls(
            ready=bool(body.get("ready")),
            state=str(body.get("state", "unknown")),
            reason=str(body.get("reason") or ""),
            since=float(body.get("since") or 0.0),
            startup_window_left_s=float(body.get("startup_window_left_s") or 0.0),
            comfyui_pid=pid if isinstance(pid, int) else None,
            comfyui_state=str(comfyui.get("state", "UNKNOWN")),
            comfyui_restarts=int(comfyui.get("restarts") or 0),
            stack=str(body.get("stack") or ""),
            comfyui_last_end=str(comfyui.get("last_end") or ""),
        )

    @property
    def failed(self) -> bool:
        """The sidecar gave up on ComfyUI: waiting cannot help."""
        return self.state == "failed"

    def describe(self) -> str:
        return self.reason or f"ComfyUI is {self.state}"


@dataclass(frozen=True)
class GpuStatus:
    """One GPU in the `/status` body (NVML's figures, else ComfyUI's own, as `source` says)."""

    gpu: str
    name: str
    source: str
    used_bytes: float | None = None
    total_bytes: float | None = None
    utilization_ratio: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None


@dataclass(frozen=True)
class SidecarStatus:
    """The `/status` body: the sidecar's latest snapshot, which `comfy-worker status` shows.

    The same figures /metrics exports, as one JSON object: no log text (the sidecar may listen
    on a public address). `restarts` has a program only once supervisord has answered.
    """

    readiness: Readiness
    loop_age_s: float
    startup_duration_s: float | None = None
    comfyui_version: str | None = None
    queue_running: int | None = None
    queue_pending: int | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    gpus: tuple[GpuStatus, ...] = ()

    def to_body(self) -> dict[str, Any]:
        body = {name: value for name, value in vars(self).items() if name not in ("readiness", "gpus")}
        return {**body, "readiness": self.readiness.to_body(), "gpus": [vars(gpu) for gpu in self.gpus]}

    @classmethod
    def from_body(cls, body: Any) -> SidecarStatus:
        """Parse a `/status` body; raises ValueError when it is not one."""
        try:
            return cls(
                readiness=Readiness.from_body(body["readiness"]),
                loop_age_s=float(body["loop_age_s"]),
                startup_duration_s=body.get("startup_duration_s"),
                comfyui_version=body.get("comfyui_version"),
                queue_running=body.get("queue_running"),
                queue_pending=body.get("queue_pending"),
                restarts={str(name): int(count) for name, count in body.get("restarts", {}).items()},
                gpus=tuple(GpuStatus(**gpu) for gpu in body.get("gpus", [])),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"unexpected /status body {body!r:.100}: {error}") from None
