"""What a job's result tells an app beside its files: seeds, image sizes and the model files loaded.

- `seeds`: every seed input of the prompt (`seed`, `noise_seed`, or an INT input ComfyUI marks
  `control_after_generate`) as `NODE.INPUT`: value, so a result can be reproduced.
- Each image item gets its `width` and `height`, read from the file's header.
- `models`: the model files the prompt loaded: choice inputs of the nodes that ran (those an
  output node depends on) whose value is a file in one of the volume's models folders
  (`models/<folder>/<value>`), with the file's size and SHA-256 (model_hashes.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from worker_common.layout import Layout
from worker_common.recent_models import MODEL_EXTENSIONS

from .catalog import Catalog
from .collect import Collected
from .model_hashes import ModelHashes
from .params import is_link, parameters


def seeds(workflow: dict[str, Any], catalog: Catalog, timeout_s: float) -> dict[str, Any]:
    found = parameters(workflow, catalog, timeout_s)
    return {p.key: p.value for p in found if p.spec.is_seed and isinstance(p.value, int)}


def with_image_sizes(result: dict[str, Any], collected: Collected) -> dict[str, Any]:
    """The result with each image item given its width and height (read while the files are still on disk)."""
    if not result.get("images"):
        return result
    paths = {(item.node_id, item.subfolder, item.filename): item.path for item in collected.files}
    return {**result, "images": [_sized(item, paths) for item in result["images"]]}


def _sized(item: dict[str, Any], paths: dict[tuple[Any, Any, Any], Path]) -> dict[str, Any]:
    path = paths.get((item.get("node_id"), item.get("subfolder", ""), item.get("filename")))
    size = _image_size(path) if path is not None else None
    return {**item, "width": size[0], "height": size[1]} if size is not None else item


@dataclass(frozen=True)
class LoadedModel:
    node_id: str
    input: str
    name: str  # relative to the models folder: checkpoints/sd/x.safetensors
    path: Path  # its real path


def model_files(workflow: dict[str, Any], catalog: Catalog, layout: Layout, timeout_s: float) -> list[LoadedModel]:
    """The model files the prompt will load (found before it is queued, so hashing can start meanwhile)."""
    folders = _model_folders(layout.models)
    found = []
    for node_id in sorted(_nodes_that_run(workflow, catalog, timeout_s)):
        node = workflow[node_id]
        node_class = catalog.get(str(node.get("class_type")), timeout_s)
        for input_name, value in (node.get("inputs") or {}).items():
            spec = (node_class.inputs or {}).get(input_name)
            if spec is None or spec.choices is None or spec.names_an_input_file or not _model_name(value):
                continue
            for folder in folders:
                path = layout.model_file(f"{folder}/{value}")
                if path is not None:
                    found.append(LoadedModel(node_id, input_name, f"{folder}/{value}", path))
                    break
    return found


def models(loaded: list[LoadedModel], hashes: ModelHashes) -> list[dict[str, Any]]:
    """The loaded model files for the result, each with its size and SHA-256."""
    found = []
    for model in loaded:
        size, sha256 = hashes.sha256(model.path)
        found.append(
            {"node_id": model.node_id, "input": model.input, "name": model.name, "size": size, "sha256": sha256}
        )
    return found


def _model_name(value: Any) -> bool:
    """Whether a choice's value can name a model file: only those are looked for on the volume."""
    return isinstance(value, str) and os.path.splitext(value)[1].lower() in MODEL_EXTENSIONS


def _nodes_that_run(workflow: dict[str, Any], catalog: Catalog, timeout_s: float) -> set[str]:
    """The output nodes and every node they depend on through links."""
    pending = [
        node_id for node_id, node in workflow.items() if catalog.get(str(node.get("class_type")), timeout_s).output_node
    ]
    seen: set[str] = set()
    while pending:
        node_id = pending.pop()
        if node_id in seen or node_id not in workflow:
            continue
        seen.add(node_id)
        pending += [str(value[0]) for value in (workflow[node_id].get("inputs") or {}).values() if is_link(value)]
    return seen


def _model_folders(models: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(models) if entry.is_dir())
    except OSError:
        return []


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # not an image Pillow reads (a video saved under images): no size
        return None
