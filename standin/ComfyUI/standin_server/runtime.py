"""What a running node can reach: the interrupt flag and the progress hook (ComfyUI's ProgressBar).

Nodes run in a worker thread (asyncio.to_thread); the executor puts a NodeContext in a
ContextVar before the call, and to_thread carries it into the thread.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class InterruptProcessingException(Exception):
    """ComfyUI's comfy.model_management.InterruptProcessingException."""


_interrupt = threading.Event()


def interrupt_processing(value: bool = True) -> None:
    if value:
        _interrupt.set()
    else:
        _interrupt.clear()


def processing_interrupted() -> bool:
    return _interrupt.is_set()


def throw_exception_if_processing_interrupted() -> None:
    if _interrupt.is_set():
        _interrupt.clear()
        raise InterruptProcessingException()


@dataclass
class NodeContext:
    prompt_id: str
    node_id: str
    # (value, total, preview) -> None; raises InterruptProcessingException when interrupted.
    progress: Callable[[float, float, Any], None]
    # Closes every WebSocket from the server side and waits until that is done.
    drop_websockets: Callable[[], None]
    # Blocks the server's event loop for that many seconds and returns when it is free again.
    block_event_loop: Callable[[float], None]


current_node: contextvars.ContextVar[NodeContext | None] = contextvars.ContextVar("current_node", default=None)


def context() -> NodeContext:
    ctx = current_node.get()
    if ctx is None:
        raise RuntimeError("no node is executing")
    return ctx


class ProgressBar:
    """comfy.utils.ProgressBar: each update checks the interrupt flag first, then reports."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        ctx = current_node.get()
        if ctx is None:
            throw_exception_if_processing_interrupted()
            return
        ctx.progress(self.current, self.total, preview)

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)
