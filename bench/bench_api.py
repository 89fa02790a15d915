"""Benchmark of workflows as an API: what naming a workflow, checking params and hashing models cost a job.

    .venv/bin/python bench/bench_api.py [--runs 20] [--model-mb 1024]

Everything is real and on loopback: the stand-in ComfyUI, the sidecar and the handler (runpod's
local API). The workflow is the stand-in's checkpoint noise node (it reads the checkpoint's
first 4 KB) into SaveImage. Printed, p50 of `--runs` jobs after one warm-up each:

- a job sending the workflow inline, without params (the baseline);
- the same workflow by `workflow_name` with three params (named workflow read + params checked);
- a describe request (nothing queued);
- the first job after the checkpoint changed (its SHA-256 computed while the prompt runs) against
  the jobs after it (the hash cached), and the handler's own log of how long hashing took.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.handler_harness import Rig  # noqa: E402
from tests.test_api import PORTRAIT, write_workflow  # noqa: E402

SET = {"seed": 5, "width": 32, "palette": "gray"}  # what the params below set, written into the inline workflow


def timed(rig: Rig, job_input: dict) -> float:
    started = time.perf_counter()
    result = rig.runsync(job_input, timeout_s=600)
    elapsed = time.perf_counter() - started
    if result.get("status") != "COMPLETED":
        raise SystemExit(f"job failed: {json.dumps(result)[:500]}")
    return elapsed


def p50_ms(rig: Rig, job_input: dict, runs: int) -> float:
    timed(rig, job_input)
    return statistics.median(timed(rig, job_input) for _ in range(runs)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--model-mb", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        rig = Rig(Path(root))
        checkpoint = rig.comfy_dir / "models" / "checkpoints" / "sd" / "tiny.safetensors"
        checkpoint.parent.mkdir(parents=True)
        with open(checkpoint, "wb") as file:
            for _ in range(args.model_mb):
                file.write(bytes(1 << 20))
        write_workflow(rig.comfy_dir / "workflows_api", "portrait", PORTRAIT)
        rig.start()
        try:
            hashed_before = timed(rig, {"workflow_name": "portrait"})  # first hash of the model
            params = {"1.seed": 5, "Noise.width": 32, "1.palette": "gray"}
            same = {**PORTRAIT, "1": {**PORTRAIT["1"], "inputs": {**PORTRAIT["1"]["inputs"], **SET}}}
            inline = p50_ms(rig, {"workflow": same}, args.runs)
            named = p50_ms(rig, {"workflow_name": "portrait", "params": params}, args.runs)
            describe = p50_ms(rig, {"describe": "portrait"}, args.runs)
            with open(checkpoint, "r+b") as file:
                file.write(b"\1")  # a new version: hashed again
            first = timed(rig, {"workflow_name": "portrait"}) * 1000
            cached = p50_ms(rig, {"workflow_name": "portrait"}, args.runs)
            assert rig.handler is not None
            logged = [
                line.split("hashed model file ", 1)[1] for line in rig.handler.lines if "hashed model file" in line
            ]
        finally:
            rig.stop()
    print(f"jobs through /runsync, p50 of {args.runs} (ms):")
    print(f"  inline workflow, same values        {inline:8.1f}")
    print(f"  workflow_name + 3 params            {named:8.1f}  ({named - inline:+.1f})")
    print(f"  describe (nothing queued)           {describe:8.1f}")
    print(f"model of {args.model_mb} MB: first job after it changed {first:.1f} ms, later jobs p50 {cached:.1f} ms")
    print(f"  (the very first job: {hashed_before * 1000:.1f} ms); handler's hashing log: {logged}")


if __name__ == "__main__":
    main()
