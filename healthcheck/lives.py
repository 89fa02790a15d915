"""Each program's lives as supervisord's own log tells them: which pid, when, and how it ended.

supervisord's RPC forgets what a crash report needs: a process killed by a signal reports
exitstatus -1 ("Bad exit code -1" in spawnerr), one that exits before `startsecs` reports
nothing, and a dead process's pid is gone. Its log keeps all of it, a line per event:

    2025-11-27 18:00:00,001 INFO supervisord started with pid 7
    2025-11-27 18:00:00,101 INFO spawned: 'comfyui' with pid 41
    2025-11-27 18:00:06,200 WARN exited: comfyui (terminated by SIGKILL; not expected)
    2025-11-27 18:00:09,000 INFO stopped: comfyui (exit status 0)

The log file outlives supervisord in a checkout, so only the lines after the last
"supervisord started" line count: an earlier run's crashes are not this worker's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

# The kernel's OOM killer sends SIGKILL; so does `kill -9`. Said once, here.
SIGKILL_HINT = "SIGKILL: often the kernel's out-of-memory killer"
_SIGNAL_WORDS = {
    "SIGKILL": f"was killed ({SIGKILL_HINT})",
    "SIGSEGV": "crashed (SIGSEGV: a segmentation fault in native code, such as a custom node's extension)",
    "SIGABRT": "aborted (SIGABRT)",
    "SIGBUS": "crashed (SIGBUS)",
}

_LINE = re.compile(r"^(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}) \w+ (?P<event>.*)$", re.MULTILINE)
_STARTED = re.compile(r"^supervisord started with pid \d+")
_SPAWNED = re.compile(r"^spawned: '(?P<name>[^']+)' with pid (?P<pid>\d+)")
_ENDED = re.compile(
    r"^(?P<kind>exited|stopped): (?P<name>\S+) \((?:exit status (?P<code>-?\d+)|terminated by (?P<sig>[\w ]+?))"
    r"(?P<core> \(core dumped\))?(?:; (?P<expected>expected|not expected))?\)"
)


@dataclass(frozen=True)
class Ending:
    """How one process ended."""

    code: int | None  # exit code, or None when a signal ended it
    signal: str | None  # "SIGKILL"
    core_dumped: bool = False
    stopped: bool = False  # supervisord stopped it on request (stop, restart, shutdown)
    at: float = 0.0  # Unix time

    def describe(self) -> str:
        """ "exited with code 1", "was killed (SIGKILL: often the kernel's out-of-memory killer)" ..."""
        if self.stopped:
            return "was stopped"
        if self.signal is None:
            return f"exited with code {self.code}"
        words = _SIGNAL_WORDS.get(self.signal, f"was killed by {self.signal}")
        return f"{words}, core dumped" if self.core_dumped else words


@dataclass(frozen=True)
class Life:
    program: str
    pid: int
    spawned_at: float  # Unix time
    ending: Ending | None = None  # None while it runs (or before supervisord logged its end)


def _unix_time(when: str, ms: str) -> float:
    # supervisord writes local time, as does this process: mktime undoes it.
    return time.mktime(time.strptime(when, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000


def parse_lives(main_log: str) -> dict[str, list[Life]]:
    """program -> its lives in order, since supervisord last started (from the end of its log)."""
    lives: dict[str, list[Life]] = {}
    for line in _LINE.finditer(main_log):
        event = line.group("event")
        if _STARTED.match(event):
            lives = {}
        elif spawned := _SPAWNED.match(event):
            name, at = spawned.group("name"), _unix_time(line.group("when"), line.group("ms"))
            lives.setdefault(name, []).append(Life(name, int(spawned.group("pid")), at))
        elif ended := _ENDED.match(event):
            history = lives.get(ended.group("name"))
            if not history or history[-1].ending is not None:
                continue  # its spawn is before the part of the log that was read
            code = ended.group("code")
            ending = Ending(
                code=int(code) if code is not None else None,
                signal=ended.group("sig"),
                core_dumped=bool(ended.group("core")),
                stopped=ended.group("kind") == "stopped",
                at=_unix_time(line.group("when"), line.group("ms")),
            )
            last = history[-1]
            history[-1] = Life(last.program, last.pid, last.spawned_at, ending)
    return lives


def life_of(lives: dict[str, list[Life]], program: str, pid: int) -> Life | None:
    return next((life for life in reversed(lives.get(program, [])) if life.pid == pid), None)


def last_ended(lives: dict[str, list[Life]], program: str, since: float | None = None) -> Life | None:
    """The most recent life of `program` that ended unasked (not stopped), after `since` if given."""
    for life in reversed(lives.get(program, [])):
        if life.ending is None or life.ending.stopped:
            continue
        if since is not None and life.ending.at < since:
            return None
        return life
    return None
