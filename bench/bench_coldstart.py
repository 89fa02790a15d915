"""Cold start from a network volume (issue 20): container start -> ComfyUI ready -> first job done.

    .venv/bin/python bench/bench_coldstart.py [--model-gb 4] [--models 2] [--modules 300]
        [--settings pessimistic,close-to-open,kinder] [--rtt-ms 2] [--rows 'fresh worker,restart'] [--comfyui-dir DIR]

The volume is bench/netvol (FUSE: a round trip per call, 200 MB/s per open file, 400 MB/s in
all), at its pessimistic end (the kernel caches nothing), close-to-open (nothing but file data
while the file is unchanged, as an NFS client) and a kinder one (attributes, look-ups and failed
look-ups cached for 60 s, file data kept across opens). On it: a ComfyUI install (the
stand-in, or the real ComfyUI with --comfyui-dir / REAL_COMFYUI_DIR), its venv (a real venv with
this checkout's packages, ~25,000 files, plus a generated library of --modules small modules a
custom node imports, as ComfyUI's own imports of torch & co. touch thousands), custom node packs,
and --models sparse safetensors files of --model-gb in all, which the first job loads (the
stand-in's SafetensorsLoader: header, then every tensor).

The whole stack runs from the checkout (services/entrypoint, supervisord, as tests/stack.py
does), the page cache dropped and the volume mounted afresh before each start. Rows:
  local disk                the same install read from local disk (the floor's first part)
  volume, no help           CODE_COPY=false: ComfyUI imports from the volume
  volume, first worker      CODE_COPY on a fresh container disk, no manifest on the volume yet
  volume, fresh worker      a fresh container disk, the pack (or manifest) an earlier worker kept
  volume, restart           the container's disk survived: the copy is checked, not copied
  ..., folder check         the same with CODE_COPY_CHECK=folders
Each row: seconds to code ready, to ComfyUI ready (accepting jobs), to the first job done,
and the calls and bytes the volume served; the models' bytes over the time from ready (or from
code ready, when the volume is free for them) to the first job done; the first model loaded (the
worker's record), the read-ahead's own rate, and the models' bytes over the time from when the
worker began to read them (the read-ahead's start, else the job's) to the first model loaded,
each also as a share of the volume's 400 MB/s. The floor is the local-disk start plus the bytes
the start needs at the volume's total bandwidth. First, the machine's disk is read around the page
cache and through it: a VM that gives freed memory back to its host pays a fault there for every page
brought into use again, and then every byte a start reads into memory costs processor time.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import netvol  # noqa: E402
from tests.stack import Stack  # noqa: E402
from worker_common.contract import FIRST_MODEL_RECORD, MODEL_PREFETCH_RECORD  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VENV_SITE = REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
MB = 1_000_000
TENSOR_BYTES = 64 << 20
PROBE_BYTES = 1 << 30  # the file memory_cost reads
READ_CHUNK = 8 << 20
MEMORY_GIVEN_BACK_S = 3.0  # after dropping the page cache: a VM gives freed memory back to its host within it
DEAR_MEMORY = 1.5  # reading through the page cache this many times slower than around it: memory costs here
MARKERS = {
    "code ready": ("ComfyUI's code copied", "ComfyUI runs from the volume"),
    "ComfyUI exec": ("starting ComfyUI from",),
}
RECORDS = {"models read ahead": MODEL_PREFETCH_RECORD, "first model loaded": FIRST_MODEL_RECORD}
HEAVY_PACK = '''"""A custom node pack importing what real packs do (HTTP and cloud clients, images, a big library)."""
import aiohttp, PIL.Image, yaml, requests, boto3, cryptography.x509
import benchlib

NODE_CLASS_MAPPINGS = {}
'''


# -- the volume's contents ------------------------------------------------------------------


def build_volume(root: Path, args: argparse.Namespace) -> Path:
    """The volume's folder (built once per set of arguments, kept under --cache): holds ComfyUI/."""
    signature = f"{args.modules}-{args.models}-{args.model_gb}-{args.comfyui_dir or 'standin'}"
    volume = root / f"volume-{signature}"
    if (volume / ".built").exists():
        return volume
    shutil.rmtree(volume, ignore_errors=True)
    comfy = volume / "ComfyUI"
    if args.comfyui_dir:
        shutil.copytree(args.comfyui_dir, comfy, symlinks=True)
    else:
        shutil.copytree(REPO / "standin" / "ComfyUI", comfy, ignore=shutil.ignore_patterns("__pycache__"))
        make_venv(comfy / "com_venv", args.modules)
        make_packs(comfy / "custom_nodes")
    make_models(comfy / "models" / "checkpoints", args.models, args.model_gb)
    (volume / ".built").touch()
    return volume


