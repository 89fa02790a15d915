"""The lines one process wrote, out of a log that every life of its program shares.

supervisord appends each process of a program to the same log file (and in a checkout the
file outlives the stack), with nothing that says which process wrote a line. Quoting a line
from an earlier life as the cause of today's crash is worse than quoting nothing, so:

- ComfyUI's log is cut at its launch lines. services/comfyui prints one as each process
  starts, then execs ComfyUI in the same process:

      starting ComfyUI from /runpod-volume/ComfyUI with .../python: main.py --listen 127.0.0.1 ... (pid 41)

  The lines of the newest life are those from the last launch line on, and they belong to
  pid P only if that line names P.
- The worker's own programs (handler, sidecar) stamp every line with the time; a life's
  lines are those stamped at or after its spawn.

Logs are read from their files (supervisord names them in getProcessInfo): its RPC decodes
bytes strictly, and a read that starts inside a multi-byte character would fail there.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 64 * 1024
WINDOW_BYTES = 1024 * 1024  # how far back to look for a launch line

LAUNCH_LINE = re.compile(r"^starting ComfyUI\b.*\(pid (?P<pid>\d+)\)[ \t]*$", re.MULTILINE)
_STAMP = re.compile(r"^(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}) ")


@dataclass(frozen=True)
class LifeLog:
    pid: int
    text: str
    whole: bool  # False when the life began before the part of the log that was read


def read_end(path: Path, max_bytes: int) -> tuple[str, int]:
    """(the last `max_bytes` of a log, decoded, from a line start; the offset it starts at)."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            start = max(0, size - max_bytes)
            log.seek(max(0, start - 1))
            data = log.read()
    except OSError:
        return "", 0
    if start > 0:
        # data begins one byte early: if that byte ends a line, the window starts on a line.
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
        start = size - len(data)
    return data.decode("utf-8", "replace"), start


def comfyui_life(path: Path, pid: int, running: bool) -> LifeLog | None:
    """The lines ComfyUI's process `pid` has written, from its launch line on; None when unknown.

    `running`: supervisord reports the process RUNNING, so it is well past its launch line;
    when no launch line is found within WINDOW_BYTES, the whole window is then its own.
    """
    window = CHUNK_BYTES
    while True:
        text, start = read_end(path, window)
        launches = list(LAUNCH_LINE.finditer(text))
        if launches:
            last = launches[-1]
            return LifeLog(pid, text[last.start() :], True) if int(last.group("pid")) == pid else None
        if start == 0 or window >= WINDOW_BYTES:
            return LifeLog(pid, text, False) if running and start > 0 else None
        window *= 4


def stamped_since(text: str, since: float) -> str:
    """The lines of a time-stamped log written at or after `since` (Unix time).

    Lines without a stamp (a traceback's) belong with the stamped line above them.
    """
    kept: list[str] = []
    keep = False
    for line in text.splitlines():
        stamp = _STAMP.match(line)
        if stamp:
            at = time.mktime(time.strptime(stamp.group("when"), "%Y-%m-%d %H:%M:%S")) + int(stamp.group("ms")) / 1000
            keep = at >= since
        if keep:
            kept.append(line)
    return "\n".join(kept)
