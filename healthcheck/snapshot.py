"""The one piece of shared state: an immutable snapshot, replaced whole by the probe loop.

HTTP handlers and collectors read `store.current` (an atomic reference read) and never
wait on ComfyUI. A change of readiness state is announced to listeners (the HTTP server's
event loop), which is what lets `/readyz?wait=S` answer the instant the loop sees ComfyUI ready.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from worker_common.contract import GpuStatus, Readiness, SidecarStatus
from worker_common.custom_nodes import FailedPack

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
    comfyui_last_end: str = ""  # how the previous ComfyUI process ended (contract.Readiness)
    comfyui_rss_bytes: float | None = None
    comfyui_cpu_seconds: float | None = None
    gpu: GpuReading = field(default_factory=lambda: GpuReading(False))
    queue_running: int | None = None
    queue_pending: int | None = None
    last_answer_at: float | None = None  # wall time of ComfyUI's last successful answer
    comfyui_version: str | None = None  # from /system_stats
    custom_node_failures: tuple[FailedPack, ...] | None = None  # None: ComfyUI's report not read
    tick_at: float = 0.0  # monotonic time of the probe loop's last pass
    stack: str = ""  # this stack's identity (contract.stack_identity), served in /readyz

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
            stack=self.stack,
            comfyui_last_end=self.comfyui_last_end,
        )

    def status(self, loop_age_s: float) -> SidecarStatus:
        """The `/status` body (worker_common.contract): what `comfy-worker status` shows."""
        return SidecarStatus(
            readiness=self.readiness(),
            loop_age_s=loop_age_s,
            startup_duration_s=self.startup_duration_s,
            comfyui_version=self.comfyui_version,
            queue_running=self.queue_running,
            queue_pending=self.queue_pending,
            restarts={program.name: program.restarts for program in self.programs or ()},
            gpus=tuple(
                GpuStatus(
                    gpu=gpu.gpu,
                    name=gpu.name,
                    source=gpu.source,
                    used_bytes=gpu.memory_used_bytes,
                    total_bytes=gpu.memory_total_bytes,
                    utilization_ratio=gpu.utilization_ratio,
                    temperature_celsius=gpu.temperature_celsius,
                    power_watts=gpu.power_watts,
                )
                for gpu in self.gpu.gpus
            ),
        )


class SnapshotStore:
    """Holds the latest snapshot; tells listeners when the readiness state changes."""

    def __init__(self, initial: Snapshot) -> None:
        self._current = initial
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    @property
    def current(self) -> Snapshot:
        return self._current

    def on_state_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from the publishing thread; it must not block) after each state change."""
        with self._lock:
            self._listeners.append(listener)

    def publish(self, snapshot: Snapshot) -> None:
        state_changed = snapshot.state is not self._current.state
        self._current = snapshot
        if state_changed:
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                listener()
