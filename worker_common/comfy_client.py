"""The one client for ComfyUI's HTTP and WebSocket API, used by the handler and the sidecar.

It speaks the protocol recorded in docs (see ComfyUI's server.py): JSON over HTTP on
loopback, and `/ws?clientId=` for execution events. It raises `ComfyUnavailable` when
ComfyUI does not answer (`ComfyRefused` when nothing reached it) and `ComfyHTTPError` for
any non-2xx reply: callers tell them apart by type; every `ComfyError` has
a short `reason` ("connection refused", "answered HTTP 404") for one-line reports.

The JSON calls go over kept-alive `http.client` connections, a small pool shared by the
threads that use one client (an idle connection serves one request at a time). The sidecar
probes through this client every 50 ms and has a 40 MB RSS budget: importing requests
(with urllib3, charset_normalizer, idna) would cost about 10 MB of it, so requests and
websocket-client are imported only by the calls that need them (`view`, `connect_websocket`),
which the sidecar never makes.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from worker_common.comfy_protocol import credential_auth
from worker_common.contract import COMFY_HOST, DEFAULT_COMFY_PORT

if TYPE_CHECKING:
    import requests
    import websocket

DEFAULT_TIMEOUT_S = 10.0
MAX_IDLE_CONNECTIONS = 4  # kept-alive connections a client keeps between requests
RETRY_STATUSES = frozenset({500, 502, 503, 504})  # what `get_retries` retries
RETRY_BACKOFF_S = 0.05

# Errors that mean a kept-alive connection went stale (the server closed it while idle):
# the request is sent once more on a fresh connection before it counts as a failure.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class ComfyError(Exception):
    """Base class for everything this client raises; `reason` is the cause in a few words."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class ComfyUnavailable(ComfyError):
    """ComfyUI did not answer: connection refused, reset, or timed out."""


class ComfyRefused(ComfyUnavailable):
    """Nothing reached ComfyUI: the connection was refused (it is down, or not listening yet)."""


