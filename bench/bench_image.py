"""Benchmark of the image as a container (issue 18): its size, and container start -> ready -> first job done.

    .venv/bin/python bench/bench_image.py [--runs 5] [--fresh]

The image is built from the checkout by tests/container.py (scripts/image, podman) on the Debian 12 stand-in
base: the CUDA base cannot be pulled here, and the stand-in ComfyUI needs no GPU. --fresh first removes the
image, the base and podman's build cache, so the build time is what a machine without them (CI) pays.
Each run starts a container of the image on a volume folder holding the stand-in ComfyUI (its com_venv made
with the image's Python) and times, from just before `podman run`:

- started: `podman run --detach` returned (the container exists and its entrypoint runs);
- ready: the sidecar's /readyz first answers 200 through the published port (polled every 20 ms);
- first job done: the sample job (test_input.json) returned through the local API, sent as soon as the
  API answers.

It also reads the entrypoint's own figure, comfy_worker_startup_duration_seconds from /metrics. The
size is podman's (all layers, base included), with the base's and the largest layers' share.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.container import (  # noqa: E402
    DEBIAN_BASE,
    Container,
    build_image,
    image_size,
    make_volume,
    podman,
)

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_JOB = json.loads((REPO / "test_input.json").read_text())["input"]
POLL_S = 0.02


def remove_images(image: str) -> None:
    """The image, the base and podman's build cache gone: the next build starts from nothing."""
    podman("rmi", "--force", image, DEBIAN_BASE, check=False, timeout_s=300)
    podman("image", "prune", "--all", "--force", check=False, timeout_s=300)


def until(predicate, timeout_s: float = 180) -> float:
    """Poll `predicate` every POLL_S until true; the monotonic time it first was."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(POLL_S)
    raise TimeoutError("gave up waiting")


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def startup_metric(container: Container) -> float:
    metrics = requests.get(f"{container.sidecar_url}/metrics", timeout=5).text
    line = next(line for line in metrics.splitlines() if line.startswith("comfy_worker_startup_duration_seconds "))
    return float(line.split()[1])


def one_run(image: str, volume: Path) -> dict[str, float]:
    """Start a container, time it to ready and through its first job, then stop it."""
    begin = time.monotonic()
    container = Container.run(image, volume, SERVE_API_LOCALLY="true")
    try:
        started = time.monotonic()
        ready = until(lambda: answers(f"{container.sidecar_url}/readyz"))
        until(lambda: answers(f"{container.api_url}/"))
        result = container.runsync(SAMPLE_JOB)
        done = time.monotonic()
        assert result["status"] == "COMPLETED", result
        figures = {
            "started_s": started - begin,
            "ready_s": ready - begin,
            "first_job_s": done - begin,
            "entrypoint_ready_s": startup_metric(container),
        }
        stop_begin = time.monotonic()
        figures["stop_exit_code"] = container.stop()
        figures["stop_s"] = time.monotonic() - stop_begin
        return figures
    finally:
        container.remove()


def layers(image: str) -> list[tuple[int, str]]:
    """The image's layers, largest first: (bytes, the instruction that made it)."""
    rows = podman("history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", image).stdout.splitlines()
    sized = []
    for row in rows:
        size, _, created_by = row.partition("\t")
        sized.append((parse_size(size), " ".join(created_by.split())[:90]))
    return sorted(sized, reverse=True)


def parse_size(text: str) -> int:
    """podman's sizes: "0 B", "20 kB", "1.05 GB"."""
    number, unit = text.split()
    return int(float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="containers started one after another")
    parser.add_argument("--fresh", action="store_true", help="remove the image, base and build cache first")
    args = parser.parse_args()
    image = "localhost/comfy-worker:bench"
    if args.fresh:
        remove_images(image)
    begin = time.monotonic()
    build_image(image)
    build_s = time.monotonic() - begin
    size, base = image_size(image), image_size(DEBIAN_BASE)
    print(f"image {image}: {size / 1e9:.2f} GB (Debian 12 base {base / 1e9:.2f} GB); build {build_s:.0f} s"
          f"{' from nothing' if args.fresh else ' (podman cache as found)'}")  # fmt: skip
    for layer_bytes, created_by in layers(image)[:5]:
        print(f"  layer {layer_bytes / 1e6:7.0f} MB  {created_by}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-image-") as folder:
        volume = make_volume(Path(folder) / "volume", image)
        for index in range(args.runs):
            figures = one_run(image, volume)
            runs.append(figures)
            print(
                f"run {index + 1}: started {figures['started_s']:.2f} s, ready {figures['ready_s']:.2f} s, "
                f"first job done {figures['first_job_s']:.2f} s (entrypoint's figure "
                f"{figures['entrypoint_ready_s']:.2f} s); podman stop {figures['stop_s']:.2f} s, "
                f"exit {figures['stop_exit_code']:.0f}"
            )
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(
        f"median of {len(runs)}: start -> ready {medians['ready_s']:.2f} s, start -> first job done "
        f"{medians['first_job_s']:.2f} s"
    )
    RESULTS.mkdir(exist_ok=True)
    result = {
        "image_bytes": size,
        "base_bytes": base,
        "build_s": build_s,
        "fresh": args.fresh,
        "runs": runs,
        "medians": medians,
    }
    (RESULTS / "image.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
