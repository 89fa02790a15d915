"""What the handler needs to know of node classes, from ComfyUI's `/object_info/{class}`.

- Which classes are output nodes: only their `executed` frames and history entries are
  outputs (0.38.1 also sends `executed` for cached non-output nodes), and only they need the
  re-run marker (submit.py).
- Which inputs name files in ComfyUI's input folder: those whose spec carries an upload flag
  (`image_upload`, `video_upload`, `audio_upload`, `file_upload`, or `upload`), as LoadImage's
  `image`. Their values are resolved by the job's namespace (namespace.py).
- Which values a choice input accepts, to explain a rejection.

Each class is asked once per ComfyUI process (a restart may bring other custom nodes): a job
gets the catalog of the process it was made ready for (`Catalogs.for_process`) and passes it on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from worker_common.comfy_client import ComfyClient, ComfyError
from worker_common.comfy_protocol import InputSpec, NodeInfo


@dataclass(frozen=True)
class NodeClass:
    name: str
    known: bool  # False when ComfyUI has no such class (or did not answer)
    output_node: bool = False
    file_inputs: frozenset[str] = frozenset()
    inputs: dict[str, InputSpec] | None = None  # required and optional together

    def choices(self, input_name: str) -> list[str] | None:
        """The options of a choice (COMBO) input, or None for any other input."""
        spec = (self.inputs or {}).get(input_name)
        if spec is None or spec.choices is None:
            return None
        return [str(option) for option in spec.choices]


class Catalogs:
    """The catalog of the running ComfyUI process, a new one for each process; shared by the job threads."""

    def __init__(self, comfy: ComfyClient) -> None:
        self.comfy = comfy
        self._current: tuple[int | None, Catalog] | None = None
        self._lock = threading.Lock()

    def for_process(self, pid: int | None) -> Catalog:
        """The catalog of ComfyUI process `pid`: what an earlier process said is forgotten once another runs."""
        with self._lock:
            if self._current is None or self._current[0] != pid:
                self._current = (pid, Catalog(self.comfy))
            return self._current[1]


class Catalog:
    """Node classes as one ComfyUI process describes them; shared by the job threads it serves."""

    def __init__(self, comfy: ComfyClient) -> None:
        self.comfy = comfy
        self._classes: dict[str, NodeClass] = {}
        self._lock = threading.Lock()

    def get(self, name: str, timeout_s: float | None = None) -> NodeClass:
        with self._lock:
            known = self._classes.get(name)
        if known is not None:
            return known
        try:
            info = self.comfy.object_info(name, timeout_s).get(name)
        except ComfyError:
            return NodeClass(name, known=False)  # not cached: ask again next time
        node = _node_class(name, info)
        with self._lock:
            self._classes[name] = node
        return node

    def names(self, timeout_s: float | None = None) -> list[str]:
        """Every class name ComfyUI knows (for "did you mean" suggestions); [] if it does not answer."""
        try:
            return list(self.comfy.object_info(timeout_s=timeout_s))
        except ComfyError:
            return []


def _node_class(name: str, entry: Any) -> NodeClass:
    info = NodeInfo.from_entry(entry)
    if info is None:
        return NodeClass(name, known=False)
    files = frozenset(input_name for input_name, spec in info.inputs.items() if spec.names_an_input_file)
    return NodeClass(name, True, info.output_node, files, info.inputs)
