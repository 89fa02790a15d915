"""Per-prompt node progress, sent as `progress_state` frames (comfy_execution/progress.py).

Every frame repeats the state of every node touched so far in this prompt, so a wide graph
makes WS traffic grow with the square of its node count, exactly as ComfyUI's does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Send = Callable[[str, dict[str, Any]], None]


class ProgressRegistry:
    def __init__(self, prompt_id: str, send: Send, listening: Callable[[], bool] = lambda: True) -> None:
        self.prompt_id = prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}
        self._send = send
        # Building a frame costs O(nodes); skip it when no socket would receive it.
        self._listening = listening

    def _entry(self, node_id: str) -> dict[str, Any]:
        entry = self.nodes.get(node_id)
        if entry is None:
            entry = {"state": "pending", "value": 0.0, "max": 1.0}
            self.nodes[node_id] = entry
        return entry

    def _publish(self) -> None:
        if not self._listening():
            return
        nodes = {
            node_id: {
                "value": state["value"],
                "max": state["max"],
                "state": state["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, state in self.nodes.items()
            if state["state"] != "pending"
        }
        self._send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes})

    def start(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="running", value=0.0, max=1.0)
        self._publish()

    def update(self, node_id: str, value: float, max_value: float) -> None:
        entry = self._entry(node_id)
        entry.update(state="running", value=value, max=max_value)
        self._publish()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._publish()
