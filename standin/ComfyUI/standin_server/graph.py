"""Execution order and caching, following comfy_execution/graph.py and caching.py.

- The cache is ComfyUI's classic one (results live as long as the latest prompt uses them),
  an LRU of N results (--cache-lru N), none (--cache-none), or 0.38.1's default RAM-pressure
  cache (ram_pressure.py: results stay across prompts until RAM runs short);
  STANDIN_CACHE_DROPS drops every result of that one after each prompt.
- A node's cache key is a hash of its class, its IS_CHANGED value and its inputs, where a
  link contributes the key of the node it comes from; so a key stands for the node's whole
  upstream graph. The cache keeps only the keys of the latest prompt.
- IS_CHANGED returning NaN (or failing) makes a key that never matches: the node always runs.
- ExecutionList is ComfyUI's topological sort: it starts from the output nodes, pulls in
  every uncached upstream node, and picks ready nodes output-first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import ram_pressure
from .nodes import NODE_CLASS_MAPPINGS
from .validation import constant_inputs, map_over_list

log = logging.getLogger("standin")


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
    )


@dataclass
class CacheEntry:
    ui: dict[str, Any] | None
    outputs: list[list[Any]]


def _never_matches() -> str:
    return "nan-" + uuid.uuid4().hex


def is_changed_token(node: dict[str, Any]) -> str:
    """IS_CHANGED of a node as a string; a unique token when it is NaN or raises."""
    class_def = NODE_CLASS_MAPPINGS[node["class_type"]]
    func = getattr(class_def, "IS_CHANGED", None)
    if func is None:
        return ""
    try:
        results = map_over_list(func, constant_inputs(node["inputs"], class_def.INPUT_TYPES()))
    except Exception as ex:
        log.warning(f"WARNING: {ex}")
        return _never_matches()
    if any(isinstance(r, float) and math.isnan(r) for r in results):
        return _never_matches()
    return json.dumps(results, sort_keys=True, default=str)


def compute_cache_keys(prompt: dict[str, Any]) -> dict[str, str]:
    """The cache key of every node of the prompt (iterative, so deep chains are fine)."""
    keys: dict[str, str] = {}
    in_progress: set[str] = set()
    for root in prompt:
        stack = [root]
        while stack:
            node_id = stack[-1]
            if node_id in keys:
                stack.pop()
                continue
            node = prompt[node_id]
            missing = [
                v[0]
                for v in node["inputs"].values()
                if is_link(v) and v[0] in prompt and v[0] not in keys and v[0] not in in_progress
            ]
            if missing and node_id not in in_progress:
                in_progress.add(node_id)
                stack.extend(missing)
                continue
            in_progress.discard(node_id)
            stack.pop()
            signature: list[Any] = [node["class_type"], is_changed_token(node)]
            for name in sorted(node["inputs"]):
                value = node["inputs"][name]
                if is_link(value):
                    # A link to a missing node or around a cycle can never be cached.
                    ancestor = keys.get(value[0]) or _never_matches()
                    signature.append([name, "link", ancestor, value[1]])
                else:
                    signature.append([name, "value", value])
            encoded = json.dumps(signature, sort_keys=True, default=repr).encode()
            keys[node_id] = hashlib.sha256(encoded).hexdigest()
    return keys


@dataclass(frozen=True)
class CachePolicy:
    """Which output cache runs: "classic", "lru" (lru_size results), "none" or "ram"."""

    kind: str = "classic"
    lru_size: int = 0
    ram_headroom: float = 0  # "ram": the free RAM (bytes) the cache keeps (ram_pressure.headroom)
    # STANDIN_CACHE_DROPS with the RAM-pressure cache: every result is dropped after each prompt.
    drops_after_prompt: bool = False

    def startup_line(self) -> str | None:
        """What ComfyUI's CacheSet logs when the prompt worker starts."""
        return {
            "none": "Disabling intermediate node cache.",
            "lru": "Using LRU cache",
            "ram": "Using RAM pressure cache.",
        }.get(self.kind)