def make_venv(venv: Path, modules: int) -> None:
    """A real venv holding this checkout's packages (pip's bytecode included), and a generated library."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    subprocess.run(["cp", "-a", f"{VENV_SITE}/.", str(site)], check=True)
    library = site / "benchlib"
    per_package = 50
    packages = [f"sub{index}" for index in range((modules + per_package - 1) // per_package)]
    library.mkdir()
    (library / "__init__.py").write_text("".join(f"from . import {name}\n" for name in packages))
    for package_index, name in enumerate(packages):
        (library / name).mkdir()
        count = min(per_package, modules - package_index * per_package)
        (library / name / "__init__.py").write_text("".join(f"from . import m{i}\n" for i in range(count)))
        for index in range(count):
            body = f"import os, json, re\nVALUE = {index}\n\n\ndef f{index}(x):\n    return x + VALUE\n" * 3
            (library / name / f"m{index}.py").write_text(body)
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", str(library)], check=True)


def make_packs(custom_nodes: Path) -> None:
    (custom_nodes / "heavy_imports").mkdir(parents=True)
    (custom_nodes / "heavy_imports" / "__init__.py").write_text(HEAVY_PACK)
    for index in range(10):
        pack = custom_nodes / f"pack{index}"
        pack.mkdir()
        (pack / "__init__.py").write_text("from .nodes import NODE_CLASS_MAPPINGS\n")
        (pack / "nodes.py").write_text("import json, os\nNODE_CLASS_MAPPINGS = {}\n")
        for asset in range(20):
            (pack / f"asset{asset}.json").write_text("{}")


def make_models(folder: Path, count: int, total_gb: float) -> None:
    """Sparse safetensors files: a real header, tensors of 64 MiB; `total_gb` in all."""
    folder.mkdir(parents=True, exist_ok=True)
    each = int(total_gb * 1e9 / count)
    for index in range(count):
        tensors = max(1, each // TENSOR_BYTES)
        header = {
            f"layer{n}.weight": {
                "dtype": "F16",
                "shape": [TENSOR_BYTES // 2],
                "data_offsets": [n * TENSOR_BYTES, (n + 1) * TENSOR_BYTES],
            }
            for n in range(tensors)
        }
        raw = json.dumps(header).encode()
        path = folder / f"model{index}.safetensors"
        with path.open("wb") as file:
            file.write(len(raw).to_bytes(8, "little") + raw)
            file.truncate(8 + len(raw) + tensors * TENSOR_BYTES)


def first_job(models: list[str]) -> dict[str, Any]:
    """An image through every model's loader, saved: the first job loads every model."""
    workflow: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    }
    previous = "1"
    for index, name in enumerate(models):
        node = str(index + 2)
        workflow[node] = {"class_type": "SafetensorsLoader", "inputs": {"ckpt_name": name, "image": [previous, 0]}}
        previous = node
    workflow["99"] = {"class_type": "SaveImage", "inputs": {"images": [previous, 0], "filename_prefix": "cold"}}
    return {"workflow": workflow}


# -- one start ------------------------------------------------------------------------------


class Timeline:
    """When each phase was first seen, and the volume's counters then."""

    def __init__(self, volume: netvol.Volume | None) -> None:
        self.started = time.monotonic()
        self.volume = volume
        self.phases: dict[str, dict[str, Any]] = {}

    def mark(self, phase: str) -> None:
        if phase in self.phases:
            return
        stats = self.volume.stats() if self.volume else {"total_calls": 0, "bytes_read": 0}
        self.phases[phase] = {
            "s": time.monotonic() - self.started,
            "calls": stats["total_calls"],
            "bytes": stats["bytes_read"],
        }

    def watch(self, stack: Stack) -> None:
        for phase, texts in MARKERS.items():
            if any(text in line for line in stack.lines for text in texts):
                self.mark(phase)


