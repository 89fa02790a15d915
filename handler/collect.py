"""Step 5: list every output of every node: files (images, videos, audio, others) and text.

A node's outputs are lists of {"filename", "subfolder", "type"} under any key (`images`,
`gifs`, `audio`, `latents`…); what a file is comes from its extension, so a video saved
under `images` (SaveVideo) is still a video. Files are found on disk in ComfyUI's folders;
one that is not there (ComfyUI on other folders than expected) is fetched through /view
into a scratch file. Temp outputs (PreviewImage) are left out unless INCLUDE_TEMP_OUTPUTS.
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker_common.comfy_client import ComfyError, ComfyHTTPError

from .errors import JobError, Reason
from .runtime import Runtime

CATEGORIES = {"image": "images", "video": "videos", "audio": "audio"}
VIEW_CHUNK_BYTES = 1 << 20


@dataclass
class OutputFile:
    node_id: str
    filename: str
    subfolder: str
    kind: str  # ComfyUI's folder type: output, temp or input
    mime: str
    path: Path
    size: int
    scratch: bool = False  # a copy fetched through /view, not ComfyUI's own file

    @property
    def category(self) -> str:
        return CATEGORIES.get(self.mime.partition("/")[0], "files")

    @property
    def display_name(self) -> str:
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename


@dataclass
class Collected:
    files: list[OutputFile] = field(default_factory=list)
    texts: list[dict[str, str]] = field(default_factory=list)

    def discard_scratch(self) -> None:
        for item in self.files:
            if item.scratch:
                item.path.unlink(missing_ok=True)


def collect(rt: Runtime, outputs: dict[str, dict[str, Any]]) -> Collected:
    collected = Collected()
    seen: set[tuple[str, str, str]] = set()
    try:
        for node_id, ui in outputs.items():
            for key, value in (ui or {}).items():
                if key == "text":
                    collected.texts.extend(_texts(node_id, value))
                    continue
                for ref in value if isinstance(value, list) else []:
                    item = _file(rt, node_id, ref, seen)
                    if item is not None:
                        collected.files.append(item)
    except BaseException:
        collected.discard_scratch()
        raise
    return collected


def _texts(node_id: str, value: Any) -> list[dict[str, str]]:
    values = value if isinstance(value, list) else [value]
    return [{"node_id": node_id, "text": str(text)} for text in values if text is not None]


def _file(rt: Runtime, node_id: str, ref: Any, seen: set[tuple[str, str, str]]) -> OutputFile | None:
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        return None
    kind, subfolder, filename = str(ref.get("type") or "output"), str(ref.get("subfolder") or ""), ref["filename"]
    if kind == "temp" and not rt.config.include_temp_outputs:
        return None
    if (kind, subfolder, filename) in seen:  # a cached re-run lists the same file again
        return None
    seen.add((kind, subfolder, filename))
    mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    item = OutputFile(node_id, filename, subfolder, kind, mime, Path(), 0)
    path = rt.folders.resolve(kind, subfolder, filename)
    if path is None:
        raise _missing(item, "its path leaves ComfyUI's folder")
    try:
        item.path, item.size = path, path.stat().st_size
    except OSError:
        _fetch_view(rt, item)
    return item


def _fetch_view(rt: Runtime, item: OutputFile) -> None:
    """Copy a file that is not on disk where expected from GET /view into a scratch file."""
    try:
        response = rt.comfy.view(item.filename, item.subfolder, item.kind)
    except ComfyHTTPError as error:
        raise _missing(item, f"it is not on disk and /view answered {error.status}") from error
    except ComfyError as error:
        raise rt.comfy_failure(error, f"fetching the output {item.display_name}") from error
    handle, name = tempfile.mkstemp(prefix="output-", suffix=Path(item.filename).suffix)
    try:
        with response, os.fdopen(handle, "wb") as scratch:
            for chunk in response.iter_content(VIEW_CHUNK_BYTES):
                scratch.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    item.path, item.size, item.scratch = Path(name), os.path.getsize(name), True


def _missing(item: OutputFile, why: str) -> JobError:
    return JobError(
        Reason.INTERNAL,
        f"The output {item.display_name} of node {item.node_id} cannot be read: {why}",
        {"filename": item.filename, "subfolder": item.subfolder, "type": item.kind},
    )
