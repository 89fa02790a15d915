"""How many jobs the worker takes at once: fixed by JOB_PIPELINE_DEPTH, or following what it measures.

runpod's job-take loop (rp_scale.JobScaler.get_jobs, runpod 1.12) asks the public
`concurrency_modifier` for the depth before every take and takes as many jobs as slots are
free; when every slot is full it sleeps a whole second before it looks again, and a slot frees
only once the job's result is posted. So after a job ends in ComfyUI, the job that refills its
slot is queued there at worst

    horizon = the handler's own time per job (all of it but ComfyUI's queue and execution:
              validate, stage, queue, then close the progress reports, collect, deliver)
              + the refill round trip (result post, job take)
              + SDK_REFILL_PERIOD_S (the take loop's sleep) + SDK_PICKUP_TICK_S (the run loop's tick)
              + HORIZON_MARGIN of all that (the loops' own timing on a loaded machine)

later. The GPU stays busy if the jobs already waiting in ComfyUI's queue cover that, so the
worker keeps `waiting = ceil(horizon / execution time)` jobs waiting behind the running one:
depth = 1 + waiting. Every figure is measured on this worker over its last WINDOW jobs: the
median execution time (ComfyUI's execution_start to its end), the median handler time, and the
refill round trip as the shortest gap between a full worker's job ending and the next job
starting (the loop's sleep and tick add 0-1.1 s to each gap; the shortest is the round trip alone).

The bound: the horizon counted is at most JOB_PIPELINE_MAX_WAIT_S, and the jobs held waiting
add up to less than JOB_PIPELINE_MAX_WAIT_S + one job of measured execution time (covering a
horizon with whole jobs overshoots by less than one; a waiting job is one another, idle worker
could have run; one waiting job is what keeps ComfyUI from idling between jobs at all). The
depth stays within 2 and JOB_PIPELINE_MAX_DEPTH. Within that, the depth kept may cover the
horizon with one job to spare: less than horizon + 2 jobs wait.

Changing the depth costs something: the SDK's set_scale waits for every job in flight to end
before it resizes its queue, taking nothing meanwhile. So a busy worker changes its depth only
after CHANGE_AFTER jobs measured since the last change; an idle one whenever the target moves.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

# runpod 1.12's job-take loop sleeps this long whenever every slot is full (`await asyncio.sleep(1)`
# in JobScaler.get_jobs), and its run loop starts a taken job within this tick (JobScaler.run_jobs
# waits on its tasks with timeout=0.1); tests/test_pipeline_depth.py fails if either changes.
SDK_REFILL_PERIOD_S = 1.0
SDK_PICKUP_TICK_S = 0.1
WINDOW = 16  # the jobs whose figures count: enough for a steady median, few enough to follow a change
CHANGE_AFTER = 4  # jobs measured since the last change before a busy worker changes depth again
INITIAL_DEPTH = 2  # before anything is measured: one job running, the next one queued behind it
UNMEASURED_ROUND_TRIP_S = 0.1  # the refill round trip before one has been seen
# A horizon within a few percent of a whole number of jobs left gaps on a loaded 2-core machine
# (0.5 s jobs at a 200 ms round trip: 0.94 of ideal at 3 waiting, bench_pipeline.py --sweep).
HORIZON_MARGIN = 0.1
COMFYUI_PHASES = ("queue_wait", "executing")  # a job's time in ComfyUI; the rest of it is the handler's


@dataclass(frozen=True)
class Bounds:
    """The operator's settings: a fixed depth, or the bounds an adaptive one keeps to."""

    fixed_depth: int | None
    max_depth: int
    max_wait_s: float


@dataclass(frozen=True)
class Measures:
    """What the depth follows, each over the last WINDOW jobs."""

    execution_s: float  # median ComfyUI execution time
    handler_s: float  # median handler time outside ComfyUI's queue and execution
    round_trip_s: float  # shortest refill gap: result posted, next job taken and started

    @property
    def horizon_s(self) -> float:
        """The longest a slot can stay unfilled after its job ended in ComfyUI."""
        worst_s = self.handler_s + self.round_trip_s + SDK_REFILL_PERIOD_S + SDK_PICKUP_TICK_S
        return worst_s * (1 + HORIZON_MARGIN)


