"""The first job's likely models read into memory while ComfyUI imports.

A model loader reads its file in one stream: on a network volume that caps each open file's
bandwidth, one stream gets only part of the volume's total. Here, beside ComfyUI's start (a
detached process: never delaying readiness), the files the first job will likely load are read
into the page cache, each by MODEL_PREFETCH_STREAMS parallel runs of large range reads (each its
own open file), most likely first: the models the WARMUP_WORKFLOW names, then those recent jobs
on this endpoint loaded (worker_common/recent_models.py). The loader's own read is then served
from memory, where the volume's client keeps file data across opens (NFS's close-to-open
consistency keeps it while the file's attributes are unchanged). A client that drops data at
open would gain nothing and pay the bytes twice: the start of the first file is read twice
through two opens first, and nothing more is read unless the second read came from memory.

Bounded: at most MODEL_PREFETCH_MEMORY_MB in all (default a quarter of the container's memory:
its cgroup limit, else the machine's RAM), stopped after MODEL_PREFETCH_TIMEOUT_S (the settings
are read in launcher/config.py).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker_common import recent_models, startup
from worker_common.contract import MODEL_PREFETCH_RECORD
from worker_common.layout import Layout

MB = 1_000_000
CHUNK = 8 << 20
PROBE_BYTES = 4 << 20
PROBE_AGAIN = 3
MEMORY_READ_S = 0.005  # PROBE_BYTES from the page cache; from a volume: a round trip and 4 MiB at its bandwidth


@dataclass(frozen=True)
class Settings:
    enabled: bool
    memory_bytes: int
    streams: int
    timeout_s: float
    warmup_workflow: Path | None


def workflow_models(path: Path | None) -> list[str]:
    """The model file names a workflow's node inputs give (`x.safetensors`, `sd/x.safetensors`), in node order."""
    try:
        workflow = json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return []
    nodes: list[Any] = list(workflow.values()) if isinstance(workflow, dict) else []
    names = []
    for node in nodes:
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in (inputs or {}).values():
            if recent_models.is_model_name(value):
                names.append(value)
    return names


def likely_models(layout: Layout, settings: Settings) -> list[Path]:
    """The warm-up workflow's models (found in whichever models folder has them), then recent jobs' models."""
    try:
        folders = sorted(entry.name for entry in os.scandir(layout.models) if entry.is_dir())
    except OSError:
        return []
    paths: list[Path] = []
    for name in workflow_models(settings.warmup_workflow):
        paths += [path for folder in folders if (path := layout.model_file(f"{folder}/{name}"))][:1]
    paths += [path for name in recent_models.endpoint_recent(layout.comfyui_dir) if (path := layout.model_file(name))]
    return list(dict.fromkeys(paths))


def read_range(path: Path, start: int, end: int, deadline: float) -> int:
    """Read [start, end) of a file into one reused buffer (the page cache keeps it); bytes read."""
    buffer = bytearray(CHUNK)
    done = 0
    with open(path, "rb", buffering=0) as reader:
        while start + done < end and time.monotonic() < deadline:
            view = memoryview(buffer)[: min(CHUNK, end - start - done)]
            got = os.preadv(reader.fileno(), [view], start + done)
            if got <= 0:
                break
            done += got
    return done


def prefetch(paths: list[Path], settings: Settings) -> tuple[int, int, float]:
    """Read `paths` in order, each in `streams` parallel runs, within the memory and time budgets:
    (files begun, bytes read, seconds)."""
    started = time.monotonic()
    deadline = started + settings.timeout_s
    left, files, total = settings.memory_bytes, 0, 0
    with concurrent.futures.ThreadPoolExecutor(settings.streams, thread_name_prefix="prefetch") as pool:
        for path in paths:
            try:
                size = min(path.stat().st_size, left)
            except OSError:
                continue
            if size <= 0 or time.monotonic() >= deadline:
                break
            share = -(-size // settings.streams)
            runs = [(start, min(start + share, size)) for start in range(0, size, share)]
            read = sum(pool.map(lambda run, path=path: read_range(path, run[0], run[1], deadline), runs))
            files, total, left = files + 1, total + read, left - read
    return files, total, time.monotonic() - started


def keeps_data(path: Path) -> bool:
    """Whether the volume's client keeps a file's data across opens: the start of `path` read, then read
    again through new opens; kept when a read again is served from memory (4x faster, or at memory
    speed when all were: a file already cached). The fastest of a few reads again counts: a start
    keeps the machine busy, and one read may wait for the processor, never the other way round."""
    times = []
    buffer = bytearray(PROBE_BYTES)
    for _ in range(1 + PROBE_AGAIN):
        with open(path, "rb", buffering=0) as reader:  # the open is not timed: only where the bytes come from
            started = time.monotonic()
            reader.readinto(buffer)
            times.append(time.monotonic() - started)
    again = min(times[1:])
    return again * 4 <= times[0] or again < MEMORY_READ_S


def run(layout: Layout, settings: Settings) -> str:
    """Prefetch the likely models; says what it did (for the start-up log)."""
    paths = likely_models(layout, settings)
    if not paths:
        return "no likely models (no WARMUP_WORKFLOW models, no recent jobs' record on the volume)"
    if not keeps_data(paths[0]):
        return "not read ahead: the volume's client drops a file's cached data when it is opened again"
    files, total, seconds = prefetch(paths, settings)
    startup.record_once(MODEL_PREFETCH_RECORD, {"files": files, "bytes": total, "duration_s": seconds})
    names = ", ".join(os.path.relpath(path, layout.models) for path in paths[:files])
    rate = total / MB / seconds if seconds else 0.0
    return f"{files} model file(s), {total / MB:.0f} MB read in {seconds:.1f} s ({rate:.0f} MB/s): {names}"
