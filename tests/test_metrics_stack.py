"""The whole container's metrics, end to end: a real job, the sidecar's /metrics, Prometheus."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import requests

from tests.stack import Stack
from tests.test_sidecar_prometheus import query, start_prometheus
from tests.test_sidecar_support import wait_until
from tests.test_stack import EMPTY_IMAGE_JOB


def test_handler_job_counter_reaches_prometheus_through_the_sidecar(make_stack, tmp_path: Path) -> None:
    stack: Stack = make_stack()
    # Prometheus applies new targets only every few seconds: start it first.
    prometheus, prometheus_proc = start_prometheus(tmp_path, f"127.0.0.1:{stack.sidecar_port}")
    try:
        stack.start().wait_accepting_jobs()
        assert stack.runsync(EMPTY_IMAGE_JOB)["status"] == "COMPLETED"
        assert stack.runsync({"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})["status"] == "FAILED"

        ready = wait_until(lambda: query(prometheus, "comfy_worker_ready"), 60, "comfy_worker_ready")
        assert ready[0]["value"][1] == "1"
        succeeded = wait_until(
            lambda: query(prometheus, 'sum(comfy_worker_jobs_total{outcome="success"})'), 30, "the job counter"
        )
        assert succeeded[0]["value"][1] == "1"
        failed = wait_until(lambda: query(prometheus, 'sum(comfy_worker_jobs_total{outcome="failed"})'), 30, "failures")
        assert failed[0]["value"][1] == "1"
        assert query(prometheus, "comfy_worker_job_duration_seconds_count") != []
    finally:
        prometheus_proc.stop(sig=signal.SIGTERM)


def test_metrics_after_a_job_pass_promtool(stack: Stack) -> None:
    assert stack.runsync(EMPTY_IMAGE_JOB)["status"] == "COMPLETED"
    exposition = requests.get(f"{stack.sidecar_url}/metrics", timeout=5).text
    assert "comfy_worker_jobs_total{" in exposition and "comfy_worker_jobs_in_progress" in exposition
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's `prometheus` package (scripts/install-system-deps)"
    check = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