class ComfyHTTPError(ComfyError):
    """ComfyUI answered with a non-2xx status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{method} {path} answered {status}: {body[:500]}", f"answered HTTP {status}")

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class ComfyClient:
    """HTTP and WebSocket access to one ComfyUI server; safe to share between threads."""

    def __init__(
        self,
        host: str = COMFY_HOST,
        port: int = DEFAULT_COMFY_PORT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        get_retries: int = 0,
    ):
        """`get_retries` > 0 retries GETs that ComfyUI answers with a 5xx (e.g. /history under load)."""
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.get_retries = get_retries
        self.base_url = f"http://{host}:{port}"
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    def close(self) -> None:
        """Close the idle connections (the client stays usable: it reconnects when asked again)."""
        with self._lock:
            idle, self._idle = self._idle, []
            session, self._session = self._session, None
        for connection in idle:
            connection.close()
        if session is not None:
            session.close()

    # -- plumbing ---------------------------------------------------------------

    def call(self, method: str, path: str, payload: Any = None, timeout_s: float | None = None) -> bytes:
        """The body of a 2xx answer to one request (`payload`, unless None, sent as JSON).

        Raises ComfyUnavailable or ComfyHTTPError instead of returning a failure. A GET
        answered with a 5xx is retried `get_retries` times.
        """
        body = None if payload is None else json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout_s = timeout_s or self.timeout_s
        retries = self.get_retries if method == "GET" else 0
        for attempt in range(retries + 1):
            status, answer = self._exchange(method, path, body, headers, timeout_s)
            if 200 <= status < 300:
                return answer
            if status not in RETRY_STATUSES or attempt == retries:
                break
            if attempt:
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
        raise ComfyHTTPError(method, path, status, answer.decode("utf-8", "replace"))

    def get_json(self, path: str, timeout_s: float | None = None) -> Any:
        return self._parse("GET", path, self.call("GET", path, timeout_s=timeout_s))

    def post_json(self, path: str, payload: Any, timeout_s: float | None = None) -> Any:
        """POST `payload` as JSON; the answer parsed as JSON, None when it is empty."""
        answer = self.call("POST", path, payload, timeout_s)
        return self._parse("POST", path, answer) if answer.strip() else None

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout_s: float
    ) -> tuple[int, bytes]:
        """(status, body) of one request; a stale kept-alive connection is retried once, fresh."""
        connection = self._take()
        reused = connection.sock is not None
        try:
            try:
                return self._send(connection, method, path, body, headers, timeout_s)
            except _STALE:
                connection.close()
                if not reused:
                    raise
            return self._send(connection, method, path, body, headers, timeout_s)
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            reason = _describe(error)
            raise _unavailable(error)(
                f"ComfyUI at {self.base_url} did not answer {method} {path}: {reason}", reason
            ) from None

    def _send(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout_s: float,
    ) -> tuple[int, bytes]:
        connection.timeout = timeout_s
        if connection.sock is not None:
            connection.sock.settimeout(timeout_s)
        # A bytes body goes out in the same send() as the headers (no Nagle/delayed-ACK stall);
        # http.client sets TCP_NODELAY on the sockets it opens.
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        answer = response.read()
        if response.will_close:
            connection.close()
        else:
            self._give_back(connection)
        return response.status, answer

    def _take(self) -> http.client.HTTPConnection:
        """An idle kept-alive connection whose server has not closed it, else a new one."""
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not _dropped(connection):
                    return connection
                connection.close()
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()

    @staticmethod
    def _parse(method: str, path: str, answer: bytes) -> Any:
        try:
            return json.loads(answer)
        except ValueError:
            reason = "answered with something that is not JSON"
            raise ComfyError(f"{method} {path} {reason}: {answer[:200]!r}", reason) from None

    def _requests(self) -> requests.Session:
        """The requests session for streamed downloads (GET /view).

        Imported here, not at the top: the sidecar never streams and must not
        pay requests' ~10 MB of RSS.
        """
        import requests

        with self._lock:
            if self._session is None:
                self._session = requests.Session()
                if self.get_retries:
                    from requests.adapters import HTTPAdapter

                    self._session.mount(self.base_url, HTTPAdapter(max_retries=_status_retry(self.get_retries)))
            return self._session

    def _requests_call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        import requests

        try:
            response = self._requests().request(method, self.base_url + path, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as error:
            raise (ComfyRefused if _refused_requests(error) else ComfyUnavailable)(
                f"ComfyUI at {self.base_url} did not answer {method} {path}: {error}", _describe_requests(error)
            ) from error
        if response.status_code >= 300:
            raise ComfyHTTPError(method, path, response.status_code, response.text)
        return response

    # -- read-only endpoints ---------------------------------------------------

    def system_stats(self, timeout_s: float | None = None) -> dict:
        return self.get_json("/system_stats", timeout_s)

    def object_info(self, node_class: str | None = None, timeout_s: float | None = None) -> dict:
        path = "/object_info" if node_class is None else f"/object_info/{quote(node_class)}"
        return self.get_json(path, timeout_s)

    def queue(self, timeout_s: float | None = None) -> dict:
        return self.get_json("/queue", timeout_s)

    def history(self, prompt_id: str, timeout_s: float | None = None) -> dict:
        """The history entry of one prompt, or {} when ComfyUI does not know it (yet, or after a restart)."""
        return self.get_json(f"/history/{prompt_id}", timeout_s).get(prompt_id, {})

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> requests.Response:
        """GET /view as a stream: the caller reads `iter_content` and must close the response."""
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        return self._requests_call("GET", "/view", params=params, stream=True)

    # -- actions -----------------------------------------------------------------

    def queue_prompt(
        self,
        workflow: dict,
        client_id: str,
        prompt_id: str,
        extra_data: dict | None = None,
        timeout_s: float | None = None,
    ) -> dict:
        """POST /prompt. A rejected graph raises ComfyHTTPError with status 400 and ComfyUI's node_errors body."""
        payload: dict[str, Any] = {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            payload["extra_data"] = extra_data
        return self.post_json("/prompt", payload, timeout_s)

    def interrupt(self, prompt_id: str | None = None, timeout_s: float | None = None) -> None:
        self.call("POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {}, timeout_s)

    def delete_from_queue(self, prompt_ids: list[str], timeout_s: float | None = None) -> None:
        self.call("POST", "/queue", {"delete": prompt_ids}, timeout_s)

    def clear_queue(self) -> None:
        """Drop every pending prompt (the running one goes on: interrupt it)."""
        self.call("POST", "/queue", {"clear": True})

    def delete_history(self, prompt_ids: list[str], timeout_s: float | None = None) -> None:
        self.call("POST", "/history", {"delete": prompt_ids}, timeout_s)

    # -- the jobs API of newer releases (0.6.0+; cancel 0.26.0+), see comfy_protocol.Features --

    def job(self, prompt_id: str, timeout_s: float | None = None) -> dict | None:
        """GET /api/jobs/{id}: the job object, or None when ComfyUI does not know the prompt."""
        try:
            return self.get_json(f"/api/jobs/{quote(prompt_id)}", timeout_s)
        except ComfyHTTPError as error:
            if error.status == 404:
                return None
            raise

    def cancel_job(self, prompt_id: str, timeout_s: float | None = None) -> bool:
        """POST /api/jobs/{id}/cancel: interrupts it if running, dequeues it if pending; True if either."""
        answer = self.post_json(f"/api/jobs/{quote(prompt_id)}/cancel", {}, timeout_s)
        return bool(isinstance(answer, dict) and answer.get("cancelled"))

    # -- WebSocket ---------------------------------------------------------------

    def connect_websocket(
        self, client_id: str, credential_key: str | None = None, timeout_s: float | None = None
    ) -> websocket.WebSocket:
        """Open /ws for `client_id`; execution frames of prompts queued with this id arrive on it.

        `credential_key`, the key an earlier socket of this id was given (0.47.1), is presented
        first, so the new socket may replace one ComfyUI still holds open.
        """
        import websocket  # only the handler follows prompts; the sidecar does not load it

        url = f"ws://{self.host}:{self.port}/ws?clientId={client_id}"
        try:
            ws = websocket.create_connection(url, timeout=timeout_s or self.timeout_s, skip_utf8_validation=True)
            if credential_key:
                ws.send(credential_auth(credential_key))
        except (OSError, websocket.WebSocketException) as error:
            message = f"ComfyUI's WebSocket at {url} did not open: {error}"
            raise _unavailable(error)(message, _describe(error)) from error
        return ws


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """True when an idle connection's socket is readable: the server closed it (or sent junk)."""
    sock = connection.sock
    if sock is None:
        return False  # closed by us after a `Connection: close` answer; it reconnects when used
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _describe(error: BaseException) -> str:
    """A failure to answer in a few words, for /readyz reasons and log lines."""
    if isinstance(error, socket.timeout | TimeoutError):
        return "no answer in time"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, _STALE):
        return "connection reset"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return type(error).__name__


def _unavailable(error: BaseException) -> type[ComfyUnavailable]:
    """ComfyRefused for a refused connection, else ComfyUnavailable."""
    return ComfyRefused if isinstance(error, ConnectionRefusedError) else ComfyUnavailable


def _refused_requests(error: requests.RequestException) -> bool:
    """requests wraps the refusal (urllib3's NewConnectionError) and keeps only its words."""
    return "refused" in str(error).lower()


def _describe_requests(error: requests.RequestException) -> str:
    """`_describe` for the requests exceptions of uploads and streamed downloads."""
    import requests

    if isinstance(error, requests.Timeout):
        return "no answer in time"
    if _refused_requests(error):
        return "connection refused"
    return "connection failed" if isinstance(error, requests.ConnectionError) else type(error).__name__


def _status_retry(attempts: int) -> Any:
    """Retry GETs answered 5xx only: a refused connection means ComfyUI is down and must fail fast."""
    from urllib3.util.retry import Retry

    return Retry(
        total=attempts,
        connect=0,
        read=0,
        other=0,
        status=attempts,
        status_forcelist=tuple(sorted(RETRY_STATUSES)),
        allowed_methods=frozenset({"GET"}),
        backoff_factor=RETRY_BACKOFF_S,
        raise_on_status=False,
    )
