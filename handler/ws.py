"""WebSockets to ComfyUI: one per job in flight, kept open and reused across jobs.

Each socket has its own clientId, so ComfyUI routes the execution frames of prompts queued
with that id to it alone; frames of earlier prompts are told apart by their prompt_id.
Reusing the socket saves the connect (about a millisecond) on every job.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import websocket
from websocket import ABNF

from worker_common.comfy_client import ComfyClient
from worker_common.comfy_protocol import ACTIVITY_MESSAGE, credential_key, decode_message
from worker_common.contract import Readiness


@dataclass(frozen=True)
class Vouched:
    """The sidecar's "ready" for the ComfyUI process a socket talked to, and when it came (monotonic)."""

    ready: Readiness
    at: float


class Dropped(Exception):
    """The WebSocket closed or failed."""


class ComfySocket:
    """One WebSocket to ComfyUI, for one client id."""

    def __init__(self, comfy: ComfyClient, client_id: str) -> None:
        self.comfy = comfy
        self.client_id = client_id
        self.credential_key: str | None = None  # 0.47.1: presented when this client id reconnects
        # The readiness its last job ran under, if that job ended well on this very connection:
        # while the socket stays open, that ComfyUI process still runs.
        self.vouched: Vouched | None = None
        self._ws: websocket.WebSocket | None = None

    @property
    def is_open(self) -> bool:
        return self._ws is not None and self._ws.connected

    def ensure_open(self) -> None:
        """Drop frames left from earlier prompts, or (re)connect; raises ComfyUnavailable when ComfyUI refuses."""
        if not self.drain():
            self.open()

    def open(self) -> None:
        """(Re)connect; raises ComfyUnavailable when ComfyUI does not accept it."""
        self.close()
        self.vouched = None  # another process may answer now
        self._ws = self.comfy.connect_websocket(self.client_id, self.credential_key)

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close(timeout=0.1)
            self._ws = None

    def receive(self, timeout_s: float) -> dict[str, Any] | None:
        """The next message (read with comfy_protocol.Frame), ACTIVITY_MESSAGE for a frame with nothing to act on,
        None at the timeout.

        Raises Dropped when the socket is closed or fails.
        """
        if self._ws is None:
            raise Dropped("the WebSocket is not open")
        self._ws.settimeout(max(timeout_s, 0.001))
        try:
            opcode, frame = self._ws.recv_data_frame(True)
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketException, OSError, ValueError) as error:
            self.close()
            raise Dropped(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__) from error
        if opcode == ABNF.OPCODE_CLOSE:
            self.close()
            raise Dropped("ComfyUI closed the WebSocket")
        if opcode != ABNF.OPCODE_TEXT:
            return ACTIVITY_MESSAGE
        message = decode_message(frame.data)
        self.credential_key = credential_key(message) or self.credential_key
        return message

    def ping(self) -> None:
        """Send a ping; its pong (or any frame) shows up in receive() as activity."""
        if self._ws is None:
            raise Dropped("the WebSocket is not open")
        try:
            self._ws.ping()
        except (websocket.WebSocketException, OSError) as error:
            self.close()
            raise Dropped(str(error)) from error

    def drain(self) -> bool:
        """Read and drop whatever is already waiting (frames of earlier prompts); False when closed."""
        if not self.is_open:
            return False
        assert self._ws is not None
        try:
            while select.select([self._ws.sock], [], [], 0)[0]:
                self.receive(0.05)
        except (Dropped, OSError, ValueError):
            self.close()
            return False
        return True


class SocketPool:
    """Idle sockets kept open between jobs; a job takes one for its whole run."""

    def __init__(self, comfy: ComfyClient) -> None:
        self.comfy = comfy
        self._idle: list[ComfySocket] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def socket(self) -> Iterator[ComfySocket]:
        """A socket of its own for one job (open it with `ensure_open`), back to the pool if still open."""
        sock = self._take()
        try:
            yield sock
        finally:
            if sock.is_open:
                with self._lock:
                    self._idle.append(sock)

    def recent_ready(self, max_age_s: float) -> Vouched | None:
        """The newest "ready" an idle socket still open vouches for, if younger than `max_age_s`.

        An open socket means ComfyUI has not restarted since; every idle one is checked, closed ones go.
        """
        with self._lock:
            alive = [sock for sock in self._idle if sock.drain()]
            self._idle = alive
        now = time.monotonic()
        fresh = [sock.vouched for sock in alive if sock.vouched is not None and now - sock.vouched.at < max_age_s]
        return max(fresh, key=lambda vouched: vouched.at) if fresh else None

    def _take(self) -> ComfySocket:
        with self._lock:
            sock = self._idle.pop() if self._idle else None
        return sock or ComfySocket(self.comfy, f"worker-{uuid.uuid4().hex}")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()
