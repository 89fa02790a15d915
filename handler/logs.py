"""One log format for every line the handler process prints.

Left alone, the handler's output has three formats: its own (the standard `logging` module),
the runpod SDK's (`RunPodLogger` prints `INFO   | message` itself, and `serverless.start`
prints a version banner) and uvicorn's (the local API configures its own handlers,
`INFO:     message`). Here the SDK's logger and uvicorn's loggers are routed into `logging`,
and bare prints become log lines, so each line reads
`2026-12-01 21:15:55,027 INFO handler.worker: job ... started`.

The SDK keeps deciding what it logs (RUNPOD_LOG_LEVEL, else RUNPOD_DEBUG_LEVEL, as in
runpod's rp_logger.py); only how it prints changes. Its per-job "Started." and "Finished."
repeat the handler's own job lines and go to DEBUG.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SDK_LOGGER = "runpod"
# rp_logger's level names, in its order, and what each is in `logging`.
_SDK_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING}
_SDK_LEVELS |= {"ERROR": logging.ERROR, "TIP": logging.INFO}
_SDK_JOB_LINES = {"Started.", "Finished."}
# The SDK prints up to 4096 characters of a message (a test job's whole result, base64 included).
_MAX_MESSAGE = 4096


def configure() -> None:
    """The handler's format for the root logger, the runpod SDK and uvicorn (call once, first)."""
    # force: importing runpod already configured the root logger with its own format.
    logging.basicConfig(level=logging.INFO, format=FORMAT, stream=sys.stdout, force=True)
    _route_runpod_logger()
    _route_uvicorn()


def _route_runpod_logger() -> None:
    from . import runpod_sdk

    order = runpod_sdk.sdk_log_levels()

    def log(self: Any, message: Any, message_level: str = "INFO", job_id: str | None = None) -> None:
        text = _shorten(str(message))
        if text in _SDK_JOB_LINES:
            message_level = "DEBUG"
        # rp_logger's own rule: below the SDK's level is dropped, TIP (not a level) always shown.
        if self.level == "NOTSET" or (message_level in order and order.index(message_level) < order.index(self.level)):
            return
        level = _SDK_LEVELS.get(message_level, logging.INFO)
        if job_id:
            logging.getLogger(SDK_LOGGER).log(level, "job %s: %s", job_id, text)
        else:
            logging.getLogger(SDK_LOGGER).log(level, "%s", text)

    runpod_sdk.route_logger(log)
    logging.getLogger(SDK_LOGGER).setLevel(logging.DEBUG)  # what passes the SDK's own rule is printed


def _shorten(text: str) -> str:
    if len(text) <= _MAX_MESSAGE:
        return text
    half = _MAX_MESSAGE // 2
    return f"{text[:half]} ...{len(text) - _MAX_MESSAGE} characters left out... {text[-half:]}"


def _route_uvicorn() -> None:
    """uvicorn's loggers keep no handlers of their own and propagate to the root's."""
    from uvicorn import config

    config.LOGGING_CONFIG.clear()
    config.LOGGING_CONFIG.update(version=1, disable_existing_loggers=False)

    def plain_name(record: logging.LogRecord) -> bool:
        record.name = "uvicorn"  # "uvicorn.error" carries every uvicorn line, errors or not
        return True

    logging.getLogger("uvicorn.error").addFilter(plain_name)


class PrintsToLog(io.TextIOBase):
    """A stdout for code that prints (the SDK's banner): each whole line becomes an INFO record."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(SDK_LOGGER)
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if line.strip():
                self._logger.info(line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._partial.strip():
            self._logger.info(self._partial.rstrip())
        self._partial = ""
