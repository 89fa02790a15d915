"""Turning supervisor's process facts and a log tail into one line a person can act on.

"comfyui exited with code 1 three times: ModuleNotFoundError: No module named 'torchsde'"
says more than "not ready": what supervisord saw (state, exit code, spawn error), how often,
and the last meaningful line ComfyUI printed, which for a crash is the exception line of
its traceback.
"""

from __future__ import annotations

import re

MAX_LINE_CHARS = 300
TAIL_BYTES = 4096

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


_EXIT_LINE = re.compile(r"exited: (?P<name>\S+) \((?P<how>exit status (?P<code>-?\d+)|terminated by (?P<sig>\w+))")


def last_exit(supervisord_log: str, program: str) -> str | None:
    """How `program` last exited, from supervisord's own log ("exited: comfyui (exit status 1; ...)").

    supervisord forgets the exit code of a process that exited before `startsecs` (it reports
    0), which is exactly the crash-during-start-up case; its log keeps it.
    """
    found = None
    for match in _EXIT_LINE.finditer(supervisord_log):
        if match.group("name") == program:
            found = match
    if found is None:
        return None
    if found.group("code") is not None:
        return f"exited with code {found.group('code')}"
    return f"was killed by {found.group('sig')}"


def process_reason(
    program: str,
    statename: str,
    exitstatus: int,
    spawnerr: str,
    exits: int,
    log_line: str | None,
    exit_text: str | None = None,
) -> str:
    """Why a supervised program is not running, e.g. for comfyui in BACKOFF or FATAL.

    `exit_text` ("exited with code 1", from `last_exit`) wins over supervisord's exitstatus.
    """
    too_quick = spawnerr.startswith("Exited too quickly")
    if too_quick:
        spawnerr = ""  # supervisord's note for an exit before startsecs: an exit, not a spawn error
    if spawnerr:
        text = f"{program} could not be started ({statename}): {spawnerr}"
    elif statename in ("BACKOFF", "EXITED", "FATAL"):
        if exit_text:
            text = f"{program} {exit_text}"
        elif too_quick:
            text = f"{program} exited during start-up"
        elif exitstatus == -1:  # supervisord's value for "ended by a signal"
            text = f"{program} was killed by a signal"
        else:
            text = f"{program} exited with code {exitstatus}"
        if exits > 1:
            text += f" {times(exits)}"
        if statename == "FATAL":
            text += " and supervisord gave up (FATAL)"
        elif statename == "BACKOFF":
            text += ", restarting"
    else:
        text = f"{program} is {statename}"
    if log_line:
        text += f": {log_line}"
    return text
