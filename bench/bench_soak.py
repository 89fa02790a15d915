"""Soak and large-output figures of the whole stack (supervisord, stand-in ComfyUI, sidecar, handler).

    .venv/bin/python bench/bench_soak.py [--jobs 500] [--big-count 16] [--big-side 2048]

Everything is real and on loopback: the stack of tests/stack.py (services/entrypoint -> supervisord -> the
programs), jobs through runpod's local API (POST /runsync), S3 to moto's server.

1. Soak: `--jobs` sequential jobs (EmptyImage 64x64 -> SaveImage, every tenth with an uploaded input image),
   as tests/test_soak.py sends them. Jobs per second, and the handler's RSS, open fds and threads at job 100
   (after warm-up) and at the end. The stand-in's own execution time for the same workflow comes from
   ComfyUI's /history timestamps of prompts queued directly (the handler deletes its jobs' history entries).
2. Large output: one job of `--big-count` noisy `--big-side`² images (StandinBigImages, incompressible), once
   returned as base64 and once uploaded to S3 (moto), each on its own stack. The handler's peak RSS over its
   RSS before the job, sampled with psutil every 10 ms in a thread (and the kernel's VmHWM, reset before the
   job, as a cross-check), against the output's size.

Prints a table; writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.handler_harness import MotoServer  # noqa: E402
from tests.soak import empty_image_job, soak  # noqa: E402
from tests.stack import Stack  # noqa: E402

MB = 1_000_000
RESULTS = REPO / "bench" / "results" / "soak.json"


def started(root: Path, **env: str) -> Stack:
    stack = Stack(root, env).start()
    stack.wait_accepting_jobs()
    return stack


# -- 1. soak ---------------------------------------------------------------------------------------


def standin_execution_ms(stack: Stack, prompts: int = 30) -> float:
    """p50 of ComfyUI's own time for the soak's workflow, from /history (prompts queued directly)."""
    times = []
    client_id = str(uuid.uuid4())
    for index in range(prompts):
        workflow = empty_image_job(0x100000 + index)["workflow"]
        answer = requests.post(
            f"{stack.comfy_url}/prompt", json={"prompt": workflow, "client_id": client_id}, timeout=10
        ).json()
        prompt_id = answer["prompt_id"]
        entry = stack.wait_for(
            lambda pid=prompt_id: requests.get(f"{stack.comfy_url}/history/{pid}", timeout=10).json().get(pid),
            30,
            0.005,
            what="the prompt's history entry",
        )
        stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
        times.append(float(stamps["execution_success"] - stamps["execution_start"]))
        requests.post(f"{stack.comfy_url}/history", json={"delete": [prompt_id]}, timeout=10)
    return statistics.median(times)


def soak_figures(stack: Stack, jobs: int) -> dict[str, Any]:
    warm = min(100, jobs)
    run = soak(stack, jobs, sample_at=set(range(warm, jobs + 1, 50)) | {warm, jobs})
    if run.failures:
        raise SystemExit(f"{len(run.failures)} soak jobs failed: {run.failures[:3]}")
    first, last = run.at(warm), run.at(jobs)
    execution_ms = standin_execution_ms(stack)
    per_job_ms = run.seconds / jobs * 1000
    return {
        "jobs": jobs,
        "seconds": run.seconds,
        "jobs_per_s": jobs / run.seconds,
        "wall_per_job_ms": per_job_ms,
        "standin_execution_ms_p50": execution_ms,
        "handler_rss_mb": {"at_job": warm, "before": first.rss / MB, "after": last.rss / MB},
        "handler_rss_growth_pct": (last.rss - first.rss) / first.rss * 100,
        "handler_fds": [first.fds, last.fds],
        "handler_threads": [first.threads, last.threads],
        "input_output_files": [[s.input_files, s.output_files] for s in (first, last)],
        "samples": [vars(sample) for sample in run.samples],
    }


# -- 2. large output ----------------------------------------------------------------------------------


def noise_job(count: int, side: int, seed: int) -> dict[str, Any]:
    return {
        "workflow": {
            "1": {
                "class_type": "StandinBigImages",
                "inputs": {"count": count, "width": side, "height": side, "seed": seed},
            },
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "big"}},
        }
    }


class RssSampler:
    """The highest RSS of a process, sampled every `interval_s` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.samples += 1
            self._stop.wait(self.interval_s)


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def large_job(stack: Stack, count: int, side: int) -> dict[str, Any]:
    """Peak RSS increment of the handler during one large job, and the output's size."""
    pid = stack.pid_of("handler")
    warm = stack.runsync(noise_job(2, 64, 0), timeout_s=120)  # first-use allocations are not the job's
    assert warm["status"] == "COMPLETED", str(warm)[:500]
    time.sleep(0.5)  # let the warm-up's clean-up finish
    hwm_reset = True
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS
    except OSError:
        hwm_reset = False
    before = psutil.Process(pid).memory_info().rss
    started_at = time.perf_counter()
    with RssSampler(pid) as sampler:
        response = requests.post(f"{stack.api_url}/runsync", json={"input": noise_job(count, side, 1)}, timeout=900)
    seconds = time.perf_counter() - started_at
    hwm = status_kb(pid, "VmHWM") * 1024 if hwm_reset else None
    result = response.json()
    assert result.get("status") == "COMPLETED", str(result)[:500]
    items = [item for key in ("images", "videos", "audio", "files") for item in result["output"].get(key, [])]
    assert len(items) == count, len(items)
    if items[0]["type"] == "base64":
        encoded = sum(len(item["data"]) for item in items)
        raw = sum(len(item["data"]) * 3 // 4 - item["data"][-2:].count("=") for item in items)
    else:
        raw = sum(int(requests.head(item["data"], timeout=30).headers["Content-Length"]) for item in items)
        encoded = 0
    return {
        "delivery": items[0]["type"],
        "images": count,
        "side": side,
        "seconds": seconds,
        "output_bytes": raw,
        "base64_bytes": encoded,
        "rss_before_mb": before / MB,
        "peak_increment_mb": (sampler.peak - before) / MB,
        "vmhwm_increment_mb": (hwm - before) / MB if hwm is not None else None,
        "rss_samples": sampler.samples,
    }


# -- report ----------------------------------------------------------------------------------------


def rows_for(soaked: dict[str, Any], base64_job: dict[str, Any], s3_job: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = [
        (
            f"soak: {soaked['jobs']} sequential jobs, EmptyImage 64² -> SaveImage",
            f"{soaked['jobs_per_s']:.0f} jobs/s ({soaked['wall_per_job_ms']:.2f} ms/job)",
            "all succeed",
        ),
        ("stand-in's own execution time per job, p50 (/history)", f"{soaked['standin_execution_ms_p50']:.2f} ms", ""),
        (
            f"handler RSS, job {soaked['handler_rss_mb']['at_job']} -> {soaked['jobs']}",
            f"{soaked['handler_rss_mb']['before']:.1f} -> {soaked['handler_rss_mb']['after']:.1f} MB "
            f"({soaked['handler_rss_growth_pct']:+.2f} %)",
            "< +10 %",
        ),
        ("handler open fds", "{} -> {}".format(*soaked["handler_fds"]), "flat (+3)"),
        ("handler threads", "{} -> {}".format(*soaked["handler_threads"]), "flat (+3)"),
        (
            "files in input/, output/ (start -> end)",
            "{} -> {}".format(*[tuple(pair) for pair in soaked["input_output_files"]]),
            "no growth",
        ),
    ]
    for job, target in ((base64_job, "<= 2.5x the base64"), (s3_job, "<= 100 MB")):
        label = f"large job: {job['images']} noisy {job['side']}², {job['delivery']}"
        size = f"{job['output_bytes'] / MB:.0f} MB of PNG"
        if job["base64_bytes"]:
            size += f", {job['base64_bytes'] / MB:.0f} MB base64"
        rows.append((f"{label}: output", f"{size}, job {job['seconds']:.1f} s", ""))
        increment = job["peak_increment_mb"]
        text = f"{increment:.0f} MB"
        if job["base64_bytes"]:
            text += f" = {increment * MB / job['base64_bytes']:.2f}x the base64"
        if job["vmhwm_increment_mb"] is not None:
            text += f" (VmHWM: {job['vmhwm_increment_mb']:.0f} MB)"
        rows.append((f"{label}: handler peak RSS over pre-job", text, target))
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("measure", "result", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--big-count", type=int, default=16)
    parser.add_argument("--big-side", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        stack = started(Path(tmp) / "base64", RESPONSE_SIZE_LIMIT_BYTES=str(4000 * MB))
        try:
            soaked = soak_figures(stack, args.jobs)
            base64_job = large_job(stack, args.big_count, args.big_side)
        finally:
            stack.kill_everything()
        moto = MotoServer()
        try:
            moto.client().create_bucket(Bucket="bench")
            stack = started(
                Path(tmp) / "s3",
                S3_ENDPOINT_URL=moto.url,
                S3_BUCKET_NAME="bench",
                S3_BUCKET_CREDS_ACCESS_KEY_ID="test",
                S3_BUCKET_CREDS_SECRET_ACCESS_KEY="test",
                S3_REGION="us-east-1",
            )
            try:
                s3_job = large_job(stack, args.big_count, args.big_side)
            finally:
                stack.kill_everything()
        finally:
            moto.stop()
    print_table(rows_for(soaked, base64_job, s3_job))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"soak": soaked, "large_base64": base64_job, "large_s3": s3_job}, indent=1))
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
