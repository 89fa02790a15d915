"""Benchmark of throughput under a backlog (issues 15, 22): JOB_PIPELINE_DEPTH values side by side.

    .venv/bin/python bench/bench_pipeline.py [--jobs 40] [--exec-s 1] [--depths 1,2,auto] [--rtt-ms 50] [--rtt-sweep]
    .venv/bin/python bench/bench_pipeline.py --sweep [--jobs 20] [--depths 2,auto]

--sweep runs job lengths 0.2, 0.5, 1 and 3 s x round trips 0, 50 and 200 ms (base64), each at
every --depths value (2: the fixed depth before issue 22; auto: the default now), and prints
one table: share of ideal, GPU idle between jobs, the depth reached, single-job latency. Each
backlog is --jobs jobs, or --sweep-backlog-s of execution if that is more jobs (the fixed cost of
a backlog's first take and last result weighs the same on every job length).

Everything is real and on loopback, as on RunPod: the real `python -m handler` with
RUNPOD_WEBHOOK_GET_JOB set, so the runpod SDK's own job-take loop fetches the jobs, from a fake
RunPod job server (tests/fake_runpod.py) that adds a round trip to every request; the real
sidecar; the stand-in ComfyUI; moto's S3 server for the S3 series. Each job loads its own small
noisy PNG (sent as base64 in the job), runs StandinSleep for --exec-s, and saves the image, so
there is an input to stage and a real output to deliver (base64, or to S3).

For each delivery and depth the handler is started afresh, warmed up with two jobs, then:
- single-job latency on an idle worker (--latency-runs jobs, one at a time, each once the
  worker is idle: its folders empty and a job-take poll held): the job's arrival in the
  backlog to its result reaching RunPod, and that minus ComfyUI's execution time;
- a backlog of --jobs jobs, all in the backlog at once: jobs per second from the backlog's
  arrival to the last result, and as a share of the ideal (the sum of ComfyUI's execution
  times, from each prompt's /history execution_start / execution_success timestamps; the
  handler runs with CLEANUP_HISTORY=false to keep them);
- the most jobs the worker held at once (handed out, result not yet posted), and for
  JOB_PIPELINE_DEPTH=auto the depths it chose (its log);
- GPU idle: ComfyUI's idle time between one prompt's end and the next one's start (p50, max),
  with where it comes from: how long before ComfyUI went idle the next job was handed out
  ("taken ahead"; negative, or "taken late", when it came after), the time from a result
  reaching RunPod to the next job handed out (the SDK refills a free
  slot from a loop that sleeps 1 s while every slot is full), and the handler's mean time per
  phase (its comfy_worker_job_phase_duration_seconds histogram).
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

from handler.config import PIPELINE_AUTO  # noqa: E402
from tests.fake_runpod import FakeRunPod, Request  # noqa: E402
from tests.handler_harness import PYTHON, MotoServer, Rig  # noqa: E402
from tests.processes import Process  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUCKET = "bench-pipeline"
TARGET = 0.95
SWEEP_EXEC_S = (0.2, 0.5, 1.0, 3.0)
SWEEP_RTT_MS = (0.0, 50.0, 200.0)
TARGET_FROM_EXEC_S = 0.5  # the target holds for jobs this long and longer
DEPTH_LINE = re.compile(r"taking (\d+) jobs at once")
PHASES = ("validating", "staging_inputs", "queue_wait", "executing", "collecting", "delivering")
PHASE_SECONDS = "comfy_worker_job_phase_duration_seconds"


# -- jobs -------------------------------------------------------------------------------------


def noise_png(side: int, seed: int) -> bytes:
    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def make_job(job_id: str, side: int, exec_s: float, seed: int) -> dict[str, Any]:
    image = base64.b64encode(noise_png(side, seed)).decode()
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "StandinSleep", "inputs": {"seconds": exec_s, "steps": 10, "image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
    }
    return {"id": job_id, "input": {"workflow": workflow, "images": [{"name": "in.png", "image": image}]}}


# -- one job's timeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """One job, in time.monotonic() seconds: when RunPod had it, handed it out, ComfyUI ran it, the result came."""

    job_id: str
    added: float
    handed_out: float
    exec_start: float
    exec_end: float
    result_at: float
    progress_after_result: int
    progress_posts: int

    @property
    def exec_s(self) -> float:
        return self.exec_end - self.exec_start


class Clock:
    """ComfyUI's history timestamps (Unix milliseconds) on this process's monotonic clock."""

    def __init__(self) -> None:
        self.offset = time.time() - time.monotonic()

    def monotonic(self, unix_ms: float) -> float:
        return unix_ms / 1000 - self.offset


def timeline(rig: Rig, fake: FakeRunPod, result: Request, clock: Clock) -> Timeline:
    job_id = result.job_ids[0]
    if "error" in result.body:
        raise RuntimeError(f"job {job_id} failed: {str(result.body)[:500]}")
    prompt_id = result.body["output"]["prompt_id"]
    entry = rig.comfy_get(f"/history/{prompt_id}")[prompt_id]
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    progress = fake.progress(job_id)
    return Timeline(
        job_id=job_id,
        added=fake.added_at[job_id],
        handed_out=fake.handed_out_at(job_id) or float("nan"),
        exec_start=clock.monotonic(stamps["execution_start"]),
        exec_end=clock.monotonic(stamps["execution_success"]),
        result_at=result.at,
        progress_after_result=sum(1 for post in progress if post.at > result.at),
        progress_posts=len(progress),
    )


# -- one series: one handler, one depth, one delivery, one round trip ---------------------------


@dataclass(frozen=True)
class Series:
    delivery: str
    depth: str  # JOB_PIPELINE_DEPTH: a number, or auto
    rtt_ms: float
    exec_s: float


class Worker:
    """The handler under the fake RunPod, for one series."""

    def __init__(self, rig: Rig, series: Series, extra_env: dict[str, str], metrics_dir: Path) -> None:
        self.rig = rig
        self.fake = FakeRunPod(rtt_s=series.rtt_ms / 1000, take_hold_s=2, stop_hold_s=2)
        self.metrics_dir = metrics_dir
        metrics_dir.mkdir(parents=True)
        env = {
            **self.fake.env(),
            **extra_env,
            "JOB_PIPELINE_DEPTH": series.depth,
            "CLEANUP_HISTORY": "false",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        self.handler = Process("handler", [PYTHON, "-m", "handler"], rig.handler_env(env))
        self.clock = Clock()

    def wait_idle(self, timeout_s: float = 120) -> None:
        """Until no job is in flight: the worker's folders are empty and a job-take poll is held."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.handler.alive():
                raise RuntimeError(f"the handler exited\n{self.handler.output(40)}")
            try:
                self.fake.wait_held("take", 0.5)
            except TimeoutError:
                continue
            if not self.rig.files("input") and not self.rig.files("output"):
                return
            time.sleep(0.01)
        raise RuntimeError(f"the worker did not become idle\n{self.handler.output(40)}")

    def run_jobs(self, jobs: list[dict[str, Any]], timeout_s: float) -> list[Timeline]:
        """Put the jobs in the backlog at once; their timelines once every result is in."""
        before = len(self.fake.results())
        self.fake.add(*jobs)
        results = self.fake.wait_results(before + len(jobs), timeout_s)[before:]
        return [timeline(self.rig, self.fake, result, self.clock) for result in results]

    def phase_sums(self) -> dict[str, tuple[float, float]]:
        """(sum of seconds, count) per phase of the handler's successful jobs so far."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_dir))
        sums = {phase: [0.0, 0.0] for phase in PHASES}
        for metric in registry.collect():
            for sample in metric.samples:
                phase = sample.labels.get("phase")
                if not sample.name.startswith(PHASE_SECONDS) or sample.labels.get("outcome") != "success":
                    continue
                if sample.name.endswith("_sum"):
                    sums[phase][0] += sample.value
                elif sample.name.endswith("_count"):
                    sums[phase][1] += sample.value
        return {phase: (total, count) for phase, (total, count) in sums.items()}

    def depths_chosen(self) -> list[int]:
        """The depths JOB_PIPELINE_DEPTH=auto changed to, in order (the handler's log)."""
        return [int(m[1]) for line in self.handler.lines if (m := DEPTH_LINE.search(line))]

    def stop(self) -> None:
        self.handler.stop()
        self.fake.close()


def measure(rig: Rig, series: Series, extra_env: dict[str, str], args: argparse.Namespace, tmp: Path) -> dict:
    label = f"{series.delivery}-d{series.depth}-rtt{series.rtt_ms:g}-exec{series.exec_s:g}"
    worker = Worker(rig, series, extra_env, tmp / f"metrics-{label}")
    load_before = os.getloadavg()[0]
    try:
        worker.wait_idle()
        worker.run_jobs([make_job(f"warm{i}", args.side, series.exec_s, 900 + i) for i in range(2)], 120)
        latencies = []
        for index in range(args.latency_runs):
            worker.wait_idle()
            [one] = worker.run_jobs([make_job(f"one{index}", args.side, series.exec_s, 800 + index)], 120)
            latencies.append(one)
        worker.wait_idle()
        phases_before = worker.phase_sums()
        depths_before = len(worker.depths_chosen())
        count = max(args.jobs, round(args.sweep_backlog_s / series.exec_s)) if args.sweep else args.jobs
        jobs = [make_job(f"job{i}", args.side, series.exec_s, i) for i in range(count)]
        backlog = worker.run_jobs(jobs, timeout_s=count * series.exec_s * 10 + 120)
        phases = _phase_means(phases_before, worker.phase_sums())
        takes = worker.fake.of_kind("take", "take-batch")
        held = most_in_flight(worker.fake, {job.job_id for job in backlog})
        chosen = worker.depths_chosen()
    finally:
        worker.stop()
    figures = backlog_figures(backlog, takes)
    figures.update(most_in_flight=held, depths_chosen=chosen, depth_changes_in_backlog=len(chosen) - depths_before)
    figures.update(latency_figures(latencies), phases_ms=phases, load=[load_before, os.getloadavg()[0]])
    figures.update(delivery=series.delivery, depth=series.depth, rtt_ms=series.rtt_ms, exec_s=series.exec_s)
    return figures


def most_in_flight(fake: FakeRunPod, ids: set[str]) -> int:
    """The most of these jobs the worker held at once: handed out, result not yet posted."""
    held, most = 0, 0
    for request in sorted(fake.of_kind("take", "take-batch", "result"), key=lambda r: r.at):
        count = len(ids.intersection(request.job_ids))
        held += -count if request.kind == "result" else count
        most = max(most, held)
    return most


def _phase_means(before: dict, after: dict) -> dict[str, float]:
    means = {}
    for phase in PHASES:
        total, count = after[phase][0] - before[phase][0], after[phase][1] - before[phase][1]
        means[phase] = round(total / count * 1000, 1) if count else float("nan")
    return means


# -- figures ----------------------------------------------------------------------------------


def backlog_figures(jobs: list[Timeline], takes: list[Request]) -> dict[str, Any]:
    added = min(job.added for job in jobs)
    wall = max(job.result_at for job in jobs) - added
    ideal = sum(job.exec_s for job in jobs)
    order = sorted(jobs, key=lambda job: job.exec_start)
    pairs = list(itertools.pairwise(order))
    idle = [(after.exec_start - before.exec_end) * 1000 for before, after in pairs]
    ahead = [(before.exec_end - after.handed_out) * 1000 for before, after in pairs]  # < 0: taken late
    late = [max(0.0, -value) for value in ahead]
    return {
        "jobs": len(jobs),
        "wall_s": wall,
        "ideal_s": ideal,
        "exec_p50_ms": statistics.median(job.exec_s for job in jobs) * 1000,
        "jobs_per_s": len(jobs) / wall,
        "ideal_jobs_per_s": len(jobs) / ideal,
        "ideal_ratio": ideal / wall,
        "idle_p50_ms": _p50(idle),
        "idle_max_ms": max(idle, default=0.0),
        "idle_total_s": sum(idle) / 1000,
        "first_start_ms": (order[0].exec_start - added) * 1000,
        "last_result_ms": (max(job.result_at for job in jobs) - order[-1].exec_end) * 1000,
        "taken_late_p50_ms": _p50(late),
        "taken_late_total_s": sum(late) / 1000,
        "gaps_taken_late": sum(1 for value in late if value > 0),
        "gaps_over_5ms": sum(1 for value in idle if value > 5),
        "taken_ahead_p50_ms": _p50(ahead),
        "taken_ahead_min_ms": min(ahead, default=0.0),
        "result_to_next_take_p50_ms": _p50(_result_to_next_take(jobs, takes)),
        "result_to_next_take_max_ms": max(_result_to_next_take(jobs, takes), default=0.0),
        "taken_to_started_p50_ms": _p50([(job.exec_start - job.handed_out) * 1000 for job in jobs]),
        "ended_to_result_p50_ms": _p50([(job.result_at - job.exec_end) * 1000 for job in jobs]),
        "progress_posts": sum(job.progress_posts for job in jobs),
        "progress_after_result": sum(job.progress_after_result for job in jobs),
    }


def _result_to_next_take(jobs: list[Timeline], takes: list[Request]) -> list[float]:
    """For each job handed out after a result of the backlog arrived: milliseconds since the latest such result."""
    ids = {job.job_id for job in jobs}
    results = sorted(job.result_at for job in jobs)
    delays = []
    for take in takes:
        if not ids.intersection(take.job_ids):
            continue
        earlier = [at for at in results if at <= take.at]
        if earlier:
            delays.append((take.at - earlier[-1]) * 1000)
    return delays


def latency_figures(jobs: list[Timeline]) -> dict[str, Any]:
    if not jobs:
        return {"latency_p50_ms": None, "latency_overhead_p50_ms": None, "latency_runs": 0}
    return {
        "latency_p50_ms": _p50([(job.result_at - job.added) * 1000 for job in jobs]),
        "latency_overhead_p50_ms": _p50([(job.result_at - job.added - job.exec_s) * 1000 for job in jobs]),
        "latency_runs": len(jobs),
    }


def _p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# -- the run ------------------------------------------------------------------------------------


def depths(value: str) -> list[str]:
    """JOB_PIPELINE_DEPTH values: numbers, auto (or default), in the order given."""
    chosen = []
    for part in value.replace("default", PIPELINE_AUTO).split(","):
        part = part.strip().lower()
        if part != PIPELINE_AUTO and not part.isdigit():
            raise argparse.ArgumentTypeError(f"{part!r} is neither a depth nor {PIPELINE_AUTO}")
        if part not in chosen:
            chosen.append(part)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40, help="jobs in the backlog (default 40)")
    parser.add_argument("--exec-s", type=float, default=1.0, help="StandinSleep's seconds per job (default 1)")
    parser.add_argument("--side", type=int, default=256, help="side of each job's noisy PNG (default 256)")
    parser.add_argument("--depths", type=depths, help="JOB_PIPELINE_DEPTH values (1,2,auto; --sweep: 2,auto)")
    parser.add_argument("--sweep", action="store_true", help="job lengths x round trips (base64 only), see above")
    parser.add_argument("--sweep-backlog-s", type=float, default=20.0, help="--sweep: least execution per backlog")
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="round trip added to every RunPod request")
    parser.add_argument("--rtt-sweep", action="store_true", help="also at 0 and 200 ms (base64 only)")
    parser.add_argument("--latency-runs", type=int, default=9, help="single jobs on an idle worker per series")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument(
        "--results", default=None, help="file name under bench/results/ (pipeline.json, --sweep: pipeline-sweep.json)"
    )
    args = parser.parse_args()
    args.depths = args.depths or depths("2,auto" if args.sweep else "1,2,auto")
    args.results = args.results or ("pipeline-sweep.json" if args.sweep else "pipeline.json")
    started = time.monotonic()
    report: dict[str, Any] = {
        "default_depth": PIPELINE_AUTO,
        "sweep": args.sweep,
        "sweep_backlog_s": args.sweep_backlog_s,
        "jobs": args.jobs,
        "exec_s": args.exec_s,
        "side": args.side,
        "rtt_ms": args.rtt_ms,
        "cpus": os.cpu_count(),
        "series": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        rig = Rig(Path(tmp) / "rig").start_without_handler()
        moto = None if args.skip_s3 or args.sweep else MotoServer()
        try:
            rig.wait_for(lambda: _comfy_up(rig), 60, what="the stand-in ComfyUI")
            for series, env in plan(args, moto):
                figures = measure(rig, series, env, args, Path(tmp))
                report["series"].append(figures)
                print_series(figures, flush=True)
        finally:
            if moto is not None:
                moto.stop()
            rig.stop()
    report["elapsed_s"] = time.monotonic() - started
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.results).write_text(json.dumps(report, indent=1) + "\n")


