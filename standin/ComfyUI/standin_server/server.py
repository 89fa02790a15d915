"""The PromptServer: aiohttp app, WebSocket clients and the ordered message pump.

As in ComfyUI's server.py:
- one socket per clientId: a new connection with the same id replaces the old one, and a
  socket's teardown removes the id unconditionally (so a late teardown of an old socket can
  orphan its replacement; real ComfyUI up to 0.38.1 does the same). 0.47.1 removes only its
  own registration, gives a loopback peer a `credential_key` in its first `status` frame and
  lets a new socket replace a live one of the same clientId only after a `credential_auth`
  message with that key (credentials.py);
- run frames go to the prompt's client_id only (to everyone when the prompt has none);
  `status` goes to everyone;
- frames are queued by send_sync (from any thread) and sent in order by one task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from . import cli, credentials, routes, version
from .assets import AssetStore
from .executor import PREVIEW_IMAGE_BYTES, PromptExecutor
from .graph import CachePolicy
from .knobs import Knobs
from .prompt_queue import PromptQueue

log = logging.getLogger("standin")

PREVIEW_IMAGE = 1  # ComfyUI's BinaryEventTypes.PREVIEW_IMAGE
_CALL = "__call__"  # internal: run a coroutine function in message order


def _coerce_flag(key: str, raw: str) -> Any:
    if cli.CLI_FEATURE_FLAG_REGISTRY.get(key, {}).get("type") != "bool":
        return raw
    if raw.lower() not in ("true", "false"):
        raise ValueError(f"expected 'true' or 'false', got {raw!r}")
    return raw.lower() == "true"


def server_features(max_upload_mb: float, assets_on: bool, cli_flags: list[str]) -> dict[str, Any]:
    """feature_flags.get_server_features(): /features and the reply to a feature_flags message."""
    features: dict[str, Any] = {"supports_preview_metadata": True}
    if not version.current().extended_features:
        return {**features, "max_upload_size": max_upload_mb * 1024 * 1024}
    features["supports_model_type_tags"] = True
    if version.current().credential_transport:
        features["comfy_api_credentials"] = credentials.FEATURE
    features.update(
        max_upload_size=max_upload_mb * 1024 * 1024,
        extension={"manager": {"supports_v4": True}},
        node_replacements=True,
        assets=assets_on,
    )
    for item in cli_flags:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not key or key in features:
            continue  # a --feature-flag cannot override a core flag
        try:
            features[key] = _coerce_flag(key, raw.strip() if sep else "true")
        except ValueError as err:
            log.warning(f"Could not coerce --feature-flag {key}={raw.strip()!r} to bool ({err}); dropping flag.")
    return features


class PromptServer:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        knobs: Knobs,
        max_upload_mb: float,
        cache: CachePolicy,
        assets: AssetStore,
        feature_flags: list[str] | None = None,
    ) -> None:
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.knobs = knobs
        self.max_upload_size = round(max_upload_mb * 1024 * 1024)
        self.assets = assets
        self.features = server_features(max_upload_mb, assets.enabled, feature_flags or [])
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sockets_metadata: dict[str, dict[str, Any]] = {}
        self.all_sockets: set[web.WebSocketResponse] = set()
        self.connected_at: dict[web.WebSocketResponse, float] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.number = 0
        self.history_500_pending = knobs.history_500_once
        self.messages: asyncio.Queue[tuple[str, Any, str | None]] = asyncio.Queue()
        self.prompt_queue = PromptQueue(self)
        self.executor = PromptExecutor(self, knobs, cache, assets)
        self.app = web.Application(client_max_size=self.max_upload_size)
        routes.add_routes(self)

    def features_for(self, include_credentials: bool) -> dict[str, Any]:
        """get_server_features(include_credentials=...): credentials are offered only where they may travel."""
        if include_credentials:
            return self.features
        return {key: value for key, value in self.features.items() if key != "comfy_api_credentials"}

    # -- messages -----------------------------------------------------------------------

    def get_queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.prompt_queue.get_tasks_remaining()}}

    def queue_updated(self) -> None:
        self.send_sync("status", {"status": self.get_queue_info()})

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """Queue a frame; safe from any thread. Frames go out in the order they were queued."""
        if threading.get_ident() == self.loop_thread:
            self.messages.put_nowait((event, data, sid))
        else:
            self.loop.call_soon_threadsafe(self.messages.put_nowait, (event, data, sid))

    async def publish_loop(self) -> None:
        while True:
            event, data, sid = await self.messages.get()
            try:
                if event == _CALL:
                    await data()
                else:
                    await self.send(event, data, sid)
            except Exception:
                log.exception("stand-in: sending a WebSocket message failed")

    def _targets(self, sid: str | None) -> list[web.WebSocketResponse]:
        if sid is None:
            return list(self.sockets.values())
        ws = self.sockets.get(sid)
        return [ws] if ws is not None else []

    def has_listeners(self, sid: str | None) -> bool:
        """Would a frame for sid reach any socket? (Atomic reads: called from node threads too.)"""
        return bool(self.sockets) if sid is None else sid in self.sockets

    def is_silent(self, ws: web.WebSocketResponse) -> bool:
        """STANDIN_WS_SILENT_AFTER_S: the socket is half-open once it is that old."""
        after = self.knobs.ws_silent_after_s
        return after is not None and time.monotonic() - self.connected_at.get(ws, 0.0) >= after

    async def _send_each(self, sid: str | None, send: Callable[[web.WebSocketResponse], Awaitable[None]]) -> None:
        for ws in self._targets(sid):
            if ws.closed or self.is_silent(ws):
                continue
            try:
                await send(ws)
            except (ConnectionError, RuntimeError, OSError) as err:
                log.warning(f"send error: {err}")

    async def send(self, event: str, data: Any, sid: str | None = None) -> None:
        if not self.has_listeners(sid):
            return
        if event == PREVIEW_IMAGE_BYTES:
            message = struct.pack(">I", PREVIEW_IMAGE) + data
            await self._send_each(sid, lambda ws: ws.send_bytes(message))
        else:
            text = json.dumps({"type": event, "data": data})
            await self._send_each(sid, lambda ws: ws.send_str(text))

    # -- WebSockets -----------------------------------------------------------------------

    async def websocket_handler(self, request: web.Request) -> web.WebSocketResponse:
        # autoping/autoclose off: the half-open knob must be able to withhold pongs and closes.
        ws = web.WebSocketResponse(autoping=False, autoclose=False, max_msg_size=0)
        sid = request.rel_url.query.get("clientId", "")
        guarded = version.current().credential_transport
        key_transport = guarded and credentials.transport_enabled(request)
        existing_key = self._existing_credential_key(sid) if guarded else None
        if existing_key is not None and not key_transport:
            sid, existing_key = "", None  # a plaintext peer may not take over a protected client id
        await ws.prepare(request)
        if existing_key is not None and not await self._authenticated(ws, existing_key):
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=credentials.INVALID_CREDENTIALS.encode())
            return ws
        self.connected_at[ws] = time.monotonic()
        if sid:
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        metadata: dict[str, Any] = {"feature_flags": {}}
        status: dict[str, Any] = {"status": self.get_queue_info(), "sid": sid}
        if guarded:
            metadata["connection_id"] = secrets.token_hex(16)
            key = existing_key or (secrets.token_urlsafe(32) if key_transport else None)
            if key is not None:
                metadata["credential_key"] = status["credential_key"] = key
        self.sockets_metadata[sid] = metadata
        self.all_sockets.add(ws)
        try:
            await self.send("status", status, sid)
            if self.client_id == sid and self.last_node_id is not None:
                await self.send("executing", {"node": self.last_node_id}, sid)
            await self._read_loop(request, ws, sid, key_transport)
        finally:
            if not guarded or self.sockets_metadata.get(sid) is metadata:
                self.sockets.pop(sid, None)
                self.sockets_metadata.pop(sid, None)
            self.all_sockets.discard(ws)
            self.connected_at.pop(ws, None)
        return ws

    def _existing_credential_key(self, sid: str) -> str | None:
        """0.47.1: the key of a live socket with this clientId (a closed one's metadata is gone)."""
        metadata = self.sockets_metadata.get(sid) if sid else None
        if metadata is None or sid not in self.sockets:
            self.sockets_metadata.pop(sid, None)
            return None
        return metadata.get("credential_key")

    async def _authenticated(self, ws: web.WebSocketResponse, expected: str) -> bool:
        """The first message must be {"type": "credential_auth", "data": {"credential_key": K}}, within 5 s."""
        deadline = time.monotonic() + credentials.AUTH_WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                return False
            if msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
                continue
            if msg.type != WSMsgType.TEXT:
                return False
            try:
                data = json.loads(msg.data)
            except json.JSONDecodeError:
                return False
            payload = data.get("data") if isinstance(data, dict) else None
            if not isinstance(payload, dict) or data.get("type") != credentials.AUTH_MESSAGE:
                return False
            return credentials.key_matches(payload.get("credential_key"), expected)
        return False

    async def _read_loop(
        self, request: web.Request, ws: web.WebSocketResponse, sid: str, key_transport: bool = False
    ) -> None:
        first_message = True
        auth_prelude = version.current().credential_transport  # a first credential_auth is skipped
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.PING:
                if not self.is_silent(ws):
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT:
                try:
                    data = json.loads(msg.data)
                    kind = data.get("type") if isinstance(data, dict) else None
                    if first_message and auth_prelude and kind == credentials.AUTH_MESSAGE:
                        auth_prelude = False
                        continue
                    if first_message and kind == "feature_flags":
                        self.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                        await self.send("feature_flags", self.features_for(key_transport), sid)
                    first_message = False
                except json.JSONDecodeError:
                    log.warning(f"Invalid JSON received from client {sid}: {msg.data}")
            elif msg.type == WSMsgType.ERROR:
                log.warning(f"ws connection closed with exception {ws.exception()}")
                return
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                if msg.type == WSMsgType.CLOSE and self.is_silent(ws):
                    # Half-open: never answer the close; wait for the peer to drop the TCP connection.
                    while request.transport is not None and not request.transport.is_closing():
                        await asyncio.sleep(0.2)
                elif not ws.closed:
                    await ws.close()
                return

    async def _close_all_sockets(self) -> None:
        sockets = [ws for ws in self.all_sockets if not ws.closed]
        closes = [ws.close(code=WSCloseCode.GOING_AWAY, message=b"standin: dropped") for ws in sockets]
        if closes:
            await asyncio.wait([asyncio.ensure_future(c) for c in closes], timeout=5)

    def drop_websockets_blocking(self) -> None:
        """From a node's thread: close every WebSocket, after the frames queued before it."""
        done = threading.Event()

        async def close_all() -> None:
            try:
                await self._close_all_sockets()
            finally:
                done.set()

        self.send_sync(_CALL, close_all)
        done.wait(timeout=10)

    def start_asset_scan(self, roots: tuple[str, ...]) -> None:
        """AssetManager.ensure_scan_started: a background scan, unless one is running or assets are off."""
        if self.assets.enabled:
            self.loop.run_in_executor(None, self.assets.scan, roots, lambda e, d: self.send_sync(e, d, None))

    def block_event_loop_blocking(self, seconds: float) -> None:
        """From a node's thread: hold the event loop for `seconds` (nothing is served meanwhile)."""
        done = threading.Event()

        def hold() -> None:
            log.warning(f"[ComfyUI stand-in] the event loop is blocked for {seconds:g} s (StandinFreeze)")
            time.sleep(seconds)
            done.set()

        self.loop.call_soon_threadsafe(hold)
        done.wait()
