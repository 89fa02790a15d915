"""The first jobs' model files, copied to the container's disk while ComfyUI imports.

A network volume caps each open file's bandwidth, and a model loader reads its file in one
stream; where the volume's client also drops a file's data when it is opened again, nothing read
ahead stays in memory for the loader. So the launcher's read-ahead (launcher/prefetch.py) copies
the likely models, each in several parallel streams, to a folder of this worker's own on the
container's disk, MODEL_CACHE_DIR, laid out as the volume's models folder:

    MODEL_CACHE_DIR/checkpoints/x.safetensors   a copy of $COMFYUI_DIR/models/checkpoints/x.safetensors
    MODEL_CACHE_DIR/index.json                  what each copy was copied from, and what is still being copied
    MODEL_CACHE_DIR/extra_model_paths.yaml      the copies' folders, for ComfyUI (--extra-model-paths-config)

ComfyUI searches the copies' folders first (`is_default: true`) and falls back to the volume's
for anything not copied. A copy appears under its name only once it is whole (written to a
temporary name, then renamed) and keeps its source's size and mtime. Before a job is queued the
handler waits while the job's models are still being copied (bounded: the copy is faster than
the loader's one stream) and removes a copy whose source on the volume changed since, so a
replaced model is never served stale (`ready_for`). Only the launcher's read-ahead (root)
writes here; ComfyUI's user reads; the handler removes stale copies.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker_common.files import write_atomically

INDEX = "index.json"
PATHS_FILE = "extra_model_paths.yaml"
POLL_S = 0.05


@dataclass(frozen=True)
class Source:
    path: str  # the file's real path on the volume
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Source:
        """The volume's file as it is now (raises OSError when it is gone)."""
        st = path.stat()
        return cls(str(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Index:
    files: dict[str, Source]  # name below the models folder -> what its whole copy was copied from
    pending: frozenset[str]  # names still being copied
    writer_pid: int | None  # the read-ahead's process

    def as_json(self) -> str:
        files = {name: [src.path, src.size, src.mtime_ns] for name, src in sorted(self.files.items())}
        return json.dumps({"files": files, "pending": sorted(self.pending), "writer_pid": self.writer_pid})


def read_index(cache_dir: Path) -> Index:
    """The index as last written; an empty one when there is none or it cannot be read."""
    try:
        data: Any = json.loads((cache_dir / INDEX).read_text())
        files = {str(name): Source(str(v[0]), int(v[1]), int(v[2])) for name, v in data["files"].items()}
        pid = data.get("writer_pid")
        return Index(files, frozenset(map(str, data.get("pending", []))), int(pid) if pid else None)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return Index({}, frozenset(), None)


def write_index(cache_dir: Path, index: Index) -> None:
    write_atomically(cache_dir / INDEX, index.as_json())


def copy_path(cache_dir: Path, name: str) -> Path:
    """Where the copy of the volume's `models/<name>` lives (`name` was resolved below the models folder)."""
    return cache_dir.joinpath(*name.split("/"))


def paths_file(cache_dir: Path, folders: Iterable[str]) -> Path:
    """Write ComfyUI's extra_model_paths.yaml listing the copies' folders first (`is_default`); its path."""
    lines = ["comfy_worker_model_cache:", f"  base_path: {json.dumps(str(cache_dir))}", "  is_default: true"]
    lines += [f"  {json.dumps(folder)}: {json.dumps(folder)}" for folder in sorted(set(folders))]
    path = cache_dir / PATHS_FILE
    write_atomically(path, "\n".join(lines) + "\n")
    path.chmod(0o644)  # ComfyUI's user reads it; the launcher writes under the entrypoint's umask 077
    return path


def writer_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for(cache_dir: Path, names: Iterable[str], timeout_s: float) -> float:
    """Wait while the read-ahead is still copying any of `names` (at most `timeout_s`); seconds waited.
    The index is read again every POLL_S: it is a small local file, only the first jobs find anything
    pending, and the read-ahead's lock covers all its files where a job waits only for its own."""
    wanted = set(names)
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        index = read_index(cache_dir)
        if not wanted & index.pending or not writer_alive(index.writer_pid):
            break
        time.sleep(POLL_S)
    return time.monotonic() - started


def drop_stale(cache_dir: Path, sources: dict[str, Path]) -> list[str]:
    """Remove the copies of `sources` (name -> the volume's real path) whose source changed or is gone;
    the names removed. ComfyUI then reads the volume's file."""
    index = read_index(cache_dir)
    dropped = []
    for name, path in sources.items():
        copied = index.files.get(name)
        if copied is None:
            continue
        try:
            current = Source.of(path)
        except OSError:
            current = None
        if current != copied:
            with contextlib.suppress(FileNotFoundError):
                copy_path(cache_dir, name).unlink()
            dropped.append(name)
    return dropped


def ready_for(cache_dir: Path, sources: dict[str, Path], timeout_s: float) -> tuple[float, list[str]]:
    """Before a job that loads `sources` (name -> the volume's real path): wait while they are being
    copied, then drop the stale copies. (seconds waited, names dropped)."""
    named = {posixpath.normpath(name): path for name, path in sources.items()}  # `sd//x` is ComfyUI's `sd/x`
    waited = wait_for(cache_dir, named, timeout_s)
    return waited, drop_stale(cache_dir, named)


def copy_of(cache_dir: Path, source: Source) -> Path | None:
    """The whole copy of the volume's file `source` as it is now, if the cache holds one."""
    for name, copied in read_index(cache_dir).files.items():
        if copied == source:
            path = copy_path(cache_dir, name)
            return path if path.is_file() and path.stat().st_size == source.size else None
    return None
