"""A job's own names in the worker's folders, and the workflow rewritten to use them.

Two jobs in flight on one worker (pipelining, or concurrent local API calls) must never see
each other's files, even when they send the same image name or the same `filename_prefix`.
So every job gets a key (`j` + 12 hex digits) and:

- its input files are `<input>/<key>-<name>`: flat, as ComfyUI's loaders list their folder
  (a loader without its own validation only accepts names it lists). A name that would not
  fit the file system's 255 bytes with the key in front, or that ends the way ComfyUI marks
  another folder (` [output]`, ` [temp]`), is stored as `<key>-<hash><extension>` instead;
  errors and the job's answer still show the name the user sent;
- its outputs go to `<output>/<key>/`: every `filename_prefix` becomes `<key>/<prefix>`, so
  ComfyUI's save counter starts afresh per job and no two jobs can write one file;
- every output node gets a hidden input unique to the job, so ComfyUI runs it again instead
  of replaying a cached result whose files an earlier clean-up removed.

Names inside the workflow that refer to input files (the inputs whose spec has an upload flag,
such as LoadImage's `image`) must name one of the job's images, or a file users placed in the
volume's `input/` folder (which is linked into the job's names, read-only); anything else,
including `../` paths, absolute paths and `[output]`/`[temp]` annotations of files that are
not the job's own, is refused before ComfyUI sees it. Checks use real paths, so a symbolic
link cannot lead outside the folder.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from worker_common.comfy_protocol import PREFIX_INPUT
from worker_common.layout import Layout

from .catalog import Catalog
from .errors import JobError, Reason

RERUN_INPUT = "_comfy_worker_run"
MAX_LISTED_FILES = 25
MAX_WALKED_FILES = 1000  # of the volume's input folder, for an error's list of usable files
MAX_NAME_BYTES = 255
_OTHER_FOLDERS = (" [output]", " [temp]")
_INPUT_ANNOTATION = " [input]"
HASHED_NAME_CHARS = 16  # hex digits of a stored name's hash
MAX_KEPT_EXTENSION = 16  # bytes of the user's extension kept on a hashed name (".png")


@dataclass(frozen=True)
class JobSpace:
    """The names one job owns in the worker's folders."""

    key: str
    layout: Layout
    # Stored names that are not `<key>-<name>` (hashed), and the user's name for each.
    hashed: dict[str, str] = field(default_factory=dict, compare=False)
    images: set[str] = field(default_factory=set, compare=False)  # the job's own files (input.images)

    @classmethod
    def new(cls, layout: Layout) -> JobSpace:
        return cls(f"j{uuid.uuid4().hex[:12]}", layout)

    def input_name(self, name: str) -> str:
        """The name ComfyUI's loaders get for the job's file `name` (a relative path)."""
        plain = f"{self.key}-{name}"
        if not name.endswith(_OTHER_FOLDERS) and all(_fits(part) for part in plain.split("/")):
            return plain
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:HASHED_NAME_CHARS]
        stored = f"{self.key}-{digest}{_extension(name)}"
        self.hashed[stored] = name
        return stored

    def input_path(self, name: str) -> Path:
        return self.layout.input / self.input_name(name)

    @property
    def output_dir(self) -> Path:
        return self.layout.output / self.key

    def output_prefix(self, prefix: str) -> str:
        return f"{self.key}/{prefix}"

    def public_subfolder(self, subfolder: str) -> str:
        """An output's subfolder as the user named it: without the job's own folder."""
        parts = PurePosixPath(subfolder).parts
        return "/".join(parts[1:]) if parts[:1] == (self.key,) else subfolder

    def owns_input(self, entry_name: str) -> bool:
        return entry_name.startswith(f"{self.key}-")

    def unmask(self, text: str) -> str:
        """`text` (an error from ComfyUI) with the job's own names shown as the user wrote them."""
        for stored, name in self.hashed.items():
            text = text.replace(stored, name)
        return text.replace(f"{self.key}-", "").replace(f"{self.key}/", "")

    def usable_inputs(self) -> list[str]:
        """What a file input of this job may name: its own files (the user's names), then the volume's."""
        return sorted(self.images) + shared_files(self.layout.shared_input)