def one_start(work: Path, comfy: Path, env: dict[str, str], volume: netvol.Volume | None, job: dict) -> dict[str, Any]:
    netvol.drop_page_cache()
    if volume:
        volume.reset()
    stack = Stack(
        work,
        {"COMFY_VENV_REQUIRED_MODULES": "aiohttp PIL", "COMFYUI_VENV": str(comfy / "com_venv"), **env},
        comfyui_dir=comfy,
    )
    timeline = Timeline(volume)
    stack.start()
    try:
        stack.wait_for(lambda: timeline.watch(stack) or "ComfyUI exec" in timeline.phases, 900, 0.02, "ComfyUI exec")
        stack.wait_accepting_jobs(900)
        timeline.mark("ready")
        result = stack.runsync(job, timeout_s=900)
        if result.get("status") != "COMPLETED":
            raise RuntimeError(f"the first job failed: {str(result)[:800]}\n{stack.output()}")
        timeline.mark("first job done")
        code_line = next((line for line in stack.lines if any(text in line for text in MARKERS["code ready"])), "")
        if "code copied" in code_line or "no pack of the code" in code_line:  # the pack for the next fresh worker,
            stack.wait_line("code pack:", 900)  # written in the background
    finally:
        stack.stop(timeout_s=120)
        stack.kill_everything()
    lines = {"code": code_line}
    for name in ("model prefetch", "code pack"):
        lines[name] = next((line for line in stack.lines if f"{name}:" in line), "")
    records = {name: startup_record(stack, record) for name, record in RECORDS.items()}
    recorded = {name: float(record["after_start_s"]) for name, record in records.items() if record}
    said = {name: line.split("] ", 1)[-1] for name, line in lines.items()}
    return {"phases": timeline.phases, "recorded": recorded, "read_ahead": records["models read ahead"], **said}


def startup_record(stack: Stack, name: str) -> dict[str, Any] | None:
    """A start-up phase the worker recorded (worker_common/startup.py): `after_start_s`, the seconds after the
    container started, and what the phase says of itself."""
    try:
        record = json.loads((stack.home / ".run" / name).read_text())
        return record if isinstance(record, dict) and "after_start_s" in record else None
    except (OSError, ValueError):
        return None


def run_rows(
    work: Path, volume_dir: Path, settings: netvol.Settings, job: dict, only: list[str]
) -> list[dict[str, Any]]:
    mnt = work / "mnt"
    rows = []
    restart_copy, restart_models = work / "copy-kept", work / "models-kept"
    manifests = volume_dir / "ComfyUI" / ".comfy-worker"
    shutil.rmtree(manifests, ignore_errors=True)
    modes = [
        ("volume, no help", {"CODE_COPY": "false", "MODEL_PREFETCH": "false"}),
        ("volume, first worker", {"CODE_COPY_DIR": str(work / "copy-first"), "MODEL_CACHE_DIR": str(work / "m1")}),
        ("volume, fresh worker", {"CODE_COPY_DIR": str(restart_copy), "MODEL_CACHE_DIR": str(restart_models)}),
        ("volume, restart", {"CODE_COPY_DIR": str(restart_copy), "MODEL_CACHE_DIR": str(restart_models)}),
        (
            "volume, restart, folder check",
            {"CODE_COPY_DIR": str(restart_copy), "MODEL_CACHE_DIR": str(restart_models), "CODE_COPY_CHECK": "folders"},
        ),
    ]
    for index, (name, env) in enumerate(modes):
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        with netvol.mounted(volume_dir, mnt, settings) as volume:
            print(f"  {name} ({settings.describe()})", flush=True)
            row = one_start(work / f"r{index}", mnt / "ComfyUI", env, volume, job)  # short: supervisord's socket path
        rows.append({"row": name, "volume": settings.describe(), **row})
        print_row(rows[-1])
    return rows


