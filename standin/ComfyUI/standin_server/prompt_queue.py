"""The prompt queue and the history, as ComfyUI's execution.PromptQueue keeps them.

Items are tuples (number, prompt_id, prompt, extra_data, outputs_to_execute, sensitive);
the API shows their first five fields. Everything lives in memory: a restart forgets it.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

MAXIMUM_HISTORY_SIZE = 10000

QueueItem = tuple[Any, ...]


class ExecutionStatus(NamedTuple):
    status_str: str
    completed: bool
    messages: list[tuple[str, dict[str, Any]]]


class QueueListener(Protocol):
    def queue_updated(self) -> None: ...


class PromptQueue:
    def __init__(self, server: QueueListener) -> None:
        self.server = server
        # Heap entries carry a sequence number so equal (number, prompt_id) never compare dicts.
        self._heap: list[tuple[Any, int, QueueItem]] = []
        self._seq = itertools.count()
        self.task_counter = 0
        self.currently_running: dict[int, QueueItem] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.flags: dict[str, Any] = {}
        self._wake = asyncio.Event()

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, (item[0], next(self._seq), item))
        self.server.queue_updated()
        self._wake.set()

    def knows(self, prompt_id: str) -> bool:
        """Whether the id is queued, running or in history (0.47.1's PromptQueue.put refuses those)."""
        return (
            prompt_id in self.history
            or any(entry[2][1] == prompt_id for entry in self._heap)
            or prompt_id in self.running_prompt_ids()
        )

    async def get(self) -> tuple[QueueItem, int] | None:
        """The next item to run, or None when woken only by a flag (POST /free)."""
        while not self._heap:
            self._wake.clear()
            if self.flags:
                return None
            await self._wake.wait()
        item = heapq.heappop(self._heap)[2]
        item_id = self.task_counter
        self.currently_running[item_id] = item
        self.task_counter += 1
        self.server.queue_updated()
        return item, item_id

    def task_done(
        self,
        item_id: int,
        history_result: dict[str, Any],
        status: ExecutionStatus | None,
        process_item: Callable[[QueueItem], QueueItem] | None = None,
    ) -> None:
        prompt = self.currently_running.pop(item_id)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        status_dict = copy.deepcopy(status._asdict()) if status is not None else None
        if process_item is not None:
            prompt = process_item(prompt)
        self.history[prompt[1]] = {"prompt": prompt, "outputs": {}, "status": status_dict}
        self.history[prompt[1]].update(history_result)
        self.server.queue_updated()

    def get_current_queue(self) -> tuple[list[QueueItem], list[QueueItem]]:
        """(running, pending); pending in heap order, which is not sorted (as in ComfyUI)."""
        return list(self.currently_running.values()), [entry[2] for entry in self._heap]

    def get_tasks_remaining(self) -> int:
        return len(self._heap) + len(self.currently_running)

    def running_prompt_ids(self) -> list[str]:
        return [item[1] for item in self.currently_running.values()]

    def wipe_queue(self) -> None:
        self._heap = []
        self.server.queue_updated()

    def delete_queue_item(self, function: Callable[[QueueItem], bool]) -> bool:
        for index, entry in enumerate(self._heap):
            if function(entry[2]):
                if len(self._heap) == 1:
                    self.wipe_queue()
                else:
                    self._heap.pop(index)
                    heapq.heapify(self._heap)
                self.server.queue_updated()
                return True
        return False

    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict[str, Any]:
        if prompt_id is None:
            out = {}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            for index, key in enumerate(self.history):
                if index >= offset:
                    out[key] = self.history[key]
                    if max_items is not None and len(out) >= max_items:
                        break
            return out
        if prompt_id in self.history:
            return {prompt_id: self.history[prompt_id]}
        return {}

    def wipe_history(self) -> None:
        self.history = {}

    def delete_history_item(self, id_to_delete: str) -> None:
        self.history.pop(id_to_delete, None)

    def set_flag(self, name: str, data: Any) -> None:
        self.flags[name] = data
        self._wake.set()

    def get_flags(self, reset: bool = True) -> dict[str, Any]:
        flags = self.flags
        if reset:
            self.flags = {}
        else:
            flags = flags.copy()
        return flags
