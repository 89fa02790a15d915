"""The first job's likely models read ahead while ComfyUI imports.

A model loader reads its file in one stream: on a network volume that caps each open file's
bandwidth, one stream gets only part of the volume's total. Here, beside ComfyUI's start (a
detached process: never delaying readiness), the files the first job will likely load are read,
each by MODEL_PREFETCH_STREAMS parallel runs of large range reads (each its own open file), most
likely first: the models the WARMUP_WORKFLOW names, then those recent jobs on this endpoint
loaded (worker_common/recent_models.py). Each is

- copied to the container's disk (worker_common/model_cache.py) when it fits MODEL_CACHE_DISK_MB:
  ComfyUI finds the copy first, whatever the volume's client keeps; a copy still whole and
  unchanged on the volume is kept from the container's last start;
- else read into the page cache, within MODEL_PREFETCH_MEMORY_MB, where the volume's client keeps
  file data across opens (NFS's close-to-open consistency keeps it while the file's attributes are
  unchanged): the loader's own read is then served from memory. A client that drops data at open
  would gain nothing and pay the bytes twice: the start of the file is read twice through two opens
  first, and nothing more is read unless the second read came from memory.

Stopped after MODEL_PREFETCH_TIMEOUT_S (the settings are read in launcher/config.py).
"""

from __future__ import annotations

import concurrent.futures
import errno
import fcntl
import json
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import background
from worker_common import model_cache, recent_models, startup
from worker_common.contract import MODEL_PREFETCH_RECORD
from worker_common.layout import Layout
from worker_common.model_cache import Index, Source

MB = 1_000_000
CHUNK = 8 << 20
ALIGN = 1 << 20  # where each run starts, and the size of every read and write but the last (O_DIRECT)
PROBE_BYTES = 4 << 20
PROBE_AGAIN = 3
MEMORY_READ_S = 0.005  # PROBE_BYTES from the page cache; from a volume: a round trip and 4 MiB at its bandwidth
CONFIG_FLAG = "--extra-model-paths-config"
LOCK = ".read-ahead.lock"  # held while a read-ahead runs: one after a ComfyUI restart leaves the cache to it


@dataclass(frozen=True)
class Settings:
    enabled: bool
    memory_bytes: int
    streams: int
    timeout_s: float
    warmup_workflow: Path | None
    cache_dir: Path  # MODEL_CACHE_DIR
    disk_bytes: int  # MODEL_CACHE_DISK_MB: 0, nothing copied to the disk


@dataclass(frozen=True)
class Planned:
    name: str  # below the models folder: checkpoints/x.safetensors
    source: Source
    to_disk: bool  # copied to the container's disk, else read into the page cache
    size: int  # the bytes to read (into memory: up to the memory budget)


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


def start(layout: Layout, settings: Settings) -> list[str]:
    """Start the read-ahead beside ComfyUI's start, in a detached process; ComfyUI's flag that finds the
    copies. Only the recent jobs' records are read here, before ComfyUI starts: looking each model up
    costs round trips on a slow volume (~0.3 s for two), so the read-ahead does that."""
    warmup = workflow_models(settings.warmup_workflow)
    recent = recent_models.endpoint_recent(layout.comfyui_dir)
    flags = cache_args(settings, likely_folders(layout, warmup, recent))
    background.detached("model prefetch", lambda: run(settings, likely_models(layout, warmup, recent)))
    return flags


def model_folders(layout: Layout) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(layout.models) if entry.is_dir())
    except OSError:
        return []


def likely_models(layout: Layout, warmup: list[str], recent: list[str]) -> dict[str, Path]:
    """Name below the models folder -> the volume's real file: the warm-up workflow's models (`warmup`, each
    in the first models folder that has it), then the recent jobs' (`recent`), most likely first."""
    folders = model_folders(layout) if warmup else []
    found: dict[str, Path] = {}
    for base in warmup:
        hits = ((f"{folder}/{base}", layout.model_file(f"{folder}/{base}")) for folder in folders)
        name, path = next(((name, path) for name, path in hits if path is not None), ("", None))
        if path is not None:
            found.setdefault(name, path)
    for name in recent:
        if name not in found and (path := layout.model_file(name)) is not None:
            found[name] = path
    return found


def likely_folders(layout: Layout, warmup: list[str], recent: list[str]) -> set[str]:
    """The models folders the likely models can lie in, no model looked up: the recent jobs' models', and
    every models folder when the warm-up workflow names models (which folder holds each is not known yet)."""
    folders = {name.split("/", 1)[0] for name in recent if "/" in name} | set(model_folders(layout) if warmup else ())
    return folders - {"", ".", ".."}  # a record on the shared volume names no folder out of the cache


def cache_args(settings: Settings, folders: set[str]) -> list[str]:
    """ComfyUI's flag naming the copies' `folders` (searched before the volume's); none when nothing can be
    copied to the disk."""
    if not folders or settings.disk_bytes <= 0:
        return []
    make_folder(settings.cache_dir)
    return [CONFIG_FLAG, str(model_cache.paths_file(settings.cache_dir, folders))]


