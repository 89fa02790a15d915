"""ComfyUI-style logging: bare messages, one line each, flushed as they are written.

Real ComfyUI logs to stderr unless --log-stdout; the stand-in logs to stdout (line-buffered)
so a parent process reading stdout sees every line at once. Under supervisord (stderr
redirected into stdout) both look the same.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "standin"


def setup(level: str) -> logging.Logger:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    if hasattr(sys.stderr, "reconfigure"):
        sys.stderr.reconfigure(line_buffering=True)
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's own access log is off in ComfyUI (AppRunner(access_log=None)).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logging.getLogger(LOGGER_NAME)


log = logging.getLogger(LOGGER_NAME)
