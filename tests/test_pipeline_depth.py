"""How many jobs the worker takes at once (handler/pipeline.py), and what it relies on in runpod's loop.

The rules are checked on the Pipeline itself with a stepped clock; the behaviour through the
real `python -m handler` and the runpod SDK's own job-take loop against tests/fake_runpod.py,
by counting jobs (handed out, results posted), never by timing them.
"""

from __future__ import annotations

import inspect
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from runpod.serverless.modules import rp_scale

from handler import config
from handler.pipeline import (
    CHANGE_AFTER,
    HORIZON_MARGIN,
    INITIAL_DEPTH,
    SDK_PICKUP_TICK_S,
    SDK_REFILL_PERIOD_S,
    WINDOW,
    Bounds,
    Pipeline,
)
from tests.fake_runpod import FakeRunPod, Request
from tests.handler_harness import PYTHON, Process, Rig
from tests.workflows import image_chain
from worker_common.settings import ConfigError

ADAPTIVE = Bounds(fixed_depth=None, max_depth=8, max_wait_s=2.0)


class SteppedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def end(pipeline: Pipeline, executing: float, handler_s: float = 0.02, queue_wait_s: float = 0.1) -> None:
    """A job ends: `queue_wait_s` in ComfyUI's queue, `executing` running, `handler_s` in the handler."""
    phases = {"validating": 0.001, "queue_wait": queue_wait_s, "executing": executing}
    pipeline.ended(phases, handler_s + queue_wait_s + executing)


def run_backlog(pipeline: Pipeline, clock: SteppedClock, jobs: int, executing: float, round_trip_s: float) -> None:
    """`jobs` jobs through a worker that is always full: each end is followed by a refill `round_trip_s` later."""
    for _ in range(pipeline.concurrency(1)):
        pipeline.started()
    for _ in range(jobs):
        clock.now += executing
        end(pipeline, executing)
        clock.now += round_trip_s
        pipeline.concurrency(1)
        pipeline.started()


# -- the rules, on the Pipeline itself ---------------------------------------------------------


def test_before_anything_is_measured_one_job_runs_and_one_waits() -> None:
    assert Pipeline(ADAPTIVE).concurrency(1) == INITIAL_DEPTH == 2


def test_short_jobs_make_it_deeper_and_a_long_round_trip_deeper_still() -> None:
    depths = {}
    for round_trip_s in (0.0, 0.6):
        clock = SteppedClock()
        pipeline = Pipeline(ADAPTIVE, clock)
        run_backlog(pipeline, clock, 3 * CHANGE_AFTER, executing=0.5, round_trip_s=round_trip_s)
        depths[round_trip_s] = pipeline.concurrency(1)
    # (1.1 s of the SDK's sleep and tick + 0.02 s handler (+ 0.6 s)) x 1.1 to cover with 0.5 s jobs: 3 (4) waiting.
    assert depths == {0.0: 4, 0.6: 5}


def test_long_jobs_keep_one_waiting() -> None:
    clock = SteppedClock()
    pipeline = Pipeline(ADAPTIVE, clock)
    run_backlog(pipeline, clock, CHANGE_AFTER, executing=30.0, round_trip_s=0.1)
    assert pipeline.concurrency(1) == 2


def test_it_stays_within_the_operators_bounds() -> None:
    clock = SteppedClock()
    capped = Pipeline(Bounds(fixed_depth=None, max_depth=5, max_wait_s=2.0), clock)
    run_backlog(capped, clock, 2 * CHANGE_AFTER, executing=0.05, round_trip_s=0.1)
    assert capped.concurrency(1) == 5
    waiting_bound = Pipeline(Bounds(fixed_depth=None, max_depth=32, max_wait_s=0.5), clock)
    run_backlog(waiting_bound, clock, 2 * CHANGE_AFTER, executing=0.1, round_trip_s=0.1)
    # Under 0.5 s + one job of waiting work: 5 jobs of 0.1 s, though covering 1.34 s would take 14.
    assert waiting_bound.concurrency(1) == 1 + 5


