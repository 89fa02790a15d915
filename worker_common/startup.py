"""A fresh worker's start-up phases after the code is ready, left in the run directory for /metrics and status.

Each record is one small JSON file (worker_common/contract.py names them), written once per
container (the run directory is the container's) by the part that sees the phase, atomically:
`after_start_s` is seconds after the container started (WORKER_STARTED_AT), with the phase's
own figures beside it. The sidecar reads them at every scrape.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from worker_common import settings
from worker_common.files import write_atomically


def record_once(name: str, figures: dict[str, Any]) -> float | None:
    """Record a phase reached now, unless this container recorded it already; its seconds after the start."""
    path = settings.run_dir() / name
    started = settings.started_at()
    if path.exists() or not started:
        return None
    after = time.time() - started
    with contextlib.suppress(OSError):
        write_atomically(path, json.dumps({"after_start_s": after, **figures}))
    return after


def read(name: str) -> dict[str, Any] | None:
    try:
        record = json.loads((settings.run_dir() / name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