class OutputCache:
    """The output cache: classic and RAM-pressure entries live as long as the latest prompt
    uses their key; LRU entries stay until more than lru_size are held."""

    def __init__(self, policy: CachePolicy) -> None:
        self.enabled = policy.kind != "none"
        self.lru_size = policy.lru_size if policy.kind == "lru" else 0
        self.headroom = policy.ram_headroom if policy.kind == "ram" else 0
        self.entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.keys: dict[str, str] = {}
        self.generation = 0
        self.used: dict[str, int] = {}  # RAM pressure: key -> the prompt (generation) that last used it
        self.sizes: dict[str, int] = {}

    def set_prompt(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.generation += 1
        self.used.update({key: self.generation for key in keys.values() if key in self.entries})
        if self.lru_size or self.headroom:
            return
        used = set(keys.values())
        for key in [k for k in self.entries if k not in used]:
            del self.entries[key]

    def get(self, node_id: str) -> CacheEntry | None:
        key = self.keys.get(node_id)
        if key is None or key not in self.entries:
            return None
        if self.lru_size:
            self.entries.move_to_end(key)
        return self.entries[key]

    def set(self, node_id: str, entry: CacheEntry) -> None:
        if not self.enabled or node_id not in self.keys:
            return
        self.entries[self.keys[node_id]] = entry
        if self.headroom:
            self.used[self.keys[node_id]] = self.generation
            self.sizes[self.keys[node_id]] = ram_pressure.size_of(entry.outputs)
        if self.lru_size:
            self.entries.move_to_end(self.keys[node_id])
            in_use = set(self.keys.values())
            for key in [k for k in self.entries if k not in in_use][: max(0, len(self.entries) - self.lru_size)]:
                del self.entries[key]

    def release_ram(self) -> None:
        """RAM pressure: free results while RAM is short of the headroom (ram_pressure.to_evict)."""
        if not self.headroom or not self.entries:
            return
        ages = {key: self.generation - self.used[key] for key in self.entries}
        for key in ram_pressure.to_evict(dict(self.sizes), ages, self.headroom):  # lazily: it measures after each
            self.entries.pop(key, None)
            self.sizes.pop(key, None)
            self.used.pop(key, None)

    def clear(self) -> None:
        self.entries.clear()
        self.sizes.clear()
        self.used.clear()


def is_output_node(prompt: dict[str, Any], node_id: str) -> bool:
    return getattr(NODE_CLASS_MAPPINGS[prompt[node_id]["class_type"]], "OUTPUT_NODE", False) is True


class DependencyCycleError(Exception):
    pass


class ExecutionList:
    def __init__(self, prompt: dict[str, Any], is_cached: Callable[[str], bool]) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[Any, bool]]] = {}

    def is_empty(self) -> bool:
        return not self.pending

    def add_node(self, node_unique_id: str) -> None:
        node_ids = [node_unique_id]
        links = []
        while node_ids:
            unique_id = node_ids.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if is_link(value):
                    from_node_id, from_socket = value
                    if not self.is_cached(from_node_id):
                        node_ids.append(from_node_id)
                    links.append((from_node_id, from_socket, unique_id))
        for link in links:
            self.add_strong_link(*link)

    def add_strong_link(self, from_node_id: str, from_socket: Any, to_node_id: str) -> None:
        if self.is_cached(from_node_id):
            return
        self.add_node(from_node_id)
        if to_node_id not in self.blocking[from_node_id]:
            self.blocking[from_node_id][to_node_id] = {}
            self.block_count[to_node_id] += 1
        self.blocking[from_node_id][to_node_id][from_socket] = True

    def next_node(self) -> str:
        """The node to run next (ComfyUI's ux_friendly_pick_node)."""
        ready = [node_id for node_id in self.pending if self.block_count[node_id] == 0]
        if not ready:
            raise DependencyCycleError("Dependency cycle detected")
        for node_id in ready:
            if is_output_node(self.prompt, node_id):
                return node_id
        for node_id in ready:
            if any(is_output_node(self.prompt, b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self.blocking[node_id]:
                if any(is_output_node(self.prompt, b) for b in self.blocking[blocked]):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]
