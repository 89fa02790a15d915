"""Benchmark of the handler: per-job overhead and peak memory, against the stand-in ComfyUI.

    .venv/bin/python bench/bench_handler.py [--runs 30] [--big-side 2048] [--skip-memory]

Everything is real and on loopback: the stand-in ComfyUI, the sidecar, the handler with
runpod's local API (POST /runsync), moto's S3 server. Jobs are sent one after another.

- Overhead: a job's wall time through /runsync minus ComfyUI's own execution time, taken
  from the execution_start / execution_success timestamps of its /history entry (the
  handler runs with CLEANUP_HISTORY=false so the entry is still there). p50 after warm-up.
- Peak RSS increment of the handler process during one job returning 16 noisy images:
  the kernel's high-water mark (VmHWM, reset through /proc/PID/clear_refs before the job)
  minus the RSS before it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.handler_harness import MotoServer, Rig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MB = 1_000_000
PEER_BIG_BYTES = 40.5 * MB  # the peer's 16-image response, whose overhead was 857 ms


def empty_job(side: int, batch: int) -> dict:
    return {
        "workflow": {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": side, "height": side, "batch_size": batch, "color": 0x3366AA},
            },
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
        }
    }


def noise_job(side: int, count: int, seed: int) -> dict:
    return {
        "workflow": {
            "1": {
                "class_type": "StandinBigImages",
                "inputs": {"count": count, "width": side, "height": side, "seed": seed},
            },
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "noise"}},
        }
    }


def execution_ms(rig: Rig, prompt_id: str) -> float:
    """ComfyUI's own time for the prompt, from its history timestamps (milliseconds)."""
    entry = rig.comfy_get(f"/history/{prompt_id}")[prompt_id]
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    return float(stamps["execution_success"] - stamps["execution_start"])


def overhead_ms(rig: Rig, job: dict, runs: int, warmup: int = 5) -> tuple[float, float, int]:
    """(p50 overhead, p50 wall) in milliseconds, and the bytes of base64 in the last response."""
    overheads, walls, size = [], [], 0
    for index in range(warmup + runs):
        started = time.perf_counter()
        result = rig.runsync(job)
        wall = (time.perf_counter() - started) * 1000
        assert result["status"] == "COMPLETED", result
        if index >= warmup:
            walls.append(wall)
            overheads.append(wall - execution_ms(rig, result["output"]["prompt_id"]))
            size = sum(len(item["data"]) for item in result["output"]["images"])
    return statistics.median(overheads), statistics.median(walls), size


def rss_increment(rig: Rig, job: dict) -> tuple[float, int]:
    """(peak RSS increment of the handler in bytes during the job, bytes of output data)."""
    assert rig.handler is not None
    pid = rig.handler.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kb(pid, "VmRSS")
    result = rig.runsync(job, timeout_s=600)
    peak = _status_kb(pid, "VmHWM")
    assert result["status"] == "COMPLETED", str(result)[:500]
    items = [item for key in ("images", "videos", "audio", "files") for item in result["output"].get(key, [])]
    total = sum(len(item["data"]) for item in items)
    return (peak - before) * 1024, total


def pipeline_rss_increment(rig: Rig, job: dict) -> tuple[float, int]:
    """The same measure for the handler's own pipeline run in this process, without runpod's SDK."""
    import logging
    import os

    logging.disable(logging.INFO)
    os.environ.update(rig.handler_env({"RESPONSE_SIZE_LIMIT_BYTES": str(2000 * MB)}))
    from handler import config
    from handler.context import JobContext
    from handler.runtime import Runtime
    from handler.worker import Worker

    worker = Worker(Runtime.build(config.load()))
    worker.run(JobContext({"id": "warm-up", "input": noise_job(64, 2, 0)}, 600))
    pid = os.getpid()
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _status_kb(pid, "VmRSS")
    result = worker.run(JobContext({"id": "in-process", "input": job}, 600))
    peak = _status_kb(pid, "VmHWM")
    return (peak - before) * 1024, sum(len(item["data"]) for item in result["images"])


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def ready_to_accepting_ms(root: Path, tries: int) -> float:
    """p50 time from ComfyUI's first answer to the handler's local API answering.

    ComfyUI boots slowly (STANDIN_BOOT_DELAY_S), so the handler is already waiting at the gate;
    both ends are polled every millisecond.
    """
    delays = []
    for attempt in range(tries):
        rig = Rig(root / f"ready{attempt}", {"STANDIN_BOOT_DELAY_S": "3"})
        try:
            rig.start_without_handler()
            rig.start_handler(wait=False)
            comfy_up = _first_answer(f"{rig.comfy_url}/system_stats")
            api_up = _first_answer(f"{rig.api_url}/")
            delays.append((api_up - comfy_up) * 1000)
        finally:
            rig.stop()
    return statistics.median(delays)


