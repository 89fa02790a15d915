"""Custom node packs that failed to import in the running ComfyUI, as the sidecar found them.

The sidecar reads ComfyUI's start-up report and writes the failures to a small JSON file in the
run dir; the handler reads them to explain a workflow naming a node class that does not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "custom-node-failures.json"


@dataclass(frozen=True)
class PackFailure:
    pack: str
    path: str
    error: str


def read_failures(run_dir: Path) -> list[PackFailure]:
    """The failures the sidecar recorded for the running ComfyUI; [] when none (or no file yet)."""
    try:
        entries = json.loads((run_dir / FILE_NAME).read_text()).get("failed", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [PackFailure(str(e.get("pack", "?")), str(e.get("path", "")), str(e.get("error", ""))) for e in entries]