def plan(args: argparse.Namespace, moto: MotoServer | None) -> list[tuple[Series, dict[str, str]]]:
    if args.sweep:
        cells = itertools.product(SWEEP_EXEC_S, SWEEP_RTT_MS, args.depths)
        return [(Series("base64", depth, rtt, exec_s), {}) for exec_s, rtt, depth in cells]
    deliveries = {"base64": {}} if moto is None else {"base64": {}, "s3": _s3_env(moto)}
    cells = itertools.product(deliveries.items(), args.depths)
    series = [(Series(d, depth, args.rtt_ms, args.exec_s), env) for (d, env), depth in cells]
    if args.rtt_sweep:
        series += [(Series("base64", depth, rtt, args.exec_s), {}) for rtt in (0.0, 200.0) for depth in args.depths]
    return series


def _comfy_up(rig: Rig) -> bool:
    try:
        return bool(rig.comfy_get("/system_stats"))
    except Exception:
        return False


def _s3_env(moto: MotoServer) -> dict[str, str]:
    moto.client().create_bucket(Bucket=BUCKET)
    return {
        "S3_ENDPOINT_URL": moto.url,
        "S3_BUCKET_NAME": BUCKET,
        "S3_BUCKET_CREDS_ACCESS_KEY_ID": "test",
        "S3_BUCKET_CREDS_SECRET_ACCESS_KEY": "test",
        "S3_REGION": "us-east-1",
    }