def print_row(row: dict[str, Any]) -> None:
    phases = row["phases"]
    cells = [f"{phase} {p['s']:.1f} s ({p['calls']} calls, {p['bytes'] / MB:.0f} MB)" for phase, p in phases.items()]
    cells += [f"{name} {seconds:.1f} s (the worker's record)" for name, seconds in row.get("recorded", {}).items()]
    print(f"    {row['row']}: " + "; ".join(cells), flush=True)
    for name in ("code", "model prefetch", "code pack"):
        if row.get(name):
            print(f"      {row[name]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-gb", type=float, default=4.0, help="the first job's models, in all (sparse files)")
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument(
        "--modules", type=int, default=300, help="modules of the generated library a custom node imports"
    )
    parser.add_argument("--settings", default="pessimistic,kinder")
    parser.add_argument("--rtt-ms", type=float, default=2.0)
    parser.add_argument(
        "--rows", default="", help="only these volume rows, e.g. 'fresh worker,restart' (names' starts)"
    )
    parser.add_argument(
        "--comfyui-dir", default=os.environ.get("REAL_COMFYUI_DIR"), help="a real ComfyUI with its com_venv"
    )
    parser.add_argument(
        "--cache", default=str(Path(tempfile.gettempdir()) / "bench-coldstart"), help="keeps the built volume"
    )
    args = parser.parse_args()
    started, load = time.monotonic(), os.getloadavg()[0]
    volume_dir = build_volume(Path(args.cache), args)
    models = sorted(path.name for path in (volume_dir / "ComfyUI" / "models" / "checkpoints").glob("*.safetensors"))
    job = first_job(models)
    model_bytes = sum((volume_dir / "ComfyUI" / "models" / "checkpoints" / name).stat().st_size for name in models)
    chosen = {"pessimistic": netvol.PESSIMISTIC, "close-to-open": netvol.CLOSE_TO_OPEN, "kinder": netvol.KINDER}
    first_model_bytes = (volume_dir / "ComfyUI" / "models" / "checkpoints" / models[0]).stat().st_size
    report: dict[str, Any] = {"model_bytes": model_bytes, "first_model_bytes": first_model_bytes, "rows": []}
    report["memory_cost_s_per_gb"] = memory_cost(Path(args.cache))
    report["drop_caches"] = netvol.drop_page_cache()
    with tempfile.TemporaryDirectory(prefix="run-", dir=args.cache) as tmp:
        print("local disk", flush=True)
        off = {"CODE_COPY": "false", "MODEL_PREFETCH": "false"}
        local = one_start(Path(tmp) / "local", volume_dir / "ComfyUI", off, None, job)
        report["rows"].append({"row": "local disk", "volume": "local disk", **local})
        print_row(report["rows"][-1])
        for name in args.settings.split(","):
            settings = dataclasses_replace(chosen[name], rtt_ms=args.rtt_ms)
            only = [f"volume, {row}" for row in args.rows.split(",") if row]
            report["rows"] += run_rows(Path(tmp) / name, volume_dir, settings, job, only)
    report.update(load=[load, os.getloadavg()[0]], elapsed_s=time.monotonic() - started)
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "coldstart.json").write_text(json.dumps(report, indent=1) + "\n")


