"""Progress of a running prompt (node k of n, step i of m), sent to RunPod at most twice a second.

runpod.serverless.progress_update posts {"status": "IN_PROGRESS", "output": <payload>} to
RUNPOD_WEBHOOK_POST_OUTPUT from a thread of its own, so a report never blocks the job.
The first report goes out no sooner than one interval after queueing: a job that finishes
in a few milliseconds sends none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

INTERVAL_S = 0.5

Sender = Callable[[dict[str, Any]], None]


class Progress:
    def __init__(self, workflow: dict[str, Any], send: Sender | None, clock: Callable[[], float] = time.monotonic):
        self._classes = {node_id: node.get("class_type", "?") for node_id, node in workflow.items()}
        self._send = send
        self._clock = clock
        self._seen: set[str] = set()
        self._node_id: str | None = None
        self._step: tuple[int, int] | None = None
        self._last_sent = clock()
        self._pending = False

    def cached(self, node_ids: list[str]) -> None:
        self._seen.update(str(node_id) for node_id in node_ids)
        self._changed()

    def node(self, node_id: str) -> None:
        node_id = str(node_id)
        self._seen.add(node_id)
        self._node_id = node_id
        self._step = None
        self._changed()

    def step(self, value: Any, maximum: Any, node_id: Any = None) -> None:
        if node_id is not None and str(node_id) != self._node_id:
            self.node(str(node_id))
        try:
            self._step = (int(value), int(maximum))
        except (TypeError, ValueError):
            return
        self._changed()

    def class_of(self, node_id: str) -> str:
        return self._classes.get(node_id, "?")

    def flush(self) -> None:
        """Send the latest state if it changed and the interval has passed."""
        if not self._pending or self._send is None:
            return
        now = self._clock()
        if now - self._last_sent < INTERVAL_S:
            return
        self._last_sent = now
        self._pending = False
        self._send(self.payload())

    def payload(self) -> dict[str, Any]:
        total = len(self._classes)
        done = min(len(self._seen), total)
        payload: dict[str, Any] = {"node": done, "nodes": total}
        message = f"node {done} of {total}"
        if self._node_id is not None:
            class_type = self.class_of(self._node_id)
            payload.update(node_id=self._node_id, class_type=class_type)
            message += f" ({class_type})"
        if self._step is not None:
            payload.update(step=self._step[0], steps=self._step[1])
            message += f", step {self._step[0]} of {self._step[1]}"
        payload["message"] = message
        return payload

    def _changed(self) -> None:
        self._pending = True
        self.flush()
