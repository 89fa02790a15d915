"""Work that must never delay the start: it runs beside it, in a detached process.

The launcher execs ComfyUI in its own process (supervisord signals ComfyUI itself), so such work
runs in a detached grandchild: the launcher waits only for the short-lived child, init reaps
the grandchild, and ComfyUI (which never reaps children) is left with none. The entrypoint's
`launcher prepare` uses it too (the volume report), so the grandchild writes nothing to the
caller's stderr: the entrypoint reads that to its end.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable


def detached(label: str, work: Callable[[], str]) -> None:
    """Run `work()` niced in a detached process; what it returns (or its OSError) goes to the log as `label: ...`."""

    def labelled() -> str:
        try:
            said = work()
        except OSError as error:
            said = f"stopped: {error}"
        return f"{label}: {said}"

    in_background(labelled)


def in_background(work: Callable[[], str]) -> None:
    """Run `work()` niced in a detached process; the text it returns goes to stdout in one write."""
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    try:
        if os.fork() == 0:
            os.dup2(1, 2)
            os.nice(10)
            for chunk in whole_lines(f"{work()}\n".encode()):
                os.write(1, chunk)
    finally:
        os._exit(0)


def whole_lines(text: bytes) -> list[bytes]:
    """`text` in writes of whole lines of at most PIPE_BUF bytes where it can: the log is a pipe other
    programs write to at the same time, and only a write that small is never split by theirs."""
    chunks: list[bytes] = []
    for line in text.splitlines(keepends=True):
        if chunks and len(chunks[-1]) + len(line) <= select.PIPE_BUF:
            chunks[-1] += line
        else:
            chunks.append(line)
    return chunks