def memory_cost(folder: Path) -> dict[str, float] | None:
    """Seconds per GB to read a file of this machine's disk around the page cache (the disk alone), then
    through it MEMORY_GIVEN_BACK_S after the cache was dropped. A VM that gives freed memory back to its
    host (free page reporting) pays a fault in the host for every page it brings into use again: there the
    second is much the longer, and every byte a start brings into memory costs that processor time
    (docs/coldstart.md). None where the page cache cannot be dropped or the disk refuses O_DIRECT (or is full)."""
    probe = folder / "memory-probe"
    chunk = os.urandom(READ_CHUNK)
    try:
        with open(probe, "wb") as out:
            for _ in range(PROBE_BYTES // READ_CHUNK):
                out.write(chunk)
        if not netvol.drop_page_cache():
            return None
        around = timed_read(probe, os.O_DIRECT)
        netvol.drop_page_cache()
        time.sleep(MEMORY_GIVEN_BACK_S)
        return {"around_cache": around, "through_cache": timed_read(probe, 0)}
    except OSError:
        return None
    finally:
        probe.unlink(missing_ok=True)


def timed_read(path: Path, flags: int) -> float:
    """Seconds per GB to read `path` whole in READ_CHUNK reads, into a page-aligned buffer (as O_DIRECT needs)."""
    started = time.monotonic()
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        with mmap.mmap(-1, READ_CHUNK) as buffer:
            while os.readv(fd, [buffer]):
                pass
    finally:
        os.close(fd)
    return (time.monotonic() - started) * 1e9 / path.stat().st_size


def dataclasses_replace(settings: netvol.Settings, **changes: Any) -> netvol.Settings:
    import dataclasses

    return dataclasses.replace(settings, **changes)


def floor(report: dict[str, Any]) -> tuple[float, float]:
    """(ready, first job): the local-disk start plus the bytes the start needs, then the models, at 400 MB/s."""
    local = report["rows"][0]["phases"]
    helped = [row["phases"] for row in report["rows"] if row["row"] == "volume, fresh worker"]
    rate = netvol.PESSIMISTIC.total_mbps * MB
    ready = local["ready"]["s"] + (helped[0]["ready"]["bytes"] / rate if helped else 0.0)
    return ready, ready + report["model_bytes"] / rate


def read_ahead_rate(record: dict[str, Any]) -> str:
    """The read-ahead's bytes over its own time, and their share of the volume's total bandwidth."""
    if not record.get("bytes"):
        return "kept" if record.get("kept_files") else "-"
    return with_share(record["bytes"] / MB / record["duration_s"])


def first_model_rate(row: dict[str, Any], report: dict[str, Any]) -> str:
    """The bytes the first model's load needed from the volume over the time from when the worker began to
    read them to the first model loaded: MB/s and the share of the volume's total. With a read-ahead, every
    model of the job (the job waits for all its copies) from the read-ahead's start; else the first model
    alone (the job's first loader, sent at ready)."""
    loaded = row["recorded"].get("first model loaded")
    ahead = row.get("read_ahead") or {}
    if loaded is None or row["row"] == "local disk":
        return "-"
    if ahead.get("bytes"):
        needed, began = report["model_bytes"], ahead["after_start_s"] - ahead["duration_s"]
    elif ahead.get("kept_files"):
        return "kept on the disk"
    else:
        needed, began = report["first_model_bytes"], row["phases"]["ready"]["s"]
    return with_share(needed / MB / (loaded - began))


def with_share(mb_per_s: float) -> str:
    """A rate, and its share of the volume's total bandwidth (the same 400 MB/s at every setting)."""
    return f"{mb_per_s:.0f} MB/s ({mb_per_s / netvol.PESSIMISTIC.total_mbps:.0%})"


def print_report(report: dict[str, Any]) -> None:
    ready_floor, job_floor = floor(report)
    print(
        f"\ncold start, model files {report['model_bytes'] / MB:.0f} MB; load {report['load'][0]:.1f}; "
        f"page cache dropped: {report['drop_caches']}"
    )
    if cost := report.get("memory_cost_s_per_gb"):
        around, through = cost["around_cache"], cost["through_cache"]
        dear = through > DEAR_MEMORY * around
        why = " (memory brought into use again costs here: docs/coldstart.md)" if dear else ""
        print(
            f"reading this machine's disk: {around:.2f} s/GB around the page cache, {through:.2f} s/GB "
            f"through it {MEMORY_GIVEN_BACK_S:.0f} s after it was dropped{why}"
        )
    header = ["volume", "start", "code ready", "ready", "first job done", "calls to ready", "MB to ready"]
    header += ["calls to job", "MB to job", "model MB/s after ready", "after code ready", "first model loaded"]
    header += ["read-ahead", "models to first load"]
    rows = []
    for row in report["rows"]:
        phases = row["phases"]
        model_s = phases["first job done"]["s"] - phases["ready"]["s"]
        from_code_s = phases["first job done"]["s"] - phases.get("code ready", phases["ready"])["s"]
        rows.append(
            [
                row["volume"],
                row["row"],
                f"{phases['code ready']['s']:.1f} s" if "code ready" in phases else "-",
                f"{phases['ready']['s']:.1f} s",
                f"{phases['first job done']['s']:.1f} s",
                str(phases["ready"]["calls"]),
                f"{phases['ready']['bytes'] / MB:.0f}",
                str(phases["first job done"]["calls"]),
                f"{phases['first job done']['bytes'] / MB:.0f}",
                f"{report['model_bytes'] / MB / model_s:.0f}",
                f"{report['model_bytes'] / MB / from_code_s:.0f}",
                f"{row['recorded']['first model loaded']:.1f} s" if "first model loaded" in row["recorded"] else "-",
                read_ahead_rate(row.get("read_ahead") or {}),
                first_model_rate(row, report),
            ]
        )
    rows.append(
        ["floor", "local start + bytes at 400 MB/s", "", f"{ready_floor:.1f} s", f"{job_floor:.1f} s"] + [""] * 9
    )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
