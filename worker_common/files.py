"""Files other processes read while they are written: written whole, or not at all."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary name beside `path`, then rename it over `path`: a reader (another
    program, another worker on the volume) sees the old file or the new one, never a part. The
    temporary name is this process's and thread's own, so two writers never share one."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}-{threading.get_ident()}")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
