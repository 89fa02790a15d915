"""Many sequential jobs through a running stack, sampling the handler's resources: shared by
tests/test_soak.py (resource assertions) and bench/bench_soak.py (figures).
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from PIL import Image

from tests.stack import Stack

UPLOAD_EVERY = 10  # every tenth job uploads an input image too, so input clean-up is exercised


def empty_image_job(index: int, side: int = 64) -> dict[str, Any]:
    """EmptyImage side x side -> SaveImage: ComfyUI's own execution time is next to nothing."""
    return {
        "workflow": {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": side, "height": side, "batch_size": 1, "color": index & 0xFFFFFF},
            },
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "soak"}},
        }
    }


def upload_job(index: int) -> dict[str, Any]:
    """LoadImage of an uploaded 64x64 PNG -> SaveImage."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (index % 256, 7, 7)).save(buffer, "PNG")
    name = f"soak-in-{index}.png"
    return {
        "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "soak"}},
        },
        "images": [{"name": name, "image": base64.b64encode(buffer.getvalue()).decode()}],
    }


def job_for(index: int) -> dict[str, Any]:
    return upload_job(index) if index % UPLOAD_EVERY == UPLOAD_EVERY - 1 else empty_image_job(index)


@dataclass
class Sample:
    job: int  # jobs completed when sampled
    rss: int
    fds: int
    threads: int
    input_files: int
    output_files: int


@dataclass
class SoakRun:
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    jobs: int = 0
    prompt_ids: list[str] = field(default_factory=list)
    baseline: tuple[int, int] = (0, 0)  # files in input/ and output/ before the first job

    def at(self, job: int) -> Sample:
        return next(sample for sample in self.samples if sample.job == job)


def files_in(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file() and path.name != ".gitkeep")


def sample(stack: Stack, process: psutil.Process, job: int) -> Sample:
    with process.oneshot():
        rss, fds, threads = process.memory_info().rss, process.num_fds(), process.num_threads()
    return Sample(
        job,
        rss,
        fds,
        threads,
        files_in(stack.layout.input),
        files_in(stack.layout.output),
    )


def soak(stack: Stack, jobs: int, sample_at: set[int], timeout_s: float = 60) -> SoakRun:
    """Send `jobs` jobs one after another; sample the handler after the job numbers in `sample_at`.

    Samples are taken once the job's clean-up has run (the handler removes inputs and outputs in the
    background after answering), so a file count there is what stays behind.
    """
    process = psutil.Process(stack.pid_of("handler"))
    run = SoakRun()
    baseline = run.baseline = counts(stack)
    session = requests.Session()
    started = time.perf_counter()
    for index in range(jobs):
        response = session.post(f"{stack.api_url}/runsync", json={"input": job_for(index)}, timeout=timeout_s)
        result = response.json() if response.status_code == 200 else {"status": response.status_code}
        if result.get("status") != "COMPLETED":
            run.failures.append(f"job {index}: {str(result)[:300]}")
        else:
            run.prompt_ids.append(result["output"].get("prompt_id", ""))
        if index + 1 in sample_at:
            paused = time.perf_counter()
            settle(stack, baseline)
            run.samples.append(sample(stack, process, index + 1))
            started += time.perf_counter() - paused  # sampling is not the jobs' time
    run.seconds = time.perf_counter() - started
    run.jobs = jobs
    session.close()
    return run


def counts(stack: Stack) -> tuple[int, int]:
    return files_in(stack.layout.input), files_in(stack.layout.output)


def settle(stack: Stack, baseline: tuple[int, int], timeout_s: float = 10) -> None:
    """Until input/ and output/ hold no more files than at the start (clean-up runs after the answer).

    Gives up quietly at the timeout: the caller's assertions on the sampled counts say what stayed.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = counts(stack)
        if now[0] <= baseline[0] and now[1] <= baseline[1]:
            return
        time.sleep(0.005)
