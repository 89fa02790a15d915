"""The models recent jobs on this endpoint loaded, kept on the volume for a fresh worker's prefetch.

Each worker keeps its own file, `$COMFYUI_DIR/.comfy-worker/models/<worker id>.json`: the model
files (relative to the models folder, `checkpoints/x.safetensors`) its jobs loaded, most recent
first, at most KEPT. The handler writes it (atomically, only when the list changes), never a job;
the launcher of a fresh worker reads every worker's file (launcher/prefetch.py) and reads those
models into memory while ComfyUI starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from worker_common.files import write_atomically

KEPT = 16
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf"})


def is_model_name(value: object) -> bool:
    """Whether a value can name a model file (by its extension)."""
    return isinstance(value, str) and os.path.splitext(value)[1].lower() in MODEL_EXTENSIONS


def folder(comfyui_dir: Path) -> Path:
    return comfyui_dir / ".comfy-worker" / "models"


class RecentModels:
    """This worker's record; `loaded` is called after each job with the model files it loaded."""

    def __init__(self, comfyui_dir: Path, worker_id: str) -> None:
        self.path = folder(comfyui_dir) / f"{worker_id}.json"
        self.names: list[str] = read(self.path)
        self._lock = threading.Lock()  # jobs taken ahead end on threads of their own

    def loaded(self, names: Iterable[str]) -> None:
        """Put `names` first; the file is written only when the list changed (best effort: a read-only
        volume leaves the record as it was)."""
        fresh = list(dict.fromkeys(names))
        with self._lock:
            updated = (fresh + [name for name in self.names if name not in fresh])[:KEPT]
            if updated == self.names:
                return
            self.names = updated
            self._write(updated)

    def _write(self, updated: list[str]) -> None:
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps({"models": updated}))


def read(path: Path) -> list[str]:
    try:
        names = json.loads(path.read_text()).get("models")
    except (OSError, ValueError, AttributeError):
        return []
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def endpoint_recent(comfyui_dir: Path) -> list[str]:
    """Every worker's recent models, the newest record's first (one listing and one read per worker)."""
    try:
        records = sorted(folder(comfyui_dir).glob("*.json"), key=lambda path: path.stat().st_mtime, reverse=True)
    except OSError:
        return []
    return list(dict.fromkeys(name for path in records for name in read(path)))
