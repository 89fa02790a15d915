"""ComfyUI-style logging: bare messages, flushed as they are written.

Real ComfyUI logs to stderr unless --log-stdout; the stand-in logs to stdout (line-buffered)
so a parent process reading stdout sees every line at once. Under supervisord (stderr
redirected into stdout) both look the same. ComfyUI's own messages sometimes start or end
with "\\n" ("\\nStopped server", "Starting server\\n", the empty line after the custom-node
import times); the stand-in writes those exactly as ComfyUI does, blank lines included.
"""

from __future__ import annotations

import logging
import sys

from .cli import DETAIL, level_number

LOGGER_NAME = "standin"
FORMAT = "%(message)s"


def setup(level: int, file_outputs: list[tuple[str, str]] | None = None) -> logging.Logger:
    """Console logging at `level`, plus 0.38.1's `--verbose LEVEL FILE` outputs."""
    logging.addLevelName(DETAIL, "DETAIL")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    if hasattr(sys.stderr, "reconfigure"):
        sys.stderr.reconfigure(line_buffering=True)
    root = logging.getLogger()
    root.handlers.clear()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(FORMAT))
    console.setLevel(level)
    root.addHandler(console)
    lowest = level
    for file_level, path in file_outputs or []:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.setLevel(level_number(file_level))
        root.addHandler(handler)
        lowest = min(lowest, level_number(file_level))
    root.setLevel(lowest)
    # aiohttp's own access log is off in ComfyUI (AppRunner(access_log=None)).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logging.getLogger(LOGGER_NAME)


log = logging.getLogger(LOGGER_NAME)

_startup_warnings: list[str] = []


def startup_warning(message: str) -> None:
    """app.logger.log_startup_warning: logged now, and again just before the server starts."""
    log.warning(message)
    _startup_warnings.append(message)


def print_startup_warnings() -> None:
    for message in _startup_warnings:
        log.warning(message)
    _startup_warnings.clear()