def test_a_depth_one_job_over_the_target_stays_one_over_the_waiting_bound_goes() -> None:
    """Near a whole number of jobs the target flips; each change drains the worker, so one spare job is kept."""
    clock = SteppedClock()
    pipeline = Pipeline(ADAPTIVE, clock)
    run_backlog(pipeline, clock, WINDOW, executing=0.5, round_trip_s=0.0)
    assert pipeline.concurrency(1) == 4
    run_backlog(pipeline, clock, WINDOW, executing=0.65, round_trip_s=0.0)  # 2 waiting would do; 3 x 0.65 <= 2 s
    assert pipeline.concurrency(1) == 4
    run_backlog(pipeline, clock, WINDOW, executing=1.5, round_trip_s=0.0)
    # 3 x 1.5 s waiting is over 2 s + one job: it goes; 2 x 1.5 s is under, and one spare over the target (1).
    assert pipeline.concurrency(1) == 3


def test_a_fixed_depth_is_kept_whatever_is_measured() -> None:
    clock = SteppedClock()
    pipeline = Pipeline(Bounds(fixed_depth=3, max_depth=8, max_wait_s=2.0), clock)
    run_backlog(pipeline, clock, 2 * CHANGE_AFTER, executing=0.05, round_trip_s=0.5)
    assert pipeline.concurrency(1) == 3


def test_a_busy_worker_changes_depth_only_after_enough_new_jobs_an_idle_one_at_once() -> None:
    """Each change makes the SDK wait for every job in flight to end; a busy worker pays that rarely."""
    clock = SteppedClock()
    busy = Pipeline(ADAPTIVE, clock)
    run_backlog(busy, clock, CHANGE_AFTER - 1, executing=0.2, round_trip_s=0.0)
    assert busy.concurrency(1) == 2
    run_backlog(busy, clock, 1, executing=0.2, round_trip_s=0.0)
    assert busy.concurrency(1) > 2

    idle = Pipeline(ADAPTIVE, clock)
    idle.started()
    clock.now += 0.2
    end(idle, 0.2)
    assert idle.concurrency(1) > 2


def test_the_refill_round_trip_is_the_shortest_gap_after_a_full_worker_freed_a_slot() -> None:
    clock = SteppedClock()
    pipeline = Pipeline(ADAPTIVE, clock)
    pipeline.started()
    pipeline.started()
    for gap in (0.9, 0.3, 0.7):  # the SDK's sleep adds 0-1 s to each
        clock.now += 1
        end(pipeline, 1.0)
        clock.now += gap
        pipeline.started()
    clock.now += 1
    end(pipeline, 1.0)
    end(pipeline, 1.0)  # not full any more (1 of 2): no gap is measured from this end
    clock.now += 5  # no backlog: the next job came late
    pipeline.started()
    measures = pipeline.measures()
    assert measures is not None and measures.round_trip_s == pytest.approx(0.3)
    worst_s = 0.02 + 0.3 + SDK_REFILL_PERIOD_S + SDK_PICKUP_TICK_S
    assert measures.horizon_s == pytest.approx(worst_s * (1 + HORIZON_MARGIN))


def test_a_job_that_never_ran_in_comfyui_is_not_measured() -> None:
    pipeline = Pipeline(ADAPTIVE)
    pipeline.started()
    pipeline.ended({"validating": 0.001}, 0.002)
    assert pipeline.measures() is None and pipeline.concurrency(1) == 2


# -- what the depth relies on in runpod's job-take loop -------------------------------------------