# -- printing -----------------------------------------------------------------------------------


def print_series(f: dict[str, Any], flush: bool = False) -> None:
    print(
        f"  {f['delivery']:6} {f['exec_s']:g} s jobs, depth {f['depth']} (held {f['most_in_flight']}), "
        f"rtt {f['rtt_ms']:g} ms: {f['ideal_ratio']:.3f} of ideal ({f['jobs_per_s']:.3f} jobs/s), "
        f"GPU idle p50 {f['idle_p50_ms']:.0f} ms, {f['idle_total_s']:.2f} s in all, "
        f"1 job {_latency(f)}, load {f['load'][0]:.1f}",
        flush=flush,
    )


COLUMNS = [
    ("delivery", lambda f: f["delivery"]),
    ("job", lambda f: f"{f['exec_s']:g} s"),
    ("depth", lambda f: str(f["depth"])),
    ("held", lambda f: str(f["most_in_flight"])),
    ("auto's depths", lambda f: ",".join(map(str, f["depths_chosen"])) or "-"),
    ("rtt", lambda f: f"{f['rtt_ms']:g} ms"),
    ("jobs/s", lambda f: f"{f['jobs_per_s']:.3f}"),
    ("ideal", lambda f: f"{f['ideal_jobs_per_s']:.3f}"),
    ("of ideal", lambda f: f"{f['ideal_ratio']:.3f}"),
    ("idle p50", lambda f: f"{f['idle_p50_ms']:.0f} ms"),
    ("idle max", lambda f: f"{f['idle_max_ms']:.0f} ms"),
    ("idle > 5 ms", lambda f: f"{f['gaps_over_5ms']}/{f['jobs'] - 1}, {f['idle_total_s']:.2f} s"),
    ("taken late", lambda f: f"{f['gaps_taken_late']}, {f['taken_late_total_s']:.2f} s"),
    ("taken ahead p50/min", lambda f: f"{f['taken_ahead_p50_ms']:.0f}/{f['taken_ahead_min_ms']:.0f} ms"),
    ("result->take p50/max", lambda f: f"{f['result_to_next_take_p50_ms']:.0f}/{f['result_to_next_take_max_ms']:.0f}"),
    ("end->result p50", lambda f: f"{f['ended_to_result_p50_ms']:.0f} ms"),
    ("first start/last result", lambda f: f"{f['first_start_ms']:.0f}/{f['last_result_ms']:.0f} ms"),
    ("1 job latency p50", lambda f: _latency(f)),
    ("load", lambda f: "{:.1f}-{:.1f}".format(*f["load"])),
]


