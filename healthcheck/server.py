"""The sidecar's HTTP API: /livez, /readyz[?wait=S], /ping, /status, /metrics (docs/design.md), GET and HEAD.

It may listen on a public address (RunPod), so no client can tie it up:

- One asyncio event loop serves every connection: an idle or half-sent connection costs a
  socket, never a thread. /metrics is rendered on a pool of METRICS_WORKERS threads, so the
  loop stays free while the handler's files are read; everything else answers on the loop
  from the latest snapshot, without waiting on ComfyUI.
- A request must arrive whole within `client_timeout_s` of the connection opening (or of the
  previous answer on a kept-alive connection); otherwise the connection is closed.
- At most `max_connections` are open. One more closes the connection that has waited longest
  for its request (then the oldest long-poll), so a flood of idle connections cannot lock out
  a health check: /ping from a new client is always answered.
- `/readyz?wait=S` waits on the loop, is woken by the probe loop the moment the readiness
  state changes, and ends as soon as its client goes away (the socket reports end of file).

Standard library only: a few endpoints, few clients, and a memory budget of tens of MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import CollectorRegistry

from .snapshot import Snapshot, SnapshotStore
from .state import State

log = logging.getLogger(__name__)

MAX_WAIT_S = 600.0
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; more is refused with 431
METRICS_WORKERS = 2
BACKLOG = 128
LIMIT_WARNING_EVERY_S = 60.0
READ_ONLY = frozenset({"POST", "PUT", "DELETE", "PATCH"})
ALLOW = "GET, HEAD"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


@dataclass
class ConnectionStats:
    """What the server did to clients, for /metrics."""

    open: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"timeout": 0, "evicted": 0, "refused": 0})


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    keep_alive: bool
    has_body: bool


@dataclass(frozen=True)
class Reply:
    status: HTTPStatus
    body: bytes = b""
    content_type: str | None = JSON
    headers: tuple[tuple[str, str], ...] = ()


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(eq=False)
class _Connection:
    task: asyncio.Task
    reader: asyncio.StreamReader
    waiting_since: float = field(default_factory=time.monotonic)  # for its request, or in its long-poll
    long_poll: bool = False
    busy: bool = False  # a request is being answered
    spoiled: bool = False  # bytes of a later request were consumed: close after this answer


def json_reply(status: HTTPStatus, body: dict, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, json.dumps(body).encode(), JSON, headers)


def parse_head(head: bytes) -> Request:
    """The request line and headers; raises BadRequest for what HTTP/1.x does not allow."""
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper():
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad request line {lines[0][:100]!r}")
    method, target, version = parts
    if not version.startswith("HTTP/") or version[5:] not in ("1.0", "1.1"):
        if version[5:6].isdigit() and version.startswith("HTTP/"):
            raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"{version} is not supported")
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad HTTP version {version[:20]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
        headers[name.lower()] = value.strip()
    url = urlsplit(target)
    if not url.path.startswith("/"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad request target {target[:100]!r}")
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    return Request(method, url.path.rstrip("/") or "/", parse_qs(url.query), keep_alive, has_body)


class SidecarServer:
    """The HTTP server; `serve_forever` runs it in the calling thread until `shutdown`."""

    def __init__(
        self,
        address: tuple[str, int],
        store: SnapshotStore,
        registry: CollectorRegistry,
        stale_after_s: float,
        *,
        client_timeout_s: float = 10.0,
        max_connections: int = 256,
        stats: ConnectionStats | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.registry = registry
        self.stale_after_s = stale_after_s
        self.client_timeout_s = client_timeout_s
        self.max_connections = max_connections
        self.monotonic = monotonic
        self.stats = stats or ConnectionStats()
        self.socket = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self._connections: set[_Connection] = set()
        self._routes: dict[str, Callable[[Request, _Connection], Awaitable[Reply | None]]] = {
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/ping": self._ping,
            "/status": self._status,
            "/metrics": self._metrics,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._stop_requested = threading.Event()
        self._done = threading.Event()
        self._state_changed = asyncio.Event()
        self._pool = ThreadPoolExecutor(METRICS_WORKERS, thread_name_prefix="metrics")
        self._limit_warned_at = -LIMIT_WARNING_EVERY_S
        store.on_state_change(self._announce_state_change)

    # -- lifecycle ---------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until `shutdown()` (`poll_interval` is accepted for socketserver's signature)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            if not self._stop_requested.is_set():
                loop.run_until_complete(self._serve())
        finally:
            loop.close()
            self._done.set()

    def shutdown(self) -> None:
        """Stop serving and wait until `serve_forever` has returned (call it from another thread)."""
        self._stop_requested.set()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._stop.set)
        self._done.wait()

    def server_close(self) -> None:
        self.socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._accept, sock=self.socket, limit=MAX_HEAD_BYTES, backlog=BACKLOG)
        await self._stop.wait()
        server.close()
        tasks = [connection.task for connection in self._connections]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _announce_state_change(self) -> None:
        """Called by the probe loop's thread: wake every long-poll on the event loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_long_polls)

    def _wake_long_polls(self) -> None:
        event, self._state_changed = self._state_changed, asyncio.Event()
        event.set()

    # -- connections -------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if not self._admit():
            self.stats.dropped["refused"] += 1
            writer.transport.abort()
            return
        connection = _Connection(task, reader)
        self._connections.add(connection)
        self.stats.open = len(self._connections)
        try:
            await self._converse(connection, writer)
            writer.close()  # after the last answer has left
            await asyncio.wait_for(writer.wait_closed(), self.client_timeout_s)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or would not read its answer
        except asyncio.CancelledError:
            # Evicted, or the server stops: the connection just ends. A handler task that ends
            # cancelled is logged as an error by Python 3.11's asyncio (its done-callback asks the
            # task for its exception), which would put a traceback in every stop's log.
            pass
        finally:
            self._connections.discard(connection)
            self.stats.open = len(self._connections)
            writer.transport.abort()

    def _admit(self) -> bool:
        """Room for one more connection: closes the one idle longest when at the limit."""
        if len(self._connections) < self.max_connections:
            return True
        now = time.monotonic()
        if now - self._limit_warned_at >= LIMIT_WARNING_EVERY_S:
            self._limit_warned_at = now
            log.warning(
                "%d connections open (SIDECAR_MAX_CONNECTIONS): closing the ones idle longest for new clients",
                len(self._connections),
            )
        idle = [c for c in self._connections if not c.busy and not c.long_poll]
        victims = idle or [c for c in self._connections if c.long_poll]
        if not victims:
            return False
        victim = min(victims, key=lambda c: c.waiting_since)
        self._connections.discard(victim)  # counted out now; its task ends when it next runs
        victim.task.cancel()
        self.stats.dropped["evicted"] += 1
        return True

    async def _converse(self, connection: _Connection, writer: asyncio.StreamWriter) -> None:
        while True:
            connection.waiting_since = time.monotonic()
            try:
                head = await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), self.client_timeout_s)
            except TimeoutError:
                self.stats.dropped["timeout"] += 1
                return
            except asyncio.LimitOverrunError:
                await self._send(
                    writer, "GET", json_reply(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, _error("")), False
                )
                return
            head = head.lstrip(b"\r\n")
            if not head:
                continue
            connection.busy = True
            try:
                request = parse_head(head)
            except BadRequest as error:
                await self._send(writer, "GET", json_reply(error.status, _error(str(error))), False)
                return
            try:
                reply = await self._answer(request, connection)
            except Exception:  # a bug: answer 500 and say so, never leave the client hanging
                log.exception("error answering %s %s", request.method, request.path)
                reply = json_reply(HTTPStatus.INTERNAL_SERVER_ERROR, _error("internal error"))
            if reply is None:
                return  # a long-poll whose client went away
            keep_alive = request.keep_alive and not request.has_body and not connection.spoiled
            keep_alive = keep_alive and request.method in ("GET", "HEAD")
            await self._send(writer, request.method, reply, keep_alive)
            if not keep_alive:
                return
            connection.busy = False

    async def _answer(self, request: Request, connection: _Connection) -> Reply | None:
        route = self._routes.get(request.path)
        if request.method in ("GET", "HEAD"):
            if route is None:
                return json_reply(HTTPStatus.NOT_FOUND, _error(f"no such endpoint {request.path}"))
            return await route(request, connection)
        if request.method in READ_ONLY and route is not None:
            # Every endpoint is read-only: nothing here changes the worker's state.
            body = _error("read-only endpoint: only GET and HEAD are allowed")
            return json_reply(HTTPStatus.METHOD_NOT_ALLOWED, body, (("Allow", ALLOW),))
        if request.method in READ_ONLY:
            return json_reply(HTTPStatus.NOT_FOUND, _error(f"no such endpoint {request.path}"))
        return json_reply(
            HTTPStatus.NOT_IMPLEMENTED, _error(f"unsupported method {request.method}"), (("Allow", ALLOW),)
        )

    async def _send(self, writer: asyncio.StreamWriter, method: str, reply: Reply, keep_alive: bool) -> None:
        """Write the reply in one piece (HEAD: the same headers, no body) and wait until it is taken."""
        status = reply.status
        headers = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            "Server: comfy-worker-sidecar",
            f"Date: {formatdate(usegmt=True)}",
            "Cache-Control: no-store",
            "Connection: " + ("keep-alive" if keep_alive else "close"),
        ]
        if reply.content_type:
            headers.append(f"Content-Type: {reply.content_type}")
        if status is not HTTPStatus.NO_CONTENT:
            headers.append(f"Content-Length: {len(reply.body)}")
        headers += [f"{name}: {value}" for name, value in reply.headers]
        body = b"" if method == "HEAD" or status is HTTPStatus.NO_CONTENT else reply.body
        writer.write("\r\n".join(headers).encode("latin-1") + b"\r\n\r\n" + body)
        await asyncio.wait_for(writer.drain(), self.client_timeout_s)

    # -- endpoints ---------------------------------------------------------------------

    async def _livez(self, _request: Request, _connection: _Connection) -> Reply:
        age = self.monotonic() - self.store.current.tick_at
        alive = age <= self.stale_after_s
        return json_reply(
            HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE, {"alive": alive, "loop_age_s": age}
        )

    async def _readyz(self, request: Request, connection: _Connection) -> Reply | None:
        snap: Snapshot | None = self.store.current
        if "wait" in request.query:
            try:
                wait_s = float(request.query["wait"][-1])
            except ValueError:
                return json_reply(HTTPStatus.BAD_REQUEST, _error("wait must be a number of seconds"))
            if wait_s > 0:
                snap = await self._wait_ready(min(wait_s, MAX_WAIT_S), connection)
        if snap is None:
            return None
        return json_reply(HTTPStatus.OK if snap.ready else HTTPStatus.SERVICE_UNAVAILABLE, snap.readiness().to_body())

    async def _wait_ready(self, wait_s: float, connection: _Connection) -> Snapshot | None:
        """The snapshot once ready or failed (final), or at the timeout; None if the client left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        connection.long_poll = True
        connection.waiting_since = time.monotonic()
        gone = asyncio.ensure_future(connection.reader.read(1))
        try:
            while True:
                snap = self.store.current
                left = deadline - loop.time()
                if snap.ready or snap.state is State.FAILED or left <= 0:
                    return snap
                changed = asyncio.ensure_future(self._state_changed.wait())
                try:
                    done, _ = await asyncio.wait({gone, changed}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                finally:  # cancelled too when the connection is: no task is left pending at the loop's end
                    changed.cancel()
                if gone in done:
                    if not gone.exception() and gone.result():
                        # More bytes while waiting (a pipelined request): answer this one, then close.
                        connection.spoiled = True
                        gone = loop.create_future()
                        continue
                    return None
        finally:
            gone.cancel()
            connection.long_poll = False

    async def _ping(self, _request: Request, _connection: _Connection) -> Reply:
        """RunPod's load-balancer semantics: 200 ready, 204 still initialising, 503 unhealthy."""
        state = self.store.current.state
        if state is State.READY:
            return Reply(HTTPStatus.OK, b"OK", TEXT)
        if state is State.STARTING:
            return Reply(HTTPStatus.NO_CONTENT, b"", None)
        return Reply(HTTPStatus.SERVICE_UNAVAILABLE, str(state).encode(), TEXT)

    async def _status(self, _request: Request, _connection: _Connection) -> Reply:
        """The latest snapshot's figures for `comfy-worker status` (the state /metrics renders)."""
        snap = self.store.current
        return json_reply(HTTPStatus.OK, snap.status(self.monotonic() - snap.tick_at).to_body())

    async def _metrics(self, _request: Request, _connection: _Connection) -> Reply:
        # The classic 0.0.4 text format: every Prometheus version parses it, and all our names
        # are legacy-valid, so prometheus_client's 1.0.0 label would add nothing.
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._pool, generate_latest, self.registry)
        return Reply(HTTPStatus.OK, body, CONTENT_TYPE_PLAIN_0_0_4)


def _error(message: str) -> dict:
    return {"error": message or "request headers too large"}