def make_folder(folder: Path) -> None:
    """The folder and those above it that are missing, each readable by ComfyUI's user whatever the umask."""
    missing = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    for parent in reversed(missing):
        parent.mkdir(exist_ok=True)
        parent.chmod(0o755)


def keep_whole(cache_dir: Path, likely: dict[str, Path]) -> dict[str, Source]:
    """The copies a last start left that are whole, still likely and unchanged on the volume; every other
    file in the cache is removed (before the index says so: the handler never trusts a removed copy)."""
    kept = {}
    for name, copied in model_cache.read_index(cache_dir).files.items():
        try:
            whole = name in likely and Source.of(likely[name]) == copied
            whole = whole and model_cache.copy_path(cache_dir, name).stat().st_size == copied.size
        except OSError:
            whole = False
        if whole:
            kept[name] = copied
    keep = {model_cache.copy_path(cache_dir, name) for name in kept}
    keep |= {cache_dir / model_cache.INDEX, cache_dir / model_cache.PATHS_FILE, cache_dir / LOCK}
    for folder, _dirs, files in os.walk(cache_dir):
        for file in files:
            if Path(folder, file) not in keep:
                Path(folder, file).unlink(missing_ok=True)
    return kept


def plan(likely: dict[str, Path], kept: dict[str, Source], settings: Settings) -> list[Planned]:
    """What to read, in order: to the disk while the disk budget lasts, then into memory where the
    volume's client keeps data."""
    disk_left = settings.disk_bytes - sum(copied.size for copied in kept.values())
    memory_left = settings.memory_bytes
    keeps: bool | None = None
    planned = []
    for name, path in likely.items():
        try:
            source = Source.of(path) if name not in kept else None
        except OSError:
            source = None
        if source is None or source.size == 0:
            continue
        if source.size <= disk_left:
            planned.append(Planned(name, source, True, source.size))
            disk_left -= source.size
            continue
        if memory_left > 0 and keeps is None:
            keeps = keeps_data(path)  # probed once, on the first file that does not fit the disk
        if memory_left > 0 and keeps:
            planned.append(Planned(name, source, False, min(source.size, memory_left)))
            memory_left -= planned[-1].size
    return planned


def read_range(path: Path, start: int, end: int, deadline: float, copy_fd: int | None = None) -> int:
    """Read [start, end) of a file through one reused buffer, written at the same offsets to `copy_fd`
    when given (else the page cache keeps it); bytes read. `start` is a multiple of ALIGN, and so is
    every read and write but one at the file's end, which is padded (copy_to_disk truncates the copy
    after)."""
    buffer = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT needs
    done = 0
    reader = open_source(path, around_cache=copy_fd is not None)
    with buffer, os.fdopen(reader, "rb", buffering=0):  # closes the reader
        while start + done < end and time.monotonic() < deadline:
            asked = min(CHUNK, end - start - done)
            got = min(fill(reader, memoryview(buffer)[: aligned(asked)], start + done), asked)
            if got and copy_fd is not None:
                padded = aligned(got)
                if os.pwrite(copy_fd, memoryview(buffer)[:padded], start + done) != padded:
                    raise OSError(f"a short write copying {path}: is the container's disk full?")
            done += got
            if got < asked:
                break  # the file ended early
    return done


def aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def open_source(path: Path, around_cache: bool) -> int:
    """The volume's file, opened to read around its client's page cache when `around_cache` and the client
    allows it (O_DIRECT): a copy then costs no copy in memory, which the disk's copy makes useless (on the
    emulated volume, a third of the processor time and 1 MiB requests instead of 128 KiB). A client that
    refuses it, at the open or at the first read (EINVAL), is read through its cache."""
    fd = open_direct(path, os.O_RDONLY) if around_cache else None
    if fd is not None and not reads_direct(fd):
        os.close(fd)
        fd = None
    return os.open(path, os.O_RDONLY) if fd is None else fd


def open_direct(path: Path, flags: int) -> int | None:
    """`path` opened with O_DIRECT added to `flags` (a new file: 0644); None where that is refused (EINVAL)."""
    try:
        return os.open(path, flags | os.O_DIRECT, 0o644)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        return None


def reads_direct(fd: int) -> bool:
    """Whether a file opened with O_DIRECT can be read so: some clients accept the flag at the open and
    refuse the read. A read that fails otherwise fails again at the real read, which reports it."""
    try:
        with mmap.mmap(-1, mmap.PAGESIZE) as page:
            os.preadv(fd, [page], 0)
        return True
    except OSError:
        return False


