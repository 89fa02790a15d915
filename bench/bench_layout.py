"""Benchmark of where a worker's folders live (issue 9): on the container's disk, or inside ComfyUI on the volume.

    .venv/bin/python bench/bench_layout.py [--runs 30] [--warmup 5] [--slow-ms 2] [--skip-slow]

Two workers run side by side, each the stand-in ComfyUI, the sidecar and the handler with
runpod's local API (POST /runsync), and take a small job in turn (one after the other, the
order swapped every round): a 64x64 PNG sent as base64 is uploaded, loaded, inverted and saved,
and the saved image comes back as base64, so every step of the file handling is in it.

- "worker's disk": WORKER_DATA_DIR in a temp dir of its own (this project's layout);
- "on the volume": the worker's folders on the (simulated) network volume, beside ComfyUI's
  install, as ComfyUI's own input/, output/ and temp/ were before the per-worker layout (the
  worker refuses WORKER_DATA_DIR inside the install itself: it empties its folders).

Per-job overhead is a job's wall time through /runsync minus ComfyUI's execution time (its
/history execution_start / execution_success timestamps; CLEANUP_HISTORY=false), p50 over
--runs after --warmup, as bench_handler.py measures it.

Here both "disks" are the same local file system, so the first pair shows what the layout
itself costs. The second pair puts the same two workers on a simulated slow volume: every
file-system call on a path under COMFYUI_DIR, in ComfyUI's and the handler's processes, waits
--slow-ms first (bench/slow_volume/sitecustomize.py: a Python start-up hook, no root, no FUSE;
an uncached bound, not a model of a real network file system).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from bench.bench_handler import execution_ms  # noqa: E402
from tests.handler_harness import Rig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SLOW_VOLUME = Path(__file__).resolve().parent / "slow_volume"
LAYOUTS = ("worker's disk", "on the volume")


class VolumeRig(Rig):
    """A Rig whose worker folders are on the volume, beside ComfyUI's install (the old layout's cost)."""

    def __init__(self, root: Path, comfy_env: dict[str, str] | None = None) -> None:
        super().__init__(root, comfy_env)
        self.data_dir = root / "volume-folders"
        self.layout = dataclasses.replace(self.layout, data_dir=self.data_dir)
        self.layout.prepare()


def small_job() -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 90)).save(buffer, "PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "layout"}},
    }
    return {"workflow": workflow, "images": [{"name": "photo.png", "image": image}]}


def slow_env(on_volume: list[Path], delay_ms: float) -> dict[str, str]:
    """The environment that slows every file-system call under the volume's folders."""
    return {
        "PYTHONPATH": f"{SLOW_VOLUME}{os.pathsep}{REPO}",
        "SLOW_VOLUME_DIR": os.pathsep.join(str(path) for path in on_volume),
        "SLOW_VOLUME_MS": str(delay_ms),
    }


def start_pair(root: Path, delay_ms: float) -> list[Rig]:
    rigs: list[Rig] = []
    for layout, rig_class in zip(LAYOUTS, (Rig, VolumeRig), strict=True):
        rig_root = root / ("local" if rig_class is Rig else "volume")
        on_volume = [rig_root / "comfy"] + ([] if rig_class is Rig else [rig_root / "volume-folders"])
        env = slow_env(on_volume, delay_ms) if delay_ms else {}
        rig = rig_class(rig_root, comfy_env=env)
        rigs.append(rig)
        rig.start({"CLEANUP_HISTORY": "false", **env})
        print(f"  {layout}: WORKER_DATA_DIR={rig.data_dir}", flush=True)
    return rigs


def one_job(rig: Rig, job: dict[str, Any]) -> tuple[float, float]:
    """(overhead, wall) of one job in milliseconds."""
    started = time.perf_counter()
    result = rig.runsync(job)
    wall = (time.perf_counter() - started) * 1000
    if result.get("status") != "COMPLETED":
        raise RuntimeError(f"the job failed: {str(result)[:500]}\n{rig.output()[-3000:]}")
    return wall - execution_ms(rig, result["output"]["prompt_id"]), wall


def measure_pair(root: Path, delay_ms: float, runs: int, warmup: int) -> list[dict[str, Any]]:
    """Both layouts, jobs alternating between them; one row per layout."""
    rigs = start_pair(root, delay_ms)
    job = small_job()
    timings: list[list[tuple[float, float]]] = [[], []]
    try:
        for round_index in range(warmup + runs):
            order = (0, 1) if round_index % 2 == 0 else (1, 0)
            for index in order:
                timing = one_job(rigs[index], job)
                if round_index >= warmup:
                    timings[index].append(timing)
    finally:
        for rig in rigs:
            rig.stop()
    volume = f"slow volume, +{delay_ms:g} ms per call" if delay_ms else "plain local disk"
    return [
        {
            "layout": layout,
            "volume": volume,
            "slow_ms": delay_ms,
            "runs": len(pairs),
            "overhead_p50_ms": statistics.median(overhead for overhead, _ in pairs),
            "overhead_p90_ms": statistics.quantiles([overhead for overhead, _ in pairs], n=10)[-1],
            "wall_p50_ms": statistics.median(wall for _, wall in pairs),
        }
        for layout, pairs in zip(LAYOUTS, timings, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--slow-ms", type=float, default=2.0, help="added to each file-system call on the volume")
    parser.add_argument("--skip-slow", action="store_true", help="only the plain pair")
    args = parser.parse_args()
    started, load = time.monotonic(), os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-layout-") as tmp:
        for delay_ms in [0.0] if args.skip_slow else [0.0, args.slow_ms]:
            print(f"pair on a {'slow' if delay_ms else 'plain'} volume", flush=True)
            rows += measure_pair(Path(tmp) / f"slow{delay_ms:g}", delay_ms, args.runs, args.warmup)
    report = {"rows": rows, "load": [load, os.getloadavg()[0]], "elapsed_s": time.monotonic() - started}
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "layout.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


def print_report(report: dict[str, Any]) -> None:
    header = ["volume", "worker folders", "overhead p50", "overhead p90", "wall p50", "runs"]
    rows = [
        [
            row["volume"],
            row["layout"],
            f"{row['overhead_p50_ms']:.1f} ms",
            f"{row['overhead_p90_ms']:.1f} ms",
            f"{row['wall_p50_ms']:.1f} ms",
            str(row["runs"]),
        ]
        for row in report["rows"]
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"\nper-job overhead, small job (64x64 PNG in, inverted PNG out); load {report['load'][0]:.1f}")
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
