"""Sidecar figures, measured in one run on this machine, printed as a table with targets.

1. Readiness delay: from the stand-in ComfyUI's first answer to the handler-style gate's
   `GET /readyz?wait=60` returning ready, over several cold boots (supervisord starts the
   stand-in with a boot delay while a fresh sidecar is already probing). The first answer is
   the moment the stand-in logs "To see the GUI go to" (it logs it once its port accepts),
   seen by a tight tail of its log file in this process, on the same clock as the gate.
2. The sidecar's RSS and CPU (% of one core) over a quiet window once ready, at the default
   intervals; then the same with a Prometheus-style scrape of /metrics every second.
3. /metrics latency p50/p99 over sequential scrapes on one kept-alive connection, with
   handler multiprocess files present.

Run: .venv/bin/python bench/bench_sidecar.py [--boots 10] [--quiet-s 20] [--scrapes 1000]
Writes bench/results/sidecar.json too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.sidecar_world import MiniSupervisor, Sidecar, short_tmp, wait_until  # noqa: E402
from tests.stack import free_port  # noqa: E402

BOOT_DELAY_S = "0.3"
GUI_LINE = b"To see the GUI go to"

HANDLER_METRICS = """
import sys
from prometheus_client import Counter, Gauge, Histogram
jobs = Counter("comfy_worker_jobs", "Jobs.", ["outcome", "reason"])
duration = Histogram("comfy_worker_job_duration_seconds", "Job time.", ["outcome"])
wait = Histogram("comfy_worker_job_ready_wait_seconds", "Ready wait.")
out = Counter("comfy_worker_output_bytes", "Output bytes.", ["delivery"])
for reason in ("none", "validation", "execution", "timeout"):
    jobs.labels("success" if reason == "none" else "failed", reason).inc(3)
for value in (0.1, 0.5, 2.0, 9.0):
    duration.labels("success").observe(value)
    wait.observe(value / 100)
out.labels("base64").inc(12345)
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


class LogWatch(threading.Thread):
    """Tails a log file in a tight loop and records when a marker line appears."""

    def __init__(self, path: Path, marker: bytes) -> None:
        super().__init__(daemon=True)
        self.path, self.marker = path, marker
        self.offset = path.stat().st_size if path.exists() else 0
        self.seen_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        buffer = b""
        while not self.stop.is_set():
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(self.offset)
                    chunk = handle.read()
            except FileNotFoundError:
                chunk = b""
            now = time.monotonic()
            if chunk:
                self.offset += len(chunk)
                buffer += chunk
                if self.marker in buffer:
                    self.seen_at = now
                    return
            time.sleep(0.0002)


def readiness_delays(boots: int) -> list[float]:
    run_dir = short_tmp()
    comfy_port = free_port()
    supervisor = MiniSupervisor(
        run_dir, comfy_port, standin_env={"STANDIN_BOOT_DELAY_S": BOOT_DELAY_S}, autostart=False
    )
    delays = []
    try:
        for _ in range(boots):
            sidecar = Sidecar(run_dir, comfy_port, WORKER_STARTED_AT=repr(time.time()))
            try:
                gate_at: list[float] = []

                def gate(port: int = sidecar.port, gate_at: list[float] = gate_at) -> None:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
                    connection.request("GET", "/readyz?wait=60")
                    response = connection.getresponse()
                    response.read()
                    gate_at.append(time.monotonic())
                    assert response.status == 200, response.status

                waiter = threading.Thread(target=gate)
                waiter.start()
                watch = LogWatch(run_dir / "comfyui.log", GUI_LINE)
                watch.start()
                supervisor.rpc().startProcess("comfyui", False)
                waiter.join(timeout=90)
                watch.join(timeout=30)
                watch.stop.set()
                assert gate_at and watch.seen_at, "no readiness or no GUI line"
                delays.append(gate_at[0] - watch.seen_at)
            finally:
                sidecar.close()
                supervisor.rpc().stopProcess("comfyui", True)
    finally:
        supervisor.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return delays


