"""Where this stack's sidecar listens, recorded in the run dir for `status` and `probe`.

A shell in the Pod, or a second terminal in a checkout, does not have the stack's
environment: its SIDECAR_PORT may be unset, or another stack's. So the sidecar writes
`$WORKER_RUN_DIR/sidecar.json` once it listens and removes it when it stops, and the commands
read it from the run dir of their own checkout or container (worker_common.settings.run_dir):

    {"url": "http://127.0.0.1:8181", "pid": 42, "comfy_port": 8188}
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from worker_common.files import write_atomically

FILE_NAME = "sidecar.json"


@dataclass(frozen=True)
class SidecarRecord:
    url: str  # as reached from inside the container
    pid: int
    comfy_port: int


def write(run_dir: Path, record: SidecarRecord) -> None:
    """Record where the sidecar listens (atomically: a reader never sees half a file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run_dir / FILE_NAME, json.dumps(asdict(record)) + "\n")


def read(run_dir: Path) -> SidecarRecord | None:
    try:
        body = json.loads((run_dir / FILE_NAME).read_text())
        return SidecarRecord(str(body["url"]), int(body["pid"]), int(body["comfy_port"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def remove(run_dir: Path, pid: int) -> None:
    """Remove the record if process `pid` wrote it (a newer sidecar's record stays)."""
    record = read(run_dir)
    if record is not None and record.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / FILE_NAME).unlink()
