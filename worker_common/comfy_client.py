"""The one client for ComfyUI's HTTP and WebSocket API, used by the handler and the sidecar.

It speaks the protocol recorded in docs (see ComfyUI's server.py): JSON over HTTP on
loopback, and `/ws?clientId=` for execution events. It keeps one pooled HTTP connection,
raises `ComfyUnavailable` when ComfyUI does not answer and `ComfyHTTPError` for any
non-2xx reply, and does nothing clever beyond that.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

import requests
import websocket
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

DEFAULT_TIMEOUT_S = 10.0


class ComfyError(Exception):
    """Base class for everything this client raises."""


class ComfyUnavailable(ComfyError):
    """ComfyUI did not answer: connection refused, reset, or timed out."""


class ComfyHTTPError(ComfyError):
    """ComfyUI answered with a non-2xx status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{method} {path} answered {status}: {body[:500]}")

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class ComfyClient:
    """HTTP and WebSocket access to one ComfyUI server."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8188,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        get_retries: int = 0,
    ):
        """`get_retries` > 0 retries GETs that ComfyUI answers with a 5xx (e.g. /history under load)."""
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.base_url = f"http://{host}:{port}"
        self._session = requests.Session()
        if get_retries:
            self._session.mount(self.base_url, HTTPAdapter(max_retries=_status_retry(get_retries)))

    def close(self) -> None:
        self._session.close()

    # -- plumbing ---------------------------------------------------------------

    def request(self, method: str, path: str, timeout_s: float | None = None, **kwargs: Any) -> requests.Response:
        """Send one request; raise ComfyUnavailable or ComfyHTTPError instead of returning a failure."""
        try:
            response = self._session.request(
                method, self.base_url + path, timeout=timeout_s or self.timeout_s, **kwargs
            )
        except requests.RequestException as error:
            raise ComfyUnavailable(f"ComfyUI at {self.base_url} did not answer {method} {path}: {error}") from error
        if response.status_code >= 300:
            raise ComfyHTTPError(method, path, response.status_code, response.text)
        return response

    def get_json(self, path: str, timeout_s: float | None = None, **kwargs: Any) -> Any:
        return self.request("GET", path, timeout_s, **kwargs).json()

    def post_json(self, path: str, payload: Any, timeout_s: float | None = None) -> requests.Response:
        return self.request("POST", path, timeout_s, json=payload)

    # -- read-only endpoints ---------------------------------------------------

    def system_stats(self, timeout_s: float | None = None) -> dict:
        return self.get_json("/system_stats", timeout_s)

    def object_info(self, node_class: str | None = None, timeout_s: float | None = None) -> dict:
        path = "/object_info" if node_class is None else f"/object_info/{requests.utils.quote(node_class)}"
        return self.get_json(path, timeout_s)

    def queue(self, timeout_s: float | None = None) -> dict:
        return self.get_json("/queue", timeout_s)

    def history(self, prompt_id: str, timeout_s: float | None = None) -> dict:
        """The history entry of one prompt, or {} when ComfyUI does not know it (yet, or after a restart)."""
        return self.get_json(f"/history/{prompt_id}", timeout_s).get(prompt_id, {})

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> requests.Response:
        """GET /view as a stream: the caller reads `iter_content` and must close the response."""
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        return self.request("GET", "/view", params=params, stream=True)

    # -- actions -----------------------------------------------------------------

    def queue_prompt(self, workflow: dict, client_id: str, prompt_id: str, extra_data: dict | None = None) -> dict:
        """POST /prompt. A rejected graph raises ComfyHTTPError with status 400 and ComfyUI's node_errors body."""
        payload: dict[str, Any] = {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            payload["extra_data"] = extra_data
        return self.post_json("/prompt", payload).json()

    def upload_image(self, name: str, stream: BinaryIO, content_type: str, subfolder: str = "") -> dict:
        """POST /upload/image with overwrite, so a re-sent job replaces its own earlier input."""
        files = {"image": (name, stream, content_type)}
        data = {"type": "input", "overwrite": "true", "subfolder": subfolder}
        return self.request("POST", "/upload/image", files=files, data=data).json()

    def interrupt(self, prompt_id: str | None = None, timeout_s: float | None = None) -> None:
        self.post_json("/interrupt", {"prompt_id": prompt_id} if prompt_id else {}, timeout_s)

    def delete_from_queue(self, prompt_ids: list[str], timeout_s: float | None = None) -> None:
        self.post_json("/queue", {"delete": prompt_ids}, timeout_s)

    def delete_history(self, prompt_ids: list[str]) -> None:
        self.post_json("/history", {"delete": prompt_ids})

    # -- WebSocket ---------------------------------------------------------------

    def connect_websocket(self, client_id: str, timeout_s: float | None = None) -> websocket.WebSocket:
        """Open /ws for `client_id`; execution frames of prompts queued with this id arrive on it."""
        url = f"ws://{self.host}:{self.port}/ws?clientId={client_id}"
        try:
            ws = websocket.create_connection(url, timeout=timeout_s or self.timeout_s, skip_utf8_validation=True)
        except (OSError, websocket.WebSocketException) as error:
            raise ComfyUnavailable(f"ComfyUI's WebSocket at {url} did not open: {error}") from error
        return ws


def _status_retry(attempts: int) -> Retry:
    """Retry GETs answered 5xx only: a refused connection means ComfyUI is down and must fail fast."""
    return Retry(
        total=attempts,
        connect=0,
        read=0,
        other=0,
        status=attempts,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        backoff_factor=0.05,
        raise_on_status=False,
    )