def resource_use(quiet_s: float, scrapes: int) -> dict[str, float]:
    run_dir = short_tmp()
    comfy_port = free_port()
    multiproc = run_dir / "metrics"
    multiproc.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    subprocess.run([sys.executable, "-c", HANDLER_METRICS], env=env, check=True, timeout=60)
    supervisor = MiniSupervisor(run_dir, comfy_port)
    sidecar = Sidecar(run_dir, comfy_port, WORKER_STARTED_AT=repr(time.time()), PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    figures: dict[str, float] = {}
    try:
        wait_until(lambda: sidecar.readyz()[0] == 200, what="ready")
        time.sleep(2)  # let start-up work (imports, NVML probe, first figures) pass
        process = psutil.Process(sidecar.proc.pid)

        def cpu() -> float:
            times = process.cpu_times()
            return times.user + times.system

        start_cpu, start = cpu(), time.monotonic()
        time.sleep(quiet_s)
        figures["cpu_percent_quiet"] = 100 * (cpu() - start_cpu) / (time.monotonic() - start)
        figures["rss_mb_quiet"] = process.memory_info().rss / 1e6

        connection = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=10)
        start_cpu, start = cpu(), time.monotonic()
        for _ in range(int(quiet_s / 2)):
            connection.request("GET", "/metrics")
            connection.getresponse().read()
            time.sleep(1.0)
        figures["cpu_percent_scraped_1s"] = 100 * (cpu() - start_cpu) / (time.monotonic() - start)

        latencies = []
        for _ in range(scrapes):
            began = time.perf_counter()
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - began)
            assert response.status == 200 and b"comfy_worker_jobs_total" in body
        connection.close()
        figures["metrics_p50_ms"] = 1000 * statistics.median(latencies)
        figures["metrics_p99_ms"] = 1000 * percentile(latencies, 99)
        figures["metrics_bytes"] = len(body)
        figures["rss_mb_after_scrapes"] = process.memory_info().rss / 1e6
    finally:
        sidecar.close()
        supervisor.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--quiet-s", type=float, default=20.0)
    parser.add_argument("--scrapes", type=int, default=1000)
    args = parser.parse_args()

    delays = readiness_delays(args.boots)
    figures = resource_use(args.quiet_s, args.scrapes)
    ms = [1000 * d for d in delays]
    rows = [
        ("first answer -> /readyz?wait ready, p50", f"{statistics.median(ms):.1f} ms", "<= 100 ms"),
        (f"  min / max over {len(ms)} boots", f"{min(ms):.1f} / {max(ms):.1f} ms", ""),
        ("sidecar RSS once ready", f"{figures['rss_mb_quiet']:.1f} MB", "<= 40 MB"),
        (f"  after {args.scrapes} more scrapes", f"{figures['rss_mb_after_scrapes']:.1f} MB", "<= 40 MB"),
        (f"sidecar CPU, default interval, {args.quiet_s:g} s", f"{figures['cpu_percent_quiet']:.2f} %", "<= 0.5 %"),
        ("  with a /metrics scrape every 1 s", f"{figures['cpu_percent_scraped_1s']:.2f} %", ""),
        ("/metrics latency p50", f"{figures['metrics_p50_ms']:.2f} ms", ""),
        (
            f"/metrics latency p99 ({figures['metrics_bytes']:.0f} bytes)",
            f"{figures['metrics_p99_ms']:.2f} ms",
            "<= 20 ms",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"sidecar bench on {os.cpu_count()} CPUs, stand-in ComfyUI with STANDIN_BOOT_DELAY_S={BOOT_DELAY_S}")
    print(f"{'figure'.ljust(width)}  {'measured':>18}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value:>18}  {target}")
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "sidecar.json").write_text(json.dumps({"readiness_delays_ms": ms, **figures}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