def test_the_sdks_loop_is_as_pipeline_py_expects() -> None:
    """Fails when runpod's JobScaler changes under handler/pipeline.py (read as text: no private part is used).

    pipeline.py assumes: the loop asks the public concurrency_modifier before every take, takes as
    many jobs as slots are free, sleeps SDK_REFILL_PERIOD_S whenever every slot is full, starts
    a taken job within SDK_PICKUP_TICK_S, and resizes only once every job in flight has ended (so
    it changes depth rarely).
    """
    get_jobs = inspect.getsource(rp_scale.JobScaler.get_jobs)
    set_scale = inspect.getsource(rp_scale.JobScaler.set_scale)
    init = inspect.getsource(rp_scale.JobScaler.__init__)
    run_jobs = inspect.getsource(rp_scale.JobScaler.run_jobs)
    assert 'config.get("concurrency_modifier")' in init
    assert "await self.set_scale()" in get_jobs
    assert "jobs_needed = self.current_concurrency - self.current_occupancy()" in get_jobs
    assert re.search(r"if jobs_needed <= 0:.*?\n\s*await asyncio\.sleep\(1\)", get_jobs, re.S)
    assert SDK_REFILL_PERIOD_S == 1.0
    assert "tasks, return_when=asyncio.FIRST_COMPLETED, timeout=0.1" in run_jobs and SDK_PICKUP_TICK_S == 0.1
    assert "self.jobs_fetcher(session, jobs_needed)" in get_jobs
    assert "self.current_concurrency = self.concurrency_modifier(self.current_concurrency)" in set_scale
    assert "while self.current_occupancy() > 0:" in set_scale


# -- through the real job-take loop ----------------------------------------------------------------


def sleeping_job(job_id: str, seconds: float) -> dict:
    """A job that runs `seconds` in ComfyUI: its own colour, so ComfyUI's cache never skips its sleep."""
    color = zlib.crc32(job_id.encode()) & 0xFFFFFF
    chain = image_chain(("StandinSleep", {"seconds": seconds, "steps": 2}), prefix=job_id, color=color)
    return {"id": job_id, "input": chain}


def most_in_flight(requests: list[Request]) -> int:
    """The most jobs the worker held at once: handed out, result not yet posted."""
    held, most = 0, 0
    for request in sorted(requests, key=lambda r: r.at):
        if request.kind in ("take", "take-batch"):
            held += len(request.job_ids)
        elif request.kind == "result":
            held -= 1
        most = max(most, held)
    return most


DEPTH_LINE = re.compile(r"taking (\d+) jobs at once \(was \d+\): jobs run ([\d.]+) s")


def depth_changes(handler: Process) -> list[tuple[int, float]]:
    """(depth, median execution seconds) of each change the handler logged."""
    return [(int(m[1]), float(m[2])) for line in handler.lines if (m := DEPTH_LINE.search(line))]


def prompts_in_comfyui(rig: Rig) -> int:
    """Prompts running or waiting in ComfyUI's queue."""
    try:
        queue = rig.comfy_get("/queue")
    except requests.RequestException:  # not up yet
        return 0
    return len(queue["queue_running"]) + len(queue["queue_pending"])


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path).start_without_handler()
    yield rig
    rig.stop()


def serve(rig: Rig, jobs: list[dict], env: dict[str, str], rtt_s: float = 0.02) -> tuple[FakeRunPod, Process]:
    fake = FakeRunPod(jobs, rtt_s=rtt_s, take_hold_s=1, stop_hold_s=1)
    return fake, Process("handler", [PYTHON, "-m", "handler"], rig.handler_env({**fake.env(), **env}))


def test_short_jobs_deepen_the_pipeline_up_to_its_maximum(rig: Rig) -> None:
    jobs = [sleeping_job(f"short{i}", 0.1) for i in range(16)]
    fake, handler = serve(rig, jobs, {"JOB_PIPELINE_MAX_DEPTH": "4"})
    try:
        results = fake.wait_results(len(jobs), 120)
        assert not [result.body for result in results if "error" in result.body]
        assert most_in_flight(fake.requests) == 4, handler.output()
        assert [depth for depth, _ in depth_changes(handler)] == [4], handler.output()
    finally:
        handler.stop()
        fake.close()


