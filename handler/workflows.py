"""Named workflows: API-format `NAME.json` files an operator places on the volume (WORKFLOWS_DIR).

A job names one (`"workflow_name": "portrait"`) instead of sending the graph. Each use reads the
folder afresh, so a file changed or added on the volume counts from the next job on; a file is
parsed again only when its size, mtime or inode changed (many workers read one folder, and the
operator may replace a file at any time: a write through a new file and a rename is seen whole).

A name is a plain file name without `.json`: no folders, no `..`, no hidden files. The file's
real path must lie in the folder, so a symbolic link cannot lead elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from .errors import invalid_input

SUFFIX = ".json"
MAX_FILE_BYTES = 16_000_000  # a workflow of WORKFLOW_MAX_NODES nodes is well under this
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,127}$")


class WorkflowStore:
    """The named workflows in one folder, parsed once per version of each file; shared by job threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._parsed: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Every workflow name in the folder, sorted (files with a usable name only)."""
        try:
            entries = os.listdir(self.folder)
        except OSError:
            return []
        names = (entry[: -len(SUFFIX)] for entry in entries if entry.endswith(SUFFIX))
        return sorted(name for name in names if _NAME.match(name) and self._path(name) is not None)

    def load(self, name: Any, field: str = "input.workflow_name") -> dict[str, Any]:
        """The workflow named `name`; raises JobError(invalid_input) saying what is wrong and what exists."""
        problem = name_problem(name)
        if problem:
            raise invalid_input(f"{field} {problem}")
        path = self._path(name)
        if path is None:
            raise invalid_input(f"{field}: there is no workflow named {name!r} in {self.folder}; {self._listing()}")
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                version = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
                with self._lock:
                    known = self._parsed.get(name)
                if known is not None and known[0] == version:
                    return known[1]
                if stat.st_size > MAX_FILE_BYTES:
                    raise invalid_input(f"{field}: the workflow file {path.name} is over {MAX_FILE_BYTES:,} bytes")
                workflow = json.loads(file.read())
        except OSError as error:
            raise invalid_input(f"{field}: the workflow {name!r} cannot be read: {error.strerror or error}") from None
        except ValueError as error:
            raise invalid_input(f"{field}: the workflow file {path.name} is not valid JSON: {error}") from None
        if not isinstance(workflow, dict):
            raise invalid_input(
                f"{field}: the workflow file {path.name} must hold a JSON object (ComfyUI's API format)"
            )
        with self._lock:
            self._parsed[name] = (version, workflow)
        return workflow

    def _path(self, name: str) -> Path | None:
        """The real path of `name`'s file, when it is a file inside the folder."""
        root = os.path.realpath(self.folder)
        target = os.path.realpath(os.path.join(root, name + SUFFIX))
        inside = os.path.dirname(target) == root
        return Path(target) if inside and os.path.isfile(target) else None

    def _listing(self) -> str:
        names = self.names()
        return (
            f"the workflows there are: {', '.join(names)}" if names else "the folder has no workflows (WORKFLOWS_DIR)"
        )


def resolve(raw: Any, store: WorkflowStore) -> Any:
    """The job's input with the named workflow in `workflow`; `raw` itself when it names none.

    The named workflow is the operator's file: it is checked afterwards like a sent one (validate.py).
    """
    if not isinstance(raw, dict) or "workflow_name" not in raw:
        return raw
    if raw.get("workflow") is not None:
        raise invalid_input(
            "input.workflow and input.workflow_name are both given: send the graph (workflow) or the name of "
            "a workflow on the volume (workflow_name), not both"
        )
    return {**raw, "workflow": store.load(raw["workflow_name"])}


def name_problem(name: Any) -> str | None:
    """Why `name` cannot name a workflow, or None."""
    if not isinstance(name, str) or not name:
        return "must be a workflow's name (a non-empty string), the file name without .json"
    if "/" in name or "\\" in name or ".." in name or "\0" in name:
        return f"{name!r} must be a plain name, without '/', '\\' or '..' (workflows are only read from WORKFLOWS_DIR)"
    if not _NAME.match(name):
        return (
            f"{name!r} is not a workflow name: letters, digits, space, '.', '_', '+' and '-' only, "
            "starting with a letter or digit, at most 128 characters"
        )
    return None
