"""The PromptServer: aiohttp app, WebSocket clients and the ordered message pump.

As in ComfyUI's server.py:
- one socket per clientId: a new connection with the same id replaces the old one, and a
  socket's teardown removes the id unconditionally (so a late teardown of an old socket can
  orphan its replacement; real ComfyUI does the same);
- run frames go to the prompt's client_id only (to everyone when the prompt has none);
  `status` goes to everyone;
- frames are queued by send_sync (from any thread) and sent in order by one task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from . import cli, routes, version
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
    features.update(
        supports_model_type_tags=True,
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
        await ws.prepare(request)
        self.connected_at[ws] = time.monotonic()
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.sockets_metadata[sid] = {"feature_flags": {}}
        self.all_sockets.add(ws)
        try:
            await self.send("status", {"status": self.get_queue_info(), "sid": sid}, sid)
            if self.client_id == sid and self.last_node_id is not None:
                await self.send("executing", {"node": self.last_node_id}, sid)
            await self._read_loop(request, ws, sid)
        finally:
            self.sockets.pop(sid, None)
            self.sockets_metadata.pop(sid, None)
            self.all_sockets.discard(ws)
            self.connected_at.pop(ws, None)
        return ws

    async def _read_loop(self, request: web.Request, ws: web.WebSocketResponse, sid: str) -> None:
        first_message = True
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.PING:
                if not self.is_silent(ws):
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT:
                try:
                    data = json.loads(msg.data)
                    if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                        self.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                        await self.send("feature_flags", self.features, sid)
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