def test_the_jobs_held_waiting_stay_within_the_waiting_bound(rig: Rig) -> None:
    max_wait_s = 0.3
    jobs = [sleeping_job(f"bound{i}", 0.1) for i in range(12)]
    fake, handler = serve(rig, jobs, {"JOB_PIPELINE_MAX_WAIT_S": str(max_wait_s)})
    try:
        fake.wait_results(len(jobs), 120)
        changes = depth_changes(handler)
        assert changes, handler.output()
        for depth, execution_s in changes:  # the jobs waiting behind the running one: under max_wait_s + 1 job
            assert (depth - 2) * execution_s < max_wait_s, (depth, execution_s)
        assert most_in_flight(fake.requests) <= max(2, *(depth for depth, _ in changes))
    finally:
        handler.stop()
        fake.close()


def test_a_fixed_depth_is_what_the_sdk_takes(rig: Rig) -> None:
    jobs = [sleeping_job(f"fixed{i}", 0.1) for i in range(9)]
    fake, handler = serve(rig, jobs, {"JOB_PIPELINE_DEPTH": "3"})
    try:
        fake.wait_results(len(jobs), 120)
        assert most_in_flight(fake.requests) == 3
        assert not depth_changes(handler), handler.output()
    finally:
        handler.stop()
        fake.close()


def test_jobs_taken_ahead_each_keep_their_own_cancellation_deadline_and_clean_up(rig: Rig) -> None:
    """Five jobs taken at once: one cancelled while queued; of four 2 s jobs with 5 s each, two end in time.

    Whatever order ComfyUI queued them in, the first two end within their deadline, the third is
    stopped running at its own, and the fourth fails on its own deadline while still waiting.
    """
    jobs = [sleeping_job("cancelled", 0.5), *(sleeping_job(f"two-seconds-{i}", 2.0) for i in range(4))]
    fake, handler = serve(rig, jobs, {"JOB_PIPELINE_DEPTH": "5", "JOB_TIMEOUT_S": "5"}, rtt_s=0)
    try:
        rig.wait_for(lambda: prompts_in_comfyui(rig) == len(jobs), 60, what="every job queued in ComfyUI")
        fake.stop_job("cancelled")
        fake.wait_results(4, 60)
        [first_take, *_] = fake.of_kind("take-batch")
        assert first_take.job_ids == tuple(job["id"] for job in jobs)
        assert fake.result("cancelled") is None
        bodies = [fake.result(job["id"]).body for job in jobs[1:]]
        assert sum("error" not in body and "images" in body["output"] for body in bodies) == 2, bodies
        errors = [body["error"] for body in bodies if "error" in body]
        assert len(errors) == 2 and all("longer than its time limit of 5 s" in error for error in errors), errors
        rig.wait_for(lambda: not rig.files("input") and not rig.files("output"), 30, what="every job's clean-up")
        queue = rig.comfy_get("/queue")
        assert queue["queue_pending"] == [] and queue["queue_running"] == [], queue
    finally:
        handler.stop()
        fake.close()


# -- the settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "fixed"), [(None, None), ("auto", None), ("AUTO", None), ("3", 3), ("1", 1)])
def test_job_pipeline_depth_is_auto_or_a_fixed_depth(monkeypatch: pytest.MonkeyPatch, value, fixed) -> None:
    if value is None:
        monkeypatch.delenv("JOB_PIPELINE_DEPTH", raising=False)
    else:
        monkeypatch.setenv("JOB_PIPELINE_DEPTH", value)
    assert config.fixed_pipeline_depth() == fixed


@pytest.mark.parametrize("value", ["deep", "0", "33", "2.5"])
def test_a_bad_job_pipeline_depth_names_what_it_takes(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("JOB_PIPELINE_DEPTH", value)
    with pytest.raises(ConfigError) as error:
        config.fixed_pipeline_depth()
    assert str(error.value) == (
        f"JOB_PIPELINE_DEPTH={value!r} is neither auto nor a whole number from 1 to 32; "
        "use auto (the default) or a fixed depth such as 2"
    )
