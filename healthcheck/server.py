"""The sidecar's HTTP API: /livez, /readyz[?wait=S], /ping, /metrics (docs/design.md).

Standard library only (ThreadingHTTPServer): a few endpoints, a handful of clients, and
a memory budget of tens of MB. Every handler reads the latest snapshot and returns; the
only one that waits is /readyz?wait=S, which sleeps on the store's condition and is woken
by the probe loop the moment readiness is reached.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import CollectorRegistry

from .snapshot import SnapshotStore
from .state import State

log = logging.getLogger(__name__)

MAX_WAIT_S = 600.0


class SidecarServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        store: SnapshotStore,
        registry: CollectorRegistry,
        stale_after_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.store = store
        self.registry = registry
        self.stale_after_s = stale_after_s
        self.monotonic = monotonic
        super().__init__(address, SidecarRequestHandler)

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        # A client hanging up mid-reply (a cancelled long-poll) is normal; anything else is a bug.
        import sys

        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return
        log.exception("error answering %s", client_address)


class SidecarRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write (handle_one_request flushes after each reply), and
    # without Nagle: on a kept-alive connection a reply split in two writes can otherwise wait
    # for the client's delayed ACK (~40 ms).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: SidecarServer
    server_version = "comfy-worker-sidecar"
    sys_version = ""

    def _routes(self) -> dict:
        return {"/livez": self._livez, "/readyz": self._readyz, "/ping": self._ping, "/metrics": self._metrics}

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        route = self._routes().get(url.path.rstrip("/") or "/")
        if route is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {url.path}"})
            return
        route(parse_qs(url.query))

    def _refuse_change(self) -> None:
        """Every endpoint is read-only: nothing here changes the worker's state."""
        self.close_connection = True  # the request body stays unread
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path not in self._routes():
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {path}"})
            return
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        body = b'{"error": "read-only endpoint: only GET is allowed"}'
        self.send_header("Allow", "GET")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_change

    def _livez(self, _query: dict) -> None:
        age = self.server.monotonic() - self.server.store.current.tick_at
        alive = age <= self.server.stale_after_s
        self._send_json(HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE, {"alive": alive, "loop_age_s": age})

    def _readyz(self, query: dict) -> None:
        snap = self.server.store.current
        if "wait" in query:
            try:
                wait_s = float(query["wait"][-1])
            except ValueError:
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": "wait must be a number of seconds"})
                return
            if wait_s > 0 and not snap.ready:
                snap = self.server.store.wait_ready(min(wait_s, MAX_WAIT_S))
        self._send_json(HTTPStatus.OK if snap.ready else HTTPStatus.SERVICE_UNAVAILABLE, snap.readiness().to_body())

    def _ping(self, _query: dict) -> None:
        """RunPod's load-balancer semantics: 200 ready, 204 still initialising, 503 unhealthy."""
        state = self.server.store.current.state
        if state is State.READY:
            self._send(HTTPStatus.OK, b"OK", "text/plain; charset=utf-8")
        elif state is State.STARTING:
            self._send(HTTPStatus.NO_CONTENT, b"", None)
        else:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, str(state).encode(), "text/plain; charset=utf-8")

    def _metrics(self, _query: dict) -> None:
        # The classic 0.0.4 text format: every Prometheus version parses it, and all our names
        # are legacy-valid, so prometheus_client's 1.0.0 label would add nothing.
        self._send(HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_PLAIN_0_0_4)

    # -- plumbing ------------------------------------------------------------------------

    def _send_json(self, status: HTTPStatus, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if status != HTTPStatus.NO_CONTENT:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body and status != HTTPStatus.NO_CONTENT:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Prometheus scrapes and health checks every second would drown the log.
        log.debug("%s %s", self.address_string(), format % args)
