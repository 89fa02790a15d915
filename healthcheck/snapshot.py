"""The one piece of shared state: an immutable snapshot, replaced whole by the probe loop.

HTTP handlers and collectors read `store.current` (an atomic reference read) and never
wait on ComfyUI. Readiness changes are signalled through a `threading.Condition`, which is
what lets `/readyz?wait=S` answer the instant the loop sees ComfyUI ready.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from worker_common.contract import Readiness

from .gpu import GpuReading
from .probe import ProgramStatus
from .state import State


@dataclass(frozen=True)
class Snapshot:
    state: State
    since: float
    reason: str
    started_at: float
    window_s: float
    window_left_s: float
    startup_duration_s: float | None = None
    programs: tuple[ProgramStatus, ...] | None = None  # None: supervisord did not answer
    comfyui_pid: int | None = None
    comfyui_statename: str = "UNKNOWN"
    comfyui_restarts: int = 0
    comfyui_rss_bytes: float | None = None
    comfyui_cpu_seconds: float | None = None
    gpu: GpuReading = field(default_factory=lambda: GpuReading(False))
    queue_running: int | None = None
    queue_pending: int | None = None
    last_answer_at: float | None = None  # wall time of ComfyUI's last successful answer
    tick_at: float = 0.0  # monotonic time of the probe loop's last pass

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def readiness(self) -> Readiness:
        """The `/readyz` body (worker_common.contract)."""
        return Readiness(
            ready=self.ready,
            state=str(self.state),
            reason=self.reason,
            since=self.since,
            startup_window_left_s=self.window_left_s,
            comfyui_pid=self.comfyui_pid,
            comfyui_state=self.comfyui_statename,
            comfyui_restarts=self.comfyui_restarts,
        )


class SnapshotStore:
    """Holds the latest snapshot; wakes readiness waiters when the state changes."""

    def __init__(self, initial: Snapshot) -> None:
        self._current = initial
        self._changed = threading.Condition()

    @property
    def current(self) -> Snapshot:
        return self._current

    def publish(self, snapshot: Snapshot) -> None:
        state_changed = snapshot.state is not self._current.state
        if not state_changed:
            self._current = snapshot
            return
        with self._changed:
            self._current = snapshot
            self._changed.notify_all()

    def wait_ready(self, timeout_s: float) -> Snapshot:
        """The snapshot once ready (or failed, which is final), or the latest at the timeout."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._changed:
            while not (self._current.ready or self._current.state is State.FAILED):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._current
