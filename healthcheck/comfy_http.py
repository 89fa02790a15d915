"""A lean HTTP GET client for probing ComfyUI, on one kept-alive loopback connection.

The shared `worker_common.comfy_client.ComfyClient` is built on requests, which with urllib3,
charset_normalizer and idna costs about 10 MB of RSS: a quarter of the sidecar's 40 MB
budget for three GET endpoints. The probe loop uses this instead; the warm-up, which
queues a prompt once, still uses ComfyClient (imported only when a warm-up is configured).
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

# Errors that mean a kept-alive connection went stale (the server closed it while idle):
# the request is retried once on a fresh connection before it counts as a failure.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class ProbeError(Exception):
    """ComfyUI did not give a 2xx answer; the message is short ("connection refused")."""


class ComfyHTTP:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def get(self, path: str, timeout_s: float) -> bytes:
        """The body of a 2xx answer to `GET path`; raises ProbeError otherwise."""
        reused = self._connection is not None
        try:
            return self._get(path, timeout_s)
        except _STALE:
            self.close()
            if not reused:
                raise ProbeError("connection reset") from None
        except ProbeError:
            raise
        except Exception as error:
            self.close()
            raise ProbeError(_describe(error)) from None
        try:
            return self._get(path, timeout_s)
        except ProbeError:
            raise
        except Exception as error:
            self.close()
            raise ProbeError(_describe(error)) from None

    def get_json(self, path: str, timeout_s: float) -> Any:
        body = self.get(path, timeout_s)
        try:
            return json.loads(body)
        except ValueError:
            raise ProbeError("answered with something that is not JSON") from None

    def _get(self, path: str, timeout_s: float) -> bytes:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        connection = self._connection
        connection.timeout = timeout_s
        if connection.sock is not None:
            connection.sock.settimeout(timeout_s)
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
        if response.will_close:
            self.close()
        if not 200 <= response.status < 300:
            raise ProbeError(f"answered HTTP {response.status}")
        return body


def _describe(error: Exception) -> str:
    if isinstance(error, socket.timeout | TimeoutError):
        return "no answer in time"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, _STALE):
        return "connection reset"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return type(error).__name__
