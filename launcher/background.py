"""Work the launcher starts beside ComfyUI's start: it must never delay it.

The launcher execs ComfyUI in its own process (supervisord signals ComfyUI itself), so such work
runs in a detached grandchild: the launcher waits only for the short-lived child, init reaps
the grandchild, and ComfyUI (which never reaps children) is left with none.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def detached(label: str, work: Callable[[], str]) -> None:
    """Run `work()` niced in a detached process; what it returns (or its OSError) goes to the log as `label: ...`."""
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    try:
        if os.fork() == 0:
            os.nice(10)
            try:
                said = work()
            except OSError as error:
                said = f"stopped: {error}"
            # One write: two detached helpers ending together must not interleave their lines.
            os.write(1, f"{label}: {said}\n".encode())
    finally:
        os._exit(0)
