"""The whole stack pushes its /metrics to a real Pushgateway, which a real Prometheus scrapes.

A job's counter and readiness reach Prometheus under the worker's own labels, through the
scrape job deploy/prometheus/scrape.yml ships; an orderly stop deletes the worker's group; a
Pushgateway that is down or never answers costs the jobs, readiness and /metrics nothing and
is logged once; the credentials appear in no log, no stdout line and not in ComfyUI's
environment.
"""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from tests.processes import free_port
from tests.sidecar_world import sample_value, wait_until
from tests.stack import REPO, Stack
from tests.test_push import PASSWORD, TOKEN, SilentGateway, basic_auth_web_config, pushgateway
from tests.test_sidecar_prometheus import query_value, start_prometheus
from tests.test_stack import EMPTY_IMAGE_JOB

SCRAPE = REPO / "deploy" / "prometheus" / "scrape.yml"
PUSH_FAILING = "cannot push metrics to the Pushgateway"


def deploy_scrape_job(name: str) -> dict:
    jobs = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    return next(job for job in jobs if job["job_name"] == name)


def assert_nowhere_in_logs(stack: Stack, *secrets: str) -> None:
    """Not in the container's stdout, not in any program's log file."""
    texts = {"stdout": "\n".join(stack.lines)}
    texts.update({str(path): path.read_text(errors="replace") for path in (stack.home / ".run" / "logs").iterdir()})
    for secret in secrets:
        for where, text in texts.items():
            assert secret not in text, f"a credential appears in {where}"


def dashboard_expr(title: str, ref: str, worker: str) -> str:
    """A query of the Grafana dashboard, with $worker set to `worker`."""
    board = json.loads((REPO / "deploy" / "grafana" / "comfy-worker.json").read_text())
    panel = next(panel for panel in board["panels"] if panel["title"] == title)
    expr = next(target["expr"] for target in panel["targets"] if target["refId"] == ref)
    return expr.replace("$worker", worker)


def test_a_pushing_stack_reaches_prometheus_and_its_group_goes_on_an_orderly_stop(make_stack, tmp_path: Path) -> None:
    auth = ("worker", PASSWORD)
    with pushgateway(tmp_path, web_config=basic_auth_web_config(*auth), auth=auth) as gateway:
        shipped = deploy_scrape_job("comfy-worker-pushgateway")
        assert shipped["honor_labels"] is True
        # Prometheus applies new targets only every few seconds: it starts first.
        prometheus, prometheus_proc = start_prometheus(
            tmp_path,
            f"127.0.0.1:{gateway.port}",
            job_name=shipped["job_name"],
            honor_labels=shipped["honor_labels"],
            basic_auth={"username": auth[0], "password": auth[1]},
        )
        try:
            stack: Stack = make_stack(
                PUSHGATEWAY_URL=gateway.url,
                PUSHGATEWAY_USERNAME=auth[0],
                PUSHGATEWAY_PASSWORD=PASSWORD,
                PUSH_INTERVAL_S="0.5",
                RUNPOD_ENDPOINT_ID="ep-test",
                RUNPOD_POD_ID="pod-test",
            )
            stack.start().wait_accepting_jobs()
            assert "PUSHGATEWAY_PASSWORD" not in psutil.Process(stack.pid_of("comfyui")).environ()
            assert stack.runsync(EMPTY_IMAGE_JOB)["status"] == "COMPLETED"

            worker = 'job="comfy-worker", endpoint_id="ep-test", worker="pod-test"'
            wait_until(lambda: query_value(prometheus, f"comfy_worker_ready{{{worker}}}") == "1", 60, "ready")
            wait_until(
                lambda: query_value(prometheus, f'sum(comfy_worker_jobs_total{{{worker}, outcome="success"}})') == "1",
                60,
                "the job's counter in Prometheus",
            )
            assert query_value(prometheus, f"push_time_seconds{{{worker}}}") is not None
            assert query_value(prometheus, f"comfy_worker_push_failures_total{{{worker}}}") == "0"
            # Every phase/outcome pair of the phase histogram exists before any job records one.
            assert query_value(prometheus, f"count(comfy_worker_job_phase_duration_seconds_count{{{worker}}})") == "12"
            assert query_value(prometheus, dashboard_expr("Live", "B", "pod-test")) == "1"
            assert gateway.group("pod-test") is not None

            assert stack.stop() == 0
            assert gateway.group("pod-test") is None, "the stopped worker's group is still on the Pushgateway"
            deleted = "deleted group job=comfy-worker, endpoint_id=ep-test, worker=pod-test"
            assert any(deleted in line for line in stack.lines), stack.output()
            assert not any(PUSH_FAILING in line for line in stack.lines), stack.output()
            assert_nowhere_in_logs(stack, PASSWORD, base64.b64encode(f"{auth[0]}:{PASSWORD}".encode()).decode())
        finally:
            prometheus_proc.stop(sig=signal.SIGTERM)


@pytest.mark.parametrize("kind", ["down", "silent"])
def test_a_pushgateway_that_is_down_or_silent_costs_the_jobs_nothing(make_stack, kind: str) -> None:
    silent = SilentGateway() if kind == "silent" else None
    url = silent.url if silent else f"http://127.0.0.1:{free_port()}"
    try:
        stack: Stack = make_stack(
            PUSHGATEWAY_URL=url, PUSHGATEWAY_BEARER_TOKEN=TOKEN, PUSH_INTERVAL_S="0.2", PUSH_TIMEOUT_S="1"
        )
        stack.start().wait_accepting_jobs()

        def failures_counted() -> float | None:
            metrics = requests.get(f"{stack.sidecar_url}/metrics", timeout=10)
            failures = sample_value(metrics.text, "comfy_worker_push_failures_total")
            return failures if failures and failures >= 3 else None

        wait_until(failures_counted, 60, "failed pushes counted in /metrics")
        # While pushes keep failing (or hang), a job runs as ever and the sidecar answers.
        assert stack.runsync(EMPTY_IMAGE_JOB)["status"] == "COMPLETED"
        assert requests.get(f"{stack.sidecar_url}/readyz", timeout=10).status_code == 200
        assert wait_until(failures_counted, 60, "more failed pushes") >= 3
        if silent:
            assert silent.connections, "the sidecar never reached the silent gateway"

        failing = [line for line in stack.lines if PUSH_FAILING in line]
        assert len(failing) == 1, failing
        assert failing[0].startswith("[sidecar] ")
        assert stack.stop() == 0
        assert_nowhere_in_logs(stack, TOKEN)
    finally:
        if silent:
            silent.close()


def test_a_pushgateway_url_with_credentials_in_it_stops_the_container_without_showing_them(make_stack) -> None:
    stack: Stack = make_stack(PUSHGATEWAY_URL=f"https://worker:{PASSWORD}@pushgateway.example.com:9091")
    code = stack.start().wait_exit(timeout_s=90)
    assert code == 78, stack.output()
    assert "sidecar cannot start" in stack.lines[-1] and "PUSHGATEWAY_URL" in stack.lines[-1], stack.output()
    assert "PUSHGATEWAY_PASSWORD" in stack.lines[-1]  # says how to fix it
    assert_nowhere_in_logs(stack, PASSWORD)
