"""Fetch an input image given as an http(s) URL, within a size and a time limit."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from .errors import JobError, Reason

CHUNK_BYTES = 256 * 1024


def fetch(session: requests.Session, url: str, field: str, max_bytes: int, timeout_s: float) -> bytes:
    """The body of `url`; raises JobError(invalid_input) naming the field on any failure.

    `timeout_s` bounds the whole download, not just each read, so a server trickling bytes
    cannot hold the job.
    """
    shown = redact(url)
    deadline = time.monotonic() + timeout_s
    try:
        with session.get(url, stream=True, timeout=timeout_s) as response:
            if response.status_code != 200:
                raise _failed(field, f"downloading {shown} answered HTTP {response.status_code}")
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise _failed(field, f"{shown} is {declared} bytes; {_limit(max_bytes)}")
            return _read(response, field, shown, max_bytes, deadline, timeout_s)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        raise _failed(field, f"downloading {shown} failed: {type(error).__name__}") from None


def _read(
    response: requests.Response, field: str, shown: str, max_bytes: int, deadline: float, timeout_s: float
) -> bytes:
    """The body, read as it arrives (read1), so a server sending a byte at a time meets the deadline."""
    body = bytearray()
    while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
        body += chunk
        if len(body) > max_bytes:
            raise _failed(field, f"{shown} is larger than {max_bytes} bytes; {_limit(max_bytes)}")
        if time.monotonic() > deadline:
            raise _failed(field, f"downloading {shown} took longer than {timeout_s:g} s (IMAGE_DOWNLOAD_TIMEOUT_S)")
    return bytes(body)


def redact(url: str) -> str:
    """The URL without its query and fragment, which often hold signatures or tokens."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query


def _limit(max_bytes: int) -> str:
    return f"the limit is {max_bytes} bytes (IMAGE_DOWNLOAD_MAX_BYTES)"


def _failed(field: str, what: str) -> JobError:
    return JobError(Reason.INVALID_INPUT, f"Invalid input: {field}: {what}", {"field": field})