def fill(fd: int, view: memoryview, offset: int) -> int:
    """Read into the whole of `view` from `offset`, unless the file ends first; bytes read."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            break
        done += got
    return done


def read_runs(
    pool: concurrent.futures.Executor, path: Path, size: int, streams: int, deadline: float, copy_fd: int | None
) -> int:
    """The first `size` bytes of `path` in `streams` parallel runs (each starting at a multiple of ALIGN);
    bytes read."""
    share = -(-size // streams // ALIGN) * ALIGN or ALIGN
    runs = [(start, min(start + share, size)) for start in range(0, size, share)]
    return sum(pool.map(lambda run: read_range(path, run[0], run[1], deadline, copy_fd), runs))


def open_copy(path: Path) -> int:
    """The copy's file, opened to write around the page cache where the disk allows (O_DIRECT; not on a
    tmpfs): the copy costs neither a second copy in memory nor the kernel's write-back throttling while
    ComfyUI starts."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = open_direct(path, flags)
    return os.open(path, flags, 0o644) if fd is None else fd


def copy_to_disk(pool: concurrent.futures.Executor, item: Planned, settings: Settings, deadline: float) -> int:
    """Copy a model to the cache, under its name only once whole and unchanged on the volume; bytes read."""
    target = model_cache.copy_path(settings.cache_dir, item.name)
    make_folder(target.parent)
    partial = target.with_name(f".{target.name}.partial")
    fd = open_copy(partial)
    try:
        read = read_runs(pool, Path(item.source.path), item.size, settings.streams, deadline, fd)
        os.ftruncate(fd, item.size)  # the last write's padding
        os.fchmod(fd, 0o644)
        os.utime(fd, ns=(item.source.mtime_ns, item.source.mtime_ns))
    finally:
        os.close(fd)
    try:
        unchanged = Source.of(Path(item.source.path)) == item.source
    except OSError:
        unchanged = False
    if read == item.size and unchanged:
        os.replace(partial, target)
    else:
        partial.unlink()
    return read


def prefetch(planned: list[Planned], settings: Settings, kept: dict[str, Source]) -> tuple[Index, int, float]:
    """Read `planned` in order within the time budget, the index (the `kept` copies, then each copy made
    whole) rewritten as each is done: (the index at the end, bytes read, seconds)."""
    started = time.monotonic()
    deadline = started + settings.timeout_s
    cache = settings.cache_dir
    index = Index(kept, frozenset(item.name for item in planned), os.getpid())
    total = 0
    try:
        make_folder(cache)
        model_cache.write_index(cache, index)
        with concurrent.futures.ThreadPoolExecutor(settings.streams, thread_name_prefix="prefetch") as pool:
            for item in planned:
                if time.monotonic() >= deadline:
                    break
                if item.to_disk:
                    read = copy_to_disk(pool, item, settings, deadline)
                    whole = read == item.size and model_cache.copy_path(cache, item.name).is_file()
                    files = {**index.files, item.name: item.source} if whole else index.files
                else:
                    read = read_runs(pool, Path(item.source.path), item.size, settings.streams, deadline, None)
                    files = index.files
                total += read
                index = Index(files, index.pending - {item.name}, index.writer_pid)
                model_cache.write_index(cache, index)
    finally:
        index = Index(index.files, frozenset(), None)
        model_cache.write_index(cache, index)
    return index, total, time.monotonic() - started


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


def run(settings: Settings, likely: dict[str, Path]) -> str:
    """Read the likely models ahead; says what it did (for the start-up log)."""
    if not likely:
        return "no likely models (no WARMUP_WORKFLOW models, no recent jobs' record on the volume)"
    make_folder(settings.cache_dir)
    with open(settings.cache_dir / LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "not read ahead: the read-ahead of ComfyUI's last start is still running"
        return read_ahead(settings, likely)


def read_ahead(settings: Settings, likely: dict[str, Path]) -> str:
    kept = keep_whole(settings.cache_dir, likely) if settings.disk_bytes > 0 else {}
    planned = plan(likely, kept, settings)
    if not planned and not kept:
        return (
            "not read ahead: no copy fits MODEL_CACHE_DISK_MB, and the volume's client drops a file's cached "
            "data when it is opened again"
        )
    index, total, seconds = prefetch(planned, settings, kept)
    copied = [item.name for item in planned if item.to_disk and item.name in index.files]
    in_memory = [item.name for item in planned if not item.to_disk]
    files = len(copied) + len(in_memory)
    startup.record_once(
        MODEL_PREFETCH_RECORD,
        {"files": files, "bytes": total, "duration_s": seconds, "kept_files": len(kept)},
    )
    rate = total / MB / seconds if seconds else 0.0
    said = [f"{files} model file(s), {total / MB:.0f} MB read in {seconds:.1f} s ({rate:.0f} MB/s)"]
    said += [f"copied to the container's disk: {', '.join(copied)}"] if copied else []
    said += [f"read into memory: {', '.join(in_memory)}"] if in_memory else []
    said += [f"kept from the last start: {', '.join(kept)}"] if kept else []
    return "; ".join(said)
