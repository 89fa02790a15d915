"""`make bench`: every benchmark in bench/, one after another, then one table of figures and targets.

    .venv/bin/python bench/run_all.py [--quick]

Each script's own output is printed as it runs. The summary is read from bench/results/*.json, which the
scripts write (bench_handler.py writes its table of rows as handler.json).
--quick runs every script with small arguments (a smoke test of the benchmarks, not figures to report).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
QUICK = {
    "bench_sidecar.py": ["--boots", "2", "--quiet-s", "3", "--scrapes", "100"],
    "bench_handler.py": ["--runs", "6", "--big-side", "512", "--ready-tries", "1"],
    "bench_soak.py": ["--jobs", "60", "--big-count", "2", "--big-side", "512"],
    "bench_pipeline.py": ["--jobs", "4", "--exec-s", "0.3", "--latency-runs", "1", "--depths", "1,auto"],
    "bench_layout.py": ["--runs", "3", "--warmup", "1"],
    "bench_image.py": ["--runs", "1"],
    "bench_coldstart.py": ["--model-gb", "0.5", "--models", "1", "--modules", "50", "--settings", "kinder"],
}
MB = 1_000_000


def median_ms(d: dict) -> str:
    return f"{statistics.median(d['readiness_delays_ms']):.1f} ms"


def large(d: dict) -> str:
    ratio = f" = {d['peak_increment_mb'] * MB / d['base64_bytes']:.2f}x the base64" if d["base64_bytes"] else ""
    return f"{d['peak_increment_mb']:.0f} MB{ratio} ({d['images']} x {d['side']}²)"


def pipeline_series(d: dict, delivery: str, depth: str | None = None) -> dict:
    """bench_pipeline's figures for one delivery and depth (the default one) at its main round trip and job."""
    depth = d["default_depth"] if depth is None else depth
    for series in d["series"]:
        key = (series["delivery"], series["depth"], series["rtt_ms"], series["exec_s"])
        if key == (delivery, depth, d["rtt_ms"], d["exec_s"]):
            return series
    raise KeyError(f"{delivery} at depth {depth}")


def of_ideal(delivery: str):
    def value(d: dict) -> str:
        one, default = pipeline_series(d, delivery, "1"), pipeline_series(d, delivery)
        return f"{one['ideal_ratio']:.3f} / {default['ideal_ratio']:.3f} (depth {d['default_depth']})"

    return value


def gpu_idle(d: dict) -> str:
    series = pipeline_series(d, "base64")
    return f"{series['idle_p50_ms']:.0f} / {series['idle_max_ms']:.0f} ms"


def idle_latency(d: dict) -> str:
    one, default = pipeline_series(d, "base64", "1"), pipeline_series(d, "base64")
    return f"{one['latency_p50_ms']:.0f} / {default['latency_p50_ms']:.0f} ms"


def layout_overheads(slow: bool):
    def value(d: dict) -> str:
        rows = [row for row in d["rows"] if bool(row["slow_ms"]) == slow]
        if len(rows) != 2:
            raise KeyError("slow volume" if slow else "plain volume")
        extra = f" (+{rows[0]['slow_ms']:g} ms per call)" if slow else ""
        return " / ".join(f"{row['overhead_p50_ms']:.1f}" for row in rows) + " ms" + extra

    return value


def image_size(d: dict) -> str:
    return f"{d['image_bytes'] / 1e9:.2f} GB ({d['base_bytes'] / 1e9:.2f} GB)"


def coldstart(row_name: str, phase: str):
    """bench_coldstart's seconds to `phase` for one row, at the first volume setting it measured."""

    def value(d: dict) -> str:
        rows = [row for row in d["rows"] if row["row"] == row_name]
        return f"{rows[0]['phases'][phase]['s']:.1f} s ({rows[0]['volume'][:40]})"

    return value