def _latency(f: dict[str, Any]) -> str:
    if not f["latency_runs"]:
        return "-"
    return f"{f['latency_p50_ms']:.0f} ms (+{f['latency_overhead_p50_ms']:.0f})"


def print_report(report: dict[str, Any]) -> None:
    rows = [[fmt(f) for _, fmt in COLUMNS] for f in report["series"]]
    print(
        f"\n{_backlog(report)} in the backlog, each LoadImage + StandinSleep (job) + SaveImage "
        f"of a {report['side']}² noisy PNG; default JOB_PIPELINE_DEPTH={report['default_depth']}; "
        f"{report['cpus']} CPUs; {report['elapsed_s']:.0f} s in all"
    )
    print_table([name for name, _ in COLUMNS], rows)
    print("\nhandler's mean time per phase of the backlog's jobs (ms):")
    print_table(
        ["delivery", "job", "depth", "rtt", *PHASES],
        [
            [f["delivery"], f"{f['exec_s']:g} s", f["depth"], f"{f['rtt_ms']:g} ms"]
            + [f"{f['phases_ms'][p]:.1f}" for p in PHASES]
            for f in report["series"]
        ],
    )
    late = [f for f in report["series"] if f["progress_after_result"]]
    posts = sum(f["progress_posts"] for f in report["series"])
    print(f"\nprogress posts after their job's result: {sum(f['progress_after_result'] for f in late)} of {posts}")
    for f in report["series"]:
        if f["depth"] != report["default_depth"] or f["exec_s"] < TARGET_FROM_EXEC_S:
            continue
        if report["sweep"] or f["rtt_ms"] == report["rtt_ms"]:
            verdict = "met" if f["ideal_ratio"] >= TARGET else "NOT met"
            print(
                f"target >= {TARGET} of ideal at the default depth, {f['delivery']}, {f['exec_s']:g} s jobs, "
                f"rtt {f['rtt_ms']:g} ms: {f['ideal_ratio']:.3f}, {verdict}"
            )


def _backlog(report: dict[str, Any]) -> str:
    if report["sweep"]:
        return f"at least {report['jobs']} jobs and {report['sweep_backlog_s']:g} s of execution"
    return f"{report['jobs']} jobs"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
