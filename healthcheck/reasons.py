"""Phrasing what went wrong: a program's end for the sidecar's reason, a log's error line for `status`.

"comfyui exited with code 1 three times during start-up and supervisord gave up (FATAL)"
says more than "not ready": what supervisord saw (spawn error, signal or exit code) and how
often. The sidecar serves its reason on a public port, so it carries program states and exit
causes only, never log text (ComfyUI's log can hold a job's prompt): the log's words, such as
the exception line of a crash's traceback (`last_error_line`), are for `status` and the logs.
"""

from __future__ import annotations

import re

from .lives import Ending

MAX_LINE_CHARS = 300

_TRACEBACK_HEADER = "Traceback (most recent call last):"
# Lines that carry no meaning on their own: caret/tilde markers under a traceback frame,
# separators, and the chained-exception glue sentences.
_NOISE = re.compile(
    r"^([\^~\s]+|[-=_*#]{3,}|During handling of the above exception.*|"
    r"The above exception was the direct cause.*)$"
)
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning|Fault)\b.*")
_ERRORISH = re.compile(r"(?i)\b(error|exception|traceback|fatal|failed|failure|killed|segmentation fault)\b")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_TIMES = {1: "once", 2: "twice", 3: "three times", 4: "four times", 5: "five times"}


def times(count: int) -> str:
    return _TIMES.get(count, f"{count} times")


def _clean_lines(tail: str, overflow: bool) -> list[str]:
    lines = _ANSI.sub("", tail).replace("\r", "\n").split("\n")
    if overflow and lines:
        lines = lines[1:]  # the tail starts mid-line
    return [line.rstrip() for line in lines if line.strip()]


def _shorten(line: str) -> str:
    line = line.strip()
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"


def last_meaningful_line(tail: str, overflow: bool = False) -> str | None:
    """The line that best explains how a log ends.

    If the tail holds a traceback, its exception line (the last unindented line after the
    header); else the last line that is not blank, indented traceback context, or noise.
    """
    lines = _clean_lines(tail, overflow)
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].strip() == _TRACEBACK_HEADER:
            for line in lines[index + 1 :]:
                if not line[:1].isspace() and not _NOISE.match(line) and line != _TRACEBACK_HEADER:
                    return _shorten(line)
            break
    for line in reversed(lines):
        if line[:1].isspace() or _NOISE.match(line) or line.strip() == _TRACEBACK_HEADER:
            continue
        return _shorten(line)
    return None


def last_error_line(tail: str, overflow: bool = False) -> str | None:
    """The last line that looks like an error (for `status`), or None when the log is clean."""
    lines = _clean_lines(tail, overflow)
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if line.strip() == _TRACEBACK_HEADER:
            return last_meaningful_line("\n".join(lines[index:]))
        if not line[:1].isspace() and (_EXCEPTION.match(line.strip()) or _ERRORISH.search(line)):
            return _shorten(line)
    return None


def spawn_error(spawnerr: str) -> str:
    """supervisord's `spawnerr` when it is a real failure to start the program, else "".

    supervisord also puts two notes about exits there: "Exited too quickly" (an exit before
    `startsecs`) and "Bad exit code N" (an unexpected exit, -1 for a signal).
    """
    return "" if spawnerr.startswith(("Exited too quickly", "Bad exit code")) else spawnerr


def down_reason(
    program: str,
    statename: str,
    spawnerr: str,
    exits: int,
    ending: Ending | None,
    exitstatus: int = 0,
    detail: str | None = None,
    pid: int | None = None,
) -> str:
    """Why a supervised program is not running: a spawn failure, or how it last ended.

    `ending` (from supervisord's log, see lives.py) names the signal or exit code; without
    it supervisord's `exitstatus` is all there is. `detail` explains the exit (the launch
    check's message for exit code 78); `pid` is the process that ended, named unless it is one of
    several. No log text: this is served on the sidecar's port.
    """
    error = spawn_error(spawnerr)
    if error:
        return f"{program} could not be started ({statename}): {error}"
    if statename not in ("BACKOFF", "EXITED", "FATAL"):
        return f"{program} is {statename}"
    who = f"{program} (pid {pid})" if pid and exits <= 1 else program  # a crash loop is not one process's
    if ending is not None:
        text = f"{who} {ending.describe()}"
    elif exitstatus == -1:
        text = f"{who} was killed by a signal"
    elif spawnerr.startswith("Exited too quickly"):
        text = f"{who} exited"  # supervisord reports no code for an exit before startsecs
    else:
        text = f"{who} exited with code {exitstatus}"
    if detail:
        text += f" ({detail})"
    if exits > 1:
        text += f" {times(exits)}"
    if spawnerr.startswith("Exited too quickly"):
        text += " during start-up"
    if statename == "FATAL":
        text += " and supervisord gave up (FATAL)"
    elif statename == "BACKOFF":
        text += ", restarting"
    return text
