"""The readiness state machine, kept pure: observations and a clock in, transitions out.

    starting --first success--> ready --failures--> unready --success--> ready
    starting --window over, never ready--> failed   (terminal)

A *hard* failure (ComfyUI's process is not running, died, or was replaced) makes a ready
worker unready at once: the process table is authoritative and the in-flight job is lost
anyway. A *soft* failure (the process is there but does not answer in time) only counts,
and `unready_after_failures` consecutive ones are needed, so one slow answer under load
does not flap the worker. While starting, failures never change the state; only the
start-up window running out does. `failed` is terminal because the handler exits 3 and
the container goes down once the window is missed.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


class State(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNREADY = "unready"
    FAILED = "failed"


@dataclass(frozen=True)
class Transition:
    old: State
    new: State
    at: float
    cause: str

    def log_line(self, started_at: float) -> str:
        return f"readiness {self.old} -> {self.new} at +{self.at - started_at:.3f}s: {self.cause}"


class ReadinessMachine:
    """Tracks the worker's readiness from probe outcomes; not thread-safe (one loop owns it)."""

    def __init__(
        self,
        started_at: float,
        window_s: float,
        unready_after_failures: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.started_at = started_at
        self.window_s = window_s
        self.unready_after_failures = max(1, unready_after_failures)
        self._clock = clock
        self.state = State.STARTING
        self.since = started_at
        self.first_ready_at: float | None = None
        self.consecutive_failures = 0

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    @property
    def deadline(self) -> float:
        return self.started_at + self.window_s

    def window_left_s(self) -> float:
        """Seconds left of the start-up window; 0 once ready was reached or the window is over."""
        if self.first_ready_at is not None:
            return 0.0
        return max(0.0, self.deadline - self._clock())

    @property
    def startup_duration_s(self) -> float | None:
        return None if self.first_ready_at is None else self.first_ready_at - self.started_at

    def success(self, cause: str) -> Transition | None:
        """ComfyUI answered (and any warm-up is done)."""
        self.consecutive_failures = 0
        if self.state in (State.STARTING, State.UNREADY):
            now = self._clock()
            if self.first_ready_at is None:
                self.first_ready_at = now
            return self._move(State.READY, now, cause)
        return None

    def failure(self, cause: str, hard: bool = False) -> Transition | None:
        """A probe failed; `hard` when the process itself is gone or was replaced."""
        self.consecutive_failures += 1
        if self.state is State.READY and (hard or self.consecutive_failures >= self.unready_after_failures):
            if not hard:
                cause = f"{cause} ({self.consecutive_failures} probes in a row)"
            return self._move(State.UNREADY, self._clock(), cause)
        return self.tick(cause)

    def tick(self, cause: str = "") -> Transition | None:
        """Check the start-up window; call on every loop pass, even without a probe."""
        if self.state is State.STARTING and self.first_ready_at is None:
            now = self._clock()
            if now >= self.deadline:
                detail = f": {cause}" if cause else ""
                return self._move(State.FAILED, now, f"not ready within {self.window_s:g} s{detail}")
        return None

    def _move(self, new: State, now: float, cause: str) -> Transition:
        transition = Transition(self.state, new, now, cause)
        self.state = new
        self.since = now
        return transition
