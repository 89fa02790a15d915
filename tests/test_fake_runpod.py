"""tests/fake_runpod.py against the runpod SDK's own client functions (rp_job, rp_http), run in a child
process with the environment RunPod would give a worker: the fake must answer what the SDK asks."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.fake_runpod import FakeRunPod
from tests.handler_harness import PYTHON, base_env

# Runs in the child: each SDK call's return value, one JSON line each.
SDK_CALLS = """
import asyncio, json
from runpod.http_client import AsyncClientSession
from runpod.serverless.modules import rp_http, rp_job

async def main():
    async with AsyncClientSession() as session:
        print("SDK:", json.dumps(await rp_job.get_job(session, 1)), flush=True)
        print("SDK:", json.dumps(await rp_job.get_job(session, 3)), flush=True)
        print("SDK:", json.dumps(await rp_job.get_job(session, 2)), flush=True)
        await rp_http.send_result(session, {"status": "IN_PROGRESS", "output": {"step": 1}}, {"id": "a"})
        await rp_http.send_result(session, {"output": {"images": []}}, {"id": "a"})
        print("SDK:", json.dumps(await rp_job.get_stop_signals(session)), flush=True)
        print("SDK:", json.dumps(await rp_job.get_stop_signals(session)), flush=True)

asyncio.run(main())
"""


def job(job_id: str) -> dict:
    return {"id": job_id, "input": {"n": job_id}}


@pytest.fixture
def fake() -> Iterator[FakeRunPod]:
    server = FakeRunPod([job("a"), job("b"), job("c")], rtt_s=0.01, take_hold_s=0.3, stop_hold_s=60)
    yield server
    server.close()


def run_sdk(fake: FakeRunPod, stop: str) -> list:
    """Run SDK_CALLS against the fake; `stop` is asked to stop while the SDK's first stop poll is held."""

    def ask_stop() -> None:
        fake.wait_held("stop", 60)
        fake.stop_hold_s = 0  # the next poll is answered at once: nothing to stop
        fake.stop_job(stop)

    asking = threading.Thread(target=ask_stop, daemon=True)
    asking.start()
    env = base_env() | fake.env("worker-7")
    done = subprocess.run([PYTHON, "-c", SDK_CALLS], env=env, capture_output=True, text=True, timeout=60, check=False)
    asking.join(5)
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line.removeprefix("SDK: ")) for line in done.stdout.splitlines() if line.startswith("SDK: ")]


def test_the_sdk_takes_jobs_posts_results_and_hears_stops(fake: FakeRunPod) -> None:
    single, batch, empty, stops, no_stops = run_sdk(fake, "b")
    assert single == [job("a")], "the singular job-take answers one job object"
    assert batch == [job("b"), job("c")], "the batch job-take answers a list of what is left"
    assert empty is None, "an empty backlog is a 204 after the hold"
    assert (stops, no_stops) == (["b"], [])

    takes = fake.of_kind("take", "take-batch")
    assert [(t.kind, t.path, t.job_ids) for t in takes] == [
        ("take", "/job-take/worker-7", ("a",)),
        ("take-batch", "/job-take-batch/worker-7", ("b", "c")),
        ("take-batch", "/job-take-batch/worker-7", ()),
    ]
    assert takes[1].query["batch_size"] == ["3"] and takes[0].query["gpu"] == ["fake"]
    [progress] = fake.progress("a")
    assert progress.body == {"status": "IN_PROGRESS", "output": {"step": 1}}
    assert fake.result("a").body == {"output": {"images": []}}
    assert fake.result("a").query["isStream"] == ["false"]
    assert fake.handed_out_at("a") <= progress.at <= fake.result("a").at
    assert fake.backlog() == 0


def test_a_held_job_take_gets_a_job_added_meanwhile() -> None:
    fake = FakeRunPod(rtt_s=0, take_hold_s=60)
    try:
        taken: list = []

        def take() -> None:
            import requests

            taken.append(requests.get(fake.url + "/job-take/w?gpu=fake&job_in_progress=0", timeout=60).json())

        thread = threading.Thread(target=take)
        thread.start()
        fake.wait_held("take", 30)
        fake.add(job("late"))
        thread.join(60)
        assert taken == [job("late")]
        [take] = fake.of_kind("take")
        assert take.job_ids == ("late",) and take.at >= fake.added_at["late"]
    finally:
        fake.close()