# (results file, figure, value from its JSON, target); the targets are the scripts' own.
FIGURES = [
    ("sidecar", "first answer -> /readyz ready, p50", median_ms, "<= 100 ms"),
    ("sidecar", "sidecar RSS once ready", lambda d: f"{d['rss_mb_quiet']:.1f} MB", "<= 40 MB"),
    ("sidecar", "sidecar RSS after the scrapes", lambda d: f"{d['rss_mb_after_scrapes']:.1f} MB", "<= 40 MB"),
    ("sidecar", "sidecar CPU, default interval", lambda d: f"{d['cpu_percent_quiet']:.2f} %", "<= 0.5 %"),
    ("sidecar", "/metrics latency p99", lambda d: f"{d['metrics_p99_ms']:.2f} ms", "<= 20 ms"),
    ("soak", "soak: sequential jobs", lambda d: f"{d['soak']['jobs_per_s']:.0f} jobs/s", "all succeed"),
    ("soak", "soak: handler RSS growth", lambda d: f"{d['soak']['handler_rss_growth_pct']:+.2f} %", "< +10 %"),
    ("soak", "soak: handler open fds", lambda d: "{} -> {}".format(*d["soak"]["handler_fds"]), "flat (+3)"),
    ("soak", "soak: handler threads", lambda d: "{} -> {}".format(*d["soak"]["handler_threads"]), "flat (+3)"),
    (
        "soak",
        "soak: files in input/, output/",
        lambda d: "{} -> {}".format(*map(tuple, d["soak"]["input_output_files"])),
        "no growth",
    ),
    ("soak", "large job, base64: handler peak RSS +", lambda d: large(d["large_base64"]), "<= 2.5x the base64"),
    ("soak", "large job, S3: handler peak RSS +", lambda d: large(d["large_s3"]), "<= 100 MB"),
    ("pipeline", "backlog, base64: of ideal, depth 1 / default", of_ideal("base64"), ">= 0.95 at the default"),
    ("pipeline", "backlog, S3: of ideal, depth 1 / default", of_ideal("s3"), ">= 0.95 at the default"),
    ("pipeline", "GPU idle between jobs, default depth, p50 / max", gpu_idle, "-> 0"),
    ("pipeline", "one job on an idle worker, depth 1 / default", idle_latency, "no worse at the default"),
    ("layout", "job overhead p50, worker's disk / on the volume", layout_overheads(False), "no worse on the disk"),
    ("layout", "  the same on a slow volume", layout_overheads(True), "(the volume's cost)"),
    ("image", "image size, Debian 12 base (its share)", image_size, "(CUDA base: + its own size)"),
    ("image", "container start -> ready, p50", lambda d: f"{d['medians']['ready_s']:.2f} s", "(stand-in ComfyUI)"),
    ("image", "container start -> first job done, p50", lambda d: f"{d['medians']['first_job_s']:.2f} s", "-"),
    ("coldstart", "cold start -> ready, local disk", coldstart("local disk", "ready"), "(the floor's start)"),
    ("coldstart", "cold start -> ready, volume, no help", coldstart("volume, no help", "ready"), "(the old way)"),
    ("coldstart", "cold start -> ready, fresh worker", coldstart("volume, fresh worker", "ready"), "<= 2x local"),
    ("coldstart", "cold start -> ready, volume, restart", coldstart("volume, restart", "ready"), "<= 2x local"),
]


def run(script: str, args: list[str]) -> int:
    """Run one bench script, its output going straight to ours; returns its exit code."""
    print(f"\n=== {script} {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-u", str(BENCH / script), *args], check=False).returncode


def written_since(path: Path, started: float) -> bool:
    return path.exists() and path.stat().st_mtime >= started


def summary(started: float) -> None:
    rows = []
    for name, figure, value, target in FIGURES:
        path = RESULTS / f"{name}.json"
        try:
            measured = value(json.loads(path.read_text()))
            if not written_since(path, started):
                measured += " (stale: from an earlier run)"
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as error:
            measured = f"n/a ({type(error).__name__})"
        rows.append((name, figure, measured, target))
    path = RESULTS / "handler.json"
    if path.exists():
        stale = "" if written_since(path, started) else " (stale: from an earlier run)"
        rows += [("handler", m, r + stale, t) for m, r, t in json.loads(path.read_text())["rows"]]
    header = ("bench", "figure", "measured", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    print("\n=== summary (bench/results/*.json)")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small arguments for every script")
    args = parser.parse_args()
    started = time.time()
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for script in sorted(QUICK):
        code = run(script, QUICK[script] if args.quick else [])
        if code:
            failed.append(f"{script} (exit {code})")
    summary(started)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