def _first_answer(url: str, timeout_s: float = 60) -> float:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=0.5)
            return time.monotonic()
        except requests.RequestException:
            time.sleep(0.001)
    raise RuntimeError(f"{url} never answered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--big-side", type=int, default=2048, help="side of the 16 noisy images (default 2048)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--ready-tries", type=int, default=3)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-handler-") as tmp:
        if args.ready_tries:
            delay = ready_to_accepting_ms(Path(tmp), args.ready_tries)
            rows.append(("ComfyUI first answer -> accepting jobs, p50", f"{delay:.0f} ms", "<= 100 ms"))
        rig = Rig(Path(tmp) / "main").start({"CLEANUP_HISTORY": "false", "RESPONSE_SIZE_LIMIT_BYTES": str(2000 * MB)})
        try:
            for label, job in (("1 image 512x512", empty_job(512, 1)), ("16 images 512x512", empty_job(512, 16))):
                overhead, wall, _ = overhead_ms(rig, job, args.runs)
                rows.append((f"overhead p50, {label}", f"{overhead:.2f} ms (wall {wall:.1f} ms)", "<= ~7 ms"))
            overhead, wall, size = overhead_ms(rig, noise_job(1024, 16, 3), max(3, args.runs // 6), warmup=1)
            per_40 = overhead * PEER_BIG_BYTES / size
            label = f"overhead p50, 16 noisy 1024² ({size / MB:.0f} MB base64)"
            result = f"{overhead:.0f} ms = {per_40:.0f} ms per 40.5 MB"
            rows.append((label, result, "<= 514 ms per 40.5 MB (0.6x peer)"))
            if not args.skip_memory:
                rows += memory_rows(rig, args.big_side)
        finally:
            rig.stop()
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "handler.json").write_text(json.dumps({"rows": rows}, indent=1, ensure_ascii=False) + "\n")


def memory_rows(rig: Rig, side: int) -> list[tuple[str, str, str]]:
    rows = []
    rig.runsync(noise_job(64, 2, 0))  # warm-up: first-use allocations are not the job's
    increment, total = rss_increment(rig, noise_job(side, 16, 1))
    rows.append(
        (
            f"peak RSS +, 16 noisy {side}² base64",
            f"{increment / MB:.0f} MB = {increment / total:.2f}x the {total / MB:.0f} MB of base64",
            "<= 2.5x the output",
        )
    )
    increment, total = pipeline_rss_increment(rig, noise_job(side, 16, 5))
    rows.append(
        (
            "  of which the handler's own pipeline (no SDK)",
            f"{increment / MB:.0f} MB = {increment / total:.2f}x",
            "(the rest: runpod's JSON response)",
        )
    )
    moto = MotoServer()
    try:
        moto.client().create_bucket(Bucket="bench")
        s3_env = {
            "S3_ENDPOINT_URL": moto.url,
            "S3_BUCKET_NAME": "bench",
            "S3_BUCKET_CREDS_ACCESS_KEY_ID": "test",
            "S3_BUCKET_CREDS_SECRET_ACCESS_KEY": "test",
            "S3_REGION": "us-east-1",
        }
        rig.start_handler(s3_env)
        rig.runsync(noise_job(64, 2, 0))
        increment, _ = rss_increment(rig, noise_job(side, 16, 2))
        label = f"peak RSS +, 16 noisy {side}² to S3 (moto)"
        rows.append((label, f"{increment / MB:.0f} MB", "<= 100 MB (30 MB goal)"))
    finally:
        moto.stop()
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in [("measure", "result", "target"), *rows]) for i in range(3)]
    for row in [("measure", "result", "target"), tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
