"""What the worker's processes must agree on, each defined once.

The entrypoint, supervisord.conf and the launch scripts are shell and repeat a few of these
values; docs/design.md is the table a person reads. Everything written in Python imports them
from here: exit codes, program names, ComfyUI's address, and the `/readyz` body the sidecar
serves and the handler's gate reads.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ComfyUI always listens on loopback only; nothing outside the container reaches it.
COMFY_HOST = "127.0.0.1"

# supervisord's program names (supervisord.conf).
PROGRAM_COMFYUI = "comfyui"
PROGRAM_SIDECAR = "sidecar"
PROGRAM_HANDLER = "handler"
CRITICAL_PROGRAMS = (PROGRAM_COMFYUI, PROGRAM_SIDECAR, PROGRAM_HANDLER)

# In the run directory: what the launcher's code copy did at ComfyUI's last start (launcher/codecopy.py
# writes it, the sidecar's /metrics and `comfy-worker status` read it).
CODE_COPY_RECORD = "code-copy.json"


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

    def to_body(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "ready": self.ready,
            "state": self.state,
            "since": self.since,
            "startup_window_left_s": round(self.startup_window_left_s, 3),
            "comfyui": {"pid": self.comfyui_pid, "state": self.comfyui_state, "restarts": self.comfyui_restarts},
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
        )

    @property
    def failed(self) -> bool:
        """The sidecar gave up on ComfyUI: waiting cannot help."""
        return self.state == "failed"

    def describe(self) -> str:
        return self.reason or f"ComfyUI is {self.state}"
