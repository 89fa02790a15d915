"""Step 5: list every output of every output node: files (images, videos, audio, 3D, others) and text.

A node's outputs are lists of {"filename", "subfolder", "type"} under any key (`images`,
`gifs`, `audio`, `3d`, `latents`…; comfy_protocol.output_files reads them); what a file is
comes from its extension, so a video saved under `images` (SaveVideo) is still a video. Files
are found on disk in the worker's folders, by their real path, which must stay inside the
folder; one that is not there is fetched through /view into a scratch file. Temp outputs
(PreviewImage) are left out unless INCLUDE_TEMP_OUTPUTS. Subfolders are reported as the user
named them, without the job's own folder.
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from worker_common.comfy_client import ComfyError, ComfyHTTPError
from worker_common.comfy_protocol import FileRef, output_files, output_texts

from .errors import JobError, Reason
from .namespace import JobSpace
from .runtime import Runtime

CATEGORIES = {"image": "images", "video": "videos", "audio": "audio", "model": "3d"}
# 3D formats ComfyUI writes, which the system's MIME table may not know.
MIME_TYPES = {
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".stl": "model/stl",
    ".usdz": "model/vnd.usdz+zip",
    ".fbx": "application/octet-stream",
    ".latent": "application/octet-stream",
}
VIEW_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class OutputFile:
    node_id: str
    filename: str
    comfy_subfolder: str  # as ComfyUI reported it (with the job's own folder)
    subfolder: str  # as the user named it
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


def collect(rt: Runtime, outputs: dict[str, dict[str, Any]], space: JobSpace) -> Collected:
    collected = Collected()
    seen: set[tuple[str, str, str]] = set()
    try:
        for node_id, ui in outputs.items():
            collected.texts.extend({"node_id": node_id, "text": text} for text in output_texts(ui))
            for ref in output_files(ui):
                item = _file(rt, node_id, ref, space, seen)
                if item is not None:
                    collected.files.append(item)
    except BaseException:
        collected.discard_scratch()
        raise
    return collected


def mime_type(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return MIME_TYPES.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _file(
    rt: Runtime, node_id: str, ref: FileRef, space: JobSpace, seen: set[tuple[str, str, str]]
) -> OutputFile | None:
    if ref.type == "temp" and not rt.config.include_temp_outputs:
        return None
    if (ref.type, ref.subfolder, ref.filename) in seen:  # a cached re-run lists the same file again
        return None
    seen.add((ref.type, ref.subfolder, ref.filename))
    item = OutputFile(
        node_id,
        ref.filename,
        ref.subfolder,
        space.public_subfolder(ref.subfolder),
        ref.type,
        mime_type(ref.filename),
        Path(),
        0,
    )
    path = rt.config.layout.real_path(ref.type, ref.subfolder, ref.filename)
    if path is None:
        raise _missing(item, "its path leaves the worker's folder")
    try:
        return replace(item, path=path, size=path.stat().st_size)
    except OSError:
        return _fetch_view(rt, item)


def _fetch_view(rt: Runtime, item: OutputFile) -> OutputFile:
    """The file that is not on disk where expected, copied from GET /view into a scratch file."""
    try:
        response = rt.comfy.view(item.filename, item.comfy_subfolder, item.kind)
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
    return replace(item, path=Path(name), size=os.path.getsize(name), scratch=True)


def _missing(item: OutputFile, why: str) -> JobError:
    return JobError(
        Reason.INTERNAL,
        f"The output {item.display_name} of node {item.node_id} cannot be read: {why}",
        {"filename": item.filename, "subfolder": item.subfolder, "type": item.kind},
    )
