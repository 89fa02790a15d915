"""A real Prometheus server scrapes the sidecar: readiness and a handler counter arrive.

Debian's `prometheus` runs on loopback with a temporary config and TSDB, scraping every
second. The handler's half is played by a subprocess writing prometheus_client
multiprocess files, as the real handler does; the full stack's job counter is checked by
the stack tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from tests.processes import Process
from tests.sidecar_world import World, wait_until
from tests.stack import free_port

HANDLER_LIKE = """
import sys
from prometheus_client import Counter
Counter("comfy_worker_jobs", "Jobs.", ["outcome", "reason"]).labels("success", "none").inc(int(sys.argv[1]))
"""


def start_prometheus(run_dir: Path, target: str, **job: object) -> tuple[str, Process]:
    """Debian's Prometheus on a free loopback port, scraping `target` every second.

    `job` adds to or overrides the scrape job's settings (job_name, honor_labels, basic_auth, ...).
    """
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: install Debian's `prometheus` package (scripts/install-system-deps)"
    port = free_port()
    config = run_dir / "prometheus.yml"
    scrape_job = {"job_name": "comfy-worker", "static_configs": [{"targets": [target]}], **job}
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [scrape_job],
            }
        )
    )
    proc = Process(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={run_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        dict(os.environ),
        cwd=run_dir,
    )
    return f"http://127.0.0.1:{port}", proc


def query(prometheus: str, expression: str) -> list[dict]:
    try:
        response = requests.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=5)
    except requests.RequestException:
        return []
    if response.status_code != 200:
        return []
    return response.json()["data"]["result"]


def query_value(prometheus: str, expression: str) -> str | None:
    """The value of the first series an instant query returns, None when there is none."""
    result = query(prometheus, expression)
    return result[0]["value"][1] if result else None


def test_prometheus_scrapes_readiness_and_handler_counters(world: World) -> None:
    # Prometheus 2.x applies new targets at most every 5 s, so it starts first and that wait
    # overlaps with the worker's start-up.
    sidecar_port = free_port()
    prometheus, prometheus_proc = start_prometheus(world.run_dir, f"127.0.0.1:{sidecar_port}")
    world.closers.append(lambda: prometheus_proc.stop(sig=signal.SIGTERM))
    multiproc = world.run_dir / "metrics"
    multiproc.mkdir()
    world.supervisor()
    sidecar = world.sidecar(port=sidecar_port, PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    assert sidecar.readyz(wait_s=30)[0] == 200
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    subprocess.run([sys.executable, "-c", HANDLER_LIKE, "4"], env=env, check=True, timeout=30)

    try:
        ready = wait_until(lambda: query(prometheus, "comfy_worker_ready"), 60, "comfy_worker_ready in Prometheus")
        assert ready[0]["value"][1] == "1"
        assert ready[0]["metric"]["job"] == "comfy-worker"
        jobs = wait_until(
            lambda: query(prometheus, 'comfy_worker_jobs_total{outcome="success",reason="none"}'), 30, "jobs"
        )
        assert jobs[0]["value"][1] == "4"
        up = query(prometheus, 'up{job="comfy-worker"}')
        assert up and up[0]["value"][1] == "1"
        restarts = query(prometheus, 'comfy_worker_program_restarts_total{program="comfyui"}')
        assert restarts and restarts[0]["value"][1] == "0"
        # No scrape errors: the target is healthy in Prometheus's own view.
        targets = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
        assert targets[0]["lastError"] == ""
    except AssertionError as error:
        raise AssertionError(f"{error}\n{prometheus_proc.output()}") from None