def covering(seconds: float, measures: Measures, max_depth: int) -> int:
    """1 running + as many waiting jobs as it takes to last `seconds` (one at least), at most max_depth."""
    waiting = max(1, math.ceil(seconds / max(measures.execution_s, 1e-3)))
    return min(1 + waiting, max_depth)


def deepest(measures: Measures, bounds: Bounds) -> int:
    """The most jobs the bounds allow: less than JOB_PIPELINE_MAX_WAIT_S + one job of waiting work."""
    return covering(bounds.max_wait_s, measures, bounds.max_depth)


def adaptive_depth(measures: Measures, bounds: Bounds) -> int:
    """1 running + enough waiting jobs to cover the horizon (at most JOB_PIPELINE_MAX_WAIT_S of it)."""
    return covering(min(measures.horizon_s, bounds.max_wait_s), measures, bounds.max_depth)


def keeps(depth: int, measures: Measures, bounds: Bounds) -> bool:
    """Whether `depth` may stay: within the bounds, and covering the horizon with at most one job to spare.

    The spare job keeps a figure near a whole number of jobs from flipping the depth (and
    draining the worker, see above) on every small change.
    """
    target = adaptive_depth(measures, bounds)
    return target <= depth <= min(target + 1, deepest(measures, bounds))


class Pipeline:
    """The depth runpod's concurrency_modifier returns, and the per-job figures it follows.

    Job threads call started/ended; the SDK's loop calls concurrency from the event loop.
    """

    def __init__(self, bounds: Bounds, clock: Callable[[], float] = time.monotonic) -> None:
        self.bounds = bounds
        self.clock = clock
        self.depth = bounds.fixed_depth or min(INITIAL_DEPTH, bounds.max_depth)
        self._lock = threading.Lock()
        self._execution: deque[float] = deque(maxlen=WINDOW)
        self._handler: deque[float] = deque(maxlen=WINDOW)
        self._round_trips: deque[float] = deque(maxlen=WINDOW)
        self._in_flight = 0
        self._freed_at: float | None = None  # a full worker's job ended: the next start refills its slot
        self._measured_since_change = 0

    def started(self) -> None:
        """A job's handler started."""
        with self._lock:
            if self._freed_at is not None:
                self._round_trips.append(self.clock() - self._freed_at)
                self._freed_at = None
            self._in_flight += 1

    def ended(self, phases: Mapping[str, float], elapsed_s: float) -> None:
        """A job's handler is returning after `elapsed_s`; `phases` are its seconds per phase (job.Outcome)."""
        with self._lock:
            if self._in_flight >= self.depth:
                self._freed_at = self.clock()
            self._in_flight -= 1
            if phases.get("executing"):  # it ran in ComfyUI: a job that failed before tells nothing
                self._execution.append(phases["executing"])
                self._handler.append(max(0.0, elapsed_s - sum(phases.get(name, 0.0) for name in COMFYUI_PHASES)))
                self._measured_since_change += 1

    def measures(self) -> Measures | None:
        with self._lock:
            return self._measures()

    def _measures(self) -> Measures | None:
        if not self._execution:
            return None
        return Measures(
            execution_s=statistics.median(self._execution),
            handler_s=statistics.median(self._handler),
            round_trip_s=min(self._round_trips, default=UNMEASURED_ROUND_TRIP_S),
        )

    def concurrency(self, _current: int) -> int:
        """runpod's concurrency_modifier: how many jobs this worker holds at once."""
        if self.bounds.fixed_depth is not None:
            return self.bounds.fixed_depth
        with self._lock:
            measures = self._measures()
            may_change = self._in_flight == 0 or self._measured_since_change >= CHANGE_AFTER
            if measures is None or keeps(self.depth, measures, self.bounds) or not may_change:
                return self.depth
            target = adaptive_depth(measures, self.bounds)
            log.info(
                "taking %d jobs at once (was %d): jobs run %.3f s, a free slot is refilled within %.3f s",
                target,
                self.depth,
                measures.execution_s,
                measures.horizon_s,
            )
            self.depth = target
            self._measured_since_change = 0
            return self.depth