@dataclass
class PreparedWorkflow:
    """The workflow as ComfyUI gets it, and what the job must put in place first."""

    workflow: dict[str, Any]
    intermediate_nodes: frozenset[str]  # nodes of known classes that are not output nodes
    shared_links: dict[str, Path] = field(default_factory=dict)  # job input name -> file on the volume


def prepare(
    workflow: dict[str, Any], space: JobSpace, images: set[str], catalog: Catalog, timeout_s: float
) -> PreparedWorkflow:
    """Rewrite the workflow into the job's names; raises JobError(invalid_input) listing every problem."""
    space.images.update(images)
    rewriter = _Rewriter(space, images, space.layout.shared_input)
    rewritten: dict[str, Any] = {}
    intermediate = set()
    for node_id, node in workflow.items():
        node_class = catalog.get(str(node.get("class_type")), timeout_s)
        inputs = dict(node.get("inputs") or {})
        for name, value in inputs.items():
            if isinstance(value, str):
                inputs[name] = rewriter.value(
                    f"node {node_id} ({node_class.name}) input '{name}'", name, value, name in node_class.file_inputs
                )
        if node_class.output_node:
            inputs[RERUN_INPUT] = space.key
        elif node_class.known:
            intermediate.add(str(node_id))
        rewritten[node_id] = {**node, "inputs": inputs}
    if rewriter.problems:
        problems = rewriter.problems
        message = problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems)
        raise JobError(Reason.INVALID_INPUT, f"Invalid input: input.workflow {message}", {"problems": problems})
    return PreparedWorkflow(rewritten, frozenset(intermediate), rewriter.links)


class _Rewriter:
    def __init__(self, space: JobSpace, images: set[str], shared_input: Path) -> None:
        self.space = space
        self.images = images
        self.shared_input = shared_input
        self.problems: list[str] = []
        self.links: dict[str, Path] = {}

    def value(self, where: str, input_name: str, value: str, names_a_file: bool) -> str:
        if input_name == PREFIX_INPUT:
            return self._prefix(where, value)
        name = value.removesuffix(_INPUT_ANNOTATION)
        if name in self.images:
            return self.space.input_name(name)
        if not names_a_file or not value:
            return value
        return self._input_file(where, value, name)

    def _prefix(self, where: str, prefix: str) -> str:
        parts = PurePosixPath(prefix).parts
        if prefix.startswith("/") or ".." in parts:
            self.problems.append(
                f"{where}: {prefix!r} must stay inside the output folder: use a relative prefix without '..'"
            )
            return prefix
        return self.space.output_prefix(prefix)

    def _input_file(self, where: str, value: str, name: str) -> str:
        if value.endswith(_OTHER_FOLDERS):
            self.problems.append(
                f"{where}: {value!r} reads ComfyUI's output or temp folder, which jobs may not read: "
                "send the file in input.images instead"
            )
            return value
        target = self.space.layout.shared_input_file(name)
        if target is None:
            self.problems.append(
                f"{where}: {value!r} is neither one of the job's images (input.images) nor a file in the "
                f"volume's input folder ({self.shared_input}; it has: {_listing(self.shared_input)})"
            )
            return value
        job_name = self.space.input_name(name)
        self.links[job_name] = target
        return job_name


def _fits(name: str) -> bool:
    return len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES


def _extension(name: str) -> str:
    """The extension of `name` (without a folder annotation) when short enough to keep: loaders filter on it."""
    extension = os.path.splitext(name.removesuffix(" [output]").removesuffix(" [temp]"))[1]
    return extension if len(extension.encode("utf-8", "surrogateescape")) <= MAX_KEPT_EXTENSION else ""


def shared_files(folder: Path, most: int = MAX_WALKED_FILES) -> list[str]:
    """Up to `most` files of a folder (relative paths, links not followed)."""
    found: list[str] = []
    for parent, folders, files in os.walk(folder):
        folders.sort()
        found += sorted(os.path.relpath(os.path.join(parent, name), folder) for name in files)
        if len(found) >= most:
            break
    return found[:most]


def _listing(folder: Path) -> str:
    """Up to MAX_LISTED_FILES files of a folder, for an error."""
    found = shared_files(folder, MAX_LISTED_FILES + 1)
    if len(found) > MAX_LISTED_FILES:
        return ", ".join(found[:MAX_LISTED_FILES]) + " … and more"
    return ", ".join(found) if found else "no files"
