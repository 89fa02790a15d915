"""The whole container's metrics, end to end: a real job, the sidecar's /metrics, Prometheus."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY

from handler import metrics
from tests.sidecar_world import wait_until
from tests.stack import Stack
from tests.test_sidecar_prometheus import query, query_value, start_prometheus
from tests.test_stack import EMPTY_IMAGE_JOB


def test_handler_job_counter_reaches_prometheus_through_the_sidecar(make_stack, tmp_path: Path) -> None:
    stack: Stack = make_stack()
    # Prometheus applies new targets only every few seconds: start it first.
    prometheus, prometheus_proc = start_prometheus(tmp_path, f"127.0.0.1:{stack.sidecar_port}")
    try:
        stack.start().wait_accepting_jobs()
        assert stack.runsync(EMPTY_IMAGE_JOB)["status"] == "COMPLETED"
        assert stack.runsync({"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})["status"] == "FAILED"

        # Prometheus may have scraped before the jobs ended: wait for a scrape that shows them.
        for expression in (
            "comfy_worker_ready",
            'sum(comfy_worker_jobs_total{outcome="success"})',
            'sum(comfy_worker_jobs_total{outcome="failed"})',
        ):
            wait_until(lambda e=expression: query_value(prometheus, e) == "1", 60, f"{expression} = 1")
        assert query(prometheus, "comfy_worker_job_duration_seconds_count") != []
    finally:
        prometheus_proc.stop(sig=signal.SIGTERM)


def test_metrics_after_a_job_pass_promtool(stack: Stack) -> None:
    assert stack.runsync(EMPTY_IMAGE_JOB)["status"] == "COMPLETED"
    exposition = requests.get(f"{stack.sidecar_url}/metrics", timeout=5).text
    assert "comfy_worker_jobs_total{" in exposition and "comfy_worker_jobs_in_progress" in exposition
    for outcome in metrics.OUTCOMES:  # created by initialise(), before any job records a phase
        for phase in metrics.PHASES:
            assert f'comfy_worker_job_phase_duration_seconds_count{{outcome="{outcome}",phase="{phase}"}}' in exposition
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's `prometheus` package (scripts/install-system-deps)"
    check = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def phase_count(phase: str, outcome: str) -> float:
    labels = {"phase": phase, "outcome": outcome}
    return REGISTRY.get_sample_value("comfy_worker_job_phase_duration_seconds_count", labels) or 0.0


def test_record_phases_observes_each_phase_reached() -> None:
    before = {phase: phase_count(phase, "failed") for phase in metrics.PHASES}
    metrics.record_phases({"validating": 0.002, "staging_inputs": 0.3, "queue_wait": 1.5, "executing": 42.0}, "failed")
    after = {phase: phase_count(phase, "failed") for phase in metrics.PHASES}
    reached = {"validating", "staging_inputs", "queue_wait", "executing"}
    assert {phase: after[phase] - before[phase] for phase in metrics.PHASES} == {
        phase: 1.0 if phase in reached else 0.0 for phase in metrics.PHASES
    }
    executing = REGISTRY.get_sample_value(
        "comfy_worker_job_phase_duration_seconds_bucket", {"phase": "executing", "outcome": "failed", "le": "30.0"}
    )
    assert executing is not None and executing < after["executing"]  # 42 s lies above the 30 s bucket


@pytest.mark.parametrize(
    ("durations", "outcome", "message"),
    [
        ({"thinking": 1.0}, "success", "unknown job phases ['thinking']"),
        ({"executing": 1.0}, "ok", "unknown job outcome 'ok'"),
    ],
)
def test_record_phases_refuses_names_it_does_not_know(durations: dict, outcome: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        metrics.record_phases(durations, outcome)
