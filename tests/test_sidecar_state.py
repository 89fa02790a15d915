"""The readiness state machine, driven by hand with an injected clock."""

from __future__ import annotations

from healthcheck.state import ReadinessMachine, State


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def machine(clock: Clock, window_s: float = 10.0, failures: int = 3) -> ReadinessMachine:
    return ReadinessMachine(started_at=clock.now, window_s=window_s, unready_after_failures=failures, clock=clock)


def test_starts_in_starting_with_the_whole_window_left() -> None:
    clock = Clock()
    m = machine(clock)
    assert m.state is State.STARTING
    assert m.window_left_s() == 10.0
    clock.now += 4
    assert m.window_left_s() == 6.0
    assert m.startup_duration_s is None


def test_failures_while_starting_do_not_change_the_state() -> None:
    clock = Clock()
    m = machine(clock)
    for _ in range(50):
        clock.now += 0.05
        assert m.failure("GET /system_stats: connection refused") is None
        assert m.failure("comfyui is BACKOFF", hard=True) is None
    assert m.state is State.STARTING


def test_first_success_makes_it_ready_and_records_the_startup_duration() -> None:
    clock = Clock()
    m = machine(clock)
    clock.now += 5.5
    transition = m.success("ComfyUI answers")
    assert transition is not None
    assert (transition.old, transition.new, transition.at) == (State.STARTING, State.READY, clock.now)
    assert m.state is State.READY and m.since == clock.now
    assert m.startup_duration_s == 5.5
    assert m.window_left_s() == 0.0
    assert m.success("again") is None  # no transition while already ready


def test_soft_failures_need_n_in_a_row_and_a_success_resets_the_count() -> None:
    clock = Clock()
    m = machine(clock, failures=3)
    m.success("up")
    assert m.failure("slow") is None
    assert m.failure("slow") is None
    assert m.success("fine") is None
    assert m.failure("slow") is None
    assert m.failure("slow") is None
    transition = m.failure("GET /system_stats: no answer in time")
    assert transition is not None and transition.new is State.UNREADY
    assert "3 probes in a row" in transition.cause
    assert m.state is State.UNREADY


def test_a_hard_failure_makes_a_ready_worker_unready_at_once() -> None:
    clock = Clock()
    m = machine(clock)
    m.success("up")
    clock.now += 60
    transition = m.failure("comfyui restarted (pid 10 -> 11)", hard=True)
    assert transition is not None and transition.new is State.UNREADY
    assert transition.cause == "comfyui restarted (pid 10 -> 11)"
    assert m.since == clock.now


def test_unready_returns_to_ready_and_keeps_the_first_startup_duration() -> None:
    clock = Clock()
    m = machine(clock)
    clock.now += 2
    m.success("up")
    clock.now += 100
    m.failure("gone", hard=True)
    clock.now += 7
    transition = m.success("back")
    assert transition is not None and (transition.old, transition.new) == (State.UNREADY, State.READY)
    assert m.startup_duration_s == 2


def test_unready_never_becomes_failed_even_long_after_the_window() -> None:
    clock = Clock()
    m = machine(clock, window_s=10)
    m.success("up")
    m.failure("gone", hard=True)
    clock.now += 1000
    assert m.failure("still gone", hard=True) is None
    assert m.tick() is None
    assert m.state is State.UNREADY


def test_the_window_running_out_without_readiness_means_failed() -> None:
    clock = Clock()
    m = machine(clock, window_s=10)
    clock.now += 9.99
    assert m.tick("refused") is None
    clock.now += 0.01
    transition = m.tick("GET /system_stats: connection refused")
    assert transition is not None and transition.new is State.FAILED
    assert transition.cause == "not ready within 10 s: GET /system_stats: connection refused"
    assert m.window_left_s() == 0.0


def test_failed_is_final() -> None:
    clock = Clock()
    m = machine(clock, window_s=1)
    clock.now += 2
    assert m.failure("refused") is not None
    assert m.state is State.FAILED
    assert m.success("late answer") is None
    assert m.failure("x", hard=True) is None
    assert m.state is State.FAILED


def test_a_success_on_the_first_probe_after_the_window_still_counts() -> None:
    """A sidecar restarted late finds ComfyUI up: its first observation decides, not the clock."""
    clock = Clock()
    m = machine(clock, window_s=1)
    clock.now += 5
    transition = m.success("up")
    assert transition is not None and transition.new is State.READY


def test_transition_log_line_says_when_and_why() -> None:
    clock = Clock(100.0)
    m = machine(clock)
    clock.now = 103.25
    transition = m.success("ComfyUI (pid 7) answers on 127.0.0.1:8188")
    assert transition is not None
    assert transition.log_line(100.0) == (
        "readiness starting -> ready at +3.250s: ComfyUI (pid 7) answers on 127.0.0.1:8188"
    )
