"""ComfyUI's protocol, read in one place: what its answers and frames mean, in 0.3.64, 0.38.1 and 0.47.1.

The handler and the sidecar's warm-up both parse ComfyUI's answers through this module:
rejections of POST /prompt, execution errors and interrupts (WebSocket frames and /history
entries), output entries, the `/api/jobs` job objects of newer releases, and the version
features. The differences between releases (docs/comfyui-versions.md) are absorbed here:

- an unknown node class is `invalid_prompt` in 0.3.64 and `missing_node_type` in 0.38.1;
- output file entries may carry extra keys (`metadata`, `id`, `preview_id`) and live under any
  key (`images`, `audio`, `3d`, `latents`, `gifs`...), next to non-file lists (`animated`,
  `result`, `text`);
- `/api/jobs/{id}` (0.6.0+) and `/api/jobs/{id}/cancel` (0.26.0+) exist only in newer releases;
- 0.47.1 gives a loopback WebSocket a `credential_key` in its first `status` frame, and lets a new
  socket take over a live one of the same clientId only if it first presents that key
  (`credential_auth`); it answers a POST /prompt whose prompt_id it already has with 409.
  Both are recognised by what ComfyUI sends, not by version number, so any later release
  that keeps them works too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# WebSocket message types (server.py send_sync).
EXECUTION_START = "execution_start"
EXECUTION_CACHED = "execution_cached"
EXECUTING = "executing"
EXECUTED = "executed"
PROGRESS = "progress"
EXECUTION_ERROR = "execution_error"
EXECUTION_INTERRUPTED = "execution_interrupted"
STATUS = "status"
CREDENTIAL_AUTH = "credential_auth"  # 0.47.1: the first message that presents a socket's key

# The input through which save nodes take the path of their outputs, below the output folder.
PREFIX_INPUT = "filename_prefix"

# Validation error types that mean "this node class does not exist" (0.3.64, 0.38.1).
MISSING_CLASS_TYPES = frozenset({"invalid_prompt", "missing_node_type"})
_MISSING_CLASS_0364 = re.compile(r"Cannot execute because node (?P<name>.+) does not exist\.")
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")

JOBS_API_SINCE = (0, 6, 0)
TARGETED_CANCEL_SINCE = (0, 26, 0)


# -- versions ----------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a ComfyUI version string such as "0.38.1", else None."""
    match = _VERSION.search(text or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


@dataclass(frozen=True)
class Features:
    """What the running ComfyUI offers, from `/system_stats` (`system.comfyui_version`)."""

    version: str
    jobs_api: bool = False  # GET /api/jobs/{id}
    targeted_cancel: bool = False  # POST /api/jobs/{id}/cancel

    @classmethod
    def from_system_stats(cls, stats: Any) -> Features:
        system = stats.get("system") if isinstance(stats, dict) else None
        version = str((system or {}).get("comfyui_version") or "unknown")
        number = parse_version(version)
        if number is None:
            return cls(version)
        return cls(version, jobs_api=number >= JOBS_API_SINCE, targeted_cancel=number >= TARGETED_CANCEL_SINCE)


# -- rejections of POST /prompt --------------------------------------------------------------


@dataclass(frozen=True)
class ValidationError:
    """One error of a 400 answer to POST /prompt: a node's, or the top-level one."""

    type: str
    message: str
    details: str
    extra_info: dict[str, Any]
    node_id: str | None = None
    class_type: str | None = None

    @property
    def input_name(self) -> str | None:
        name = self.extra_info.get("input_name")
        return str(name) if name else None

    @property
    def missing_class(self) -> str | None:
        """The node class this error says does not exist, else None."""
        if self.type not in MISSING_CLASS_TYPES:
            return None
        if self.extra_info.get("class_type"):
            return str(self.extra_info["class_type"])
        match = _MISSING_CLASS_0364.search(self.message)
        return match["name"] if match else None

    @property
    def missing_node_id(self) -> str | None:
        """The node id of a missing-class error ("Node ID '#1'" in the details, or extra_info)."""
        if self.extra_info.get("node_id") is not None:
            return str(self.extra_info["node_id"])
        match = re.search(r"#([^']+)'", self.details)
        return match[1] if match else None


@dataclass(frozen=True)
class Rejection:
    """ComfyUI's 400 answer to POST /prompt."""

    error: ValidationError
    node_errors: list[ValidationError] = field(default_factory=list)

    @classmethod
    def from_body(cls, body: Any) -> Rejection | None:
        """The rejection in a 400 body, or None when the body is not one (not JSON, no `error`)."""
        if not isinstance(body, dict) or not isinstance(body.get("error", {}), dict):
            return None
        top = _validation_error(body.get("error") or {})
        nodes = []
        for node_id, entry in (body.get("node_errors") or {}).items():
            if not isinstance(entry, dict):
                continue
            for error in entry.get("errors") or []:
                if isinstance(error, dict):
                    nodes.append(_validation_error(error, str(node_id), entry.get("class_type")))
        return cls(top, nodes)


def _validation_error(error: dict[str, Any], node_id: str | None = None, class_type: Any = None) -> ValidationError:
    extra = error.get("extra_info")
    return ValidationError(
        type=str(error.get("type") or ""),
        message=str(error.get("message") or ""),
        details=str(error.get("details") or ""),
        extra_info=extra if isinstance(extra, dict) else {},
        node_id=node_id,
        class_type=str(class_type) if class_type else None,
    )


def is_duplicate_prompt(status: int, body: Any) -> bool:
    """0.47.1's answer to a prompt_id it already has (queued, running or finished): 409.

    The worker's prompt ids are uuid4s chosen per job, so this means an earlier attempt of the
    same job reached ComfyUI: the prompt is queued.
    """
    return status == 409 and isinstance(body, dict) and body.get("error") == "prompt_id already exists"


# -- the WebSocket's credential key (0.47.1) --------------------------------------------------


def credential_key(message: Any) -> str | None:
    """The `credential_key` of a `status` frame (0.47.1, to a loopback peer), else None."""
    if not isinstance(message, dict) or message.get("type") != STATUS:
        return None
    key = (message.get("data") or {}).get("credential_key")
    return key if isinstance(key, str) and key else None


def credential_auth(key: str) -> str:
    """The first message a reconnecting socket sends: ComfyUI refuses (1008) a socket that takes
    over a live one of the same clientId without it, and skips it on a fresh connection."""
    return json.dumps({"type": CREDENTIAL_AUTH, "data": {"credential_key": key}})


# -- execution outcome ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionFailure:
    """An `execution_error` or `execution_interrupted` payload (WebSocket frame or /history message)."""

    interrupted: bool
    node_id: str | None
    node_type: str | None
    exception_type: str = ""
    exception_message: str = ""
    traceback: list[str] = field(default_factory=list)

    @classmethod
    def from_message(cls, kind: str, data: Any) -> ExecutionFailure:
        data = data if isinstance(data, dict) else {}
        node_id = data.get("node_id")
        traceback = data.get("traceback")
        return cls(
            interrupted=kind == EXECUTION_INTERRUPTED,
            node_id=None if node_id is None else str(node_id),
            node_type=data.get("node_type"),
            exception_type=str(data.get("exception_type") or ""),
            exception_message=str(data.get("exception_message") or "").strip(),
            traceback=[str(line) for line in traceback] if isinstance(traceback, list) else [],
        )

    @property
    def where(self) -> str:
        return f"node {self.node_id} ({self.node_type or '?'})"

    def summary(self) -> str:
        """One line: "node 3 (KSampler) raised RuntimeError: CUDA out of memory"."""
        if self.interrupted:
            return f"interrupted at {self.where}"
        return f"{self.where} raised {self.exception_type or 'an error'}: {self.exception_message}"


@dataclass(frozen=True)
class HistoryEntry:
    """A finished prompt's `/history/{id}` entry."""

    status: str  # "success" or "error" (ComfyUI's status_str), "" when ComfyUI gave none
    outputs: dict[str, dict[str, Any]]
    failure: ExecutionFailure | None

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> HistoryEntry:
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        failure = None
        for message in reversed(status.get("messages") or []):
            if isinstance(message, list | tuple) and len(message) == 2 and message[0] in _FAILURES:
                failure = ExecutionFailure.from_message(message[0], message[1])
                break
        outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
        return cls(str(status.get("status_str") or ""), outputs, failure)

    @property
    def failed(self) -> bool:
        return self.status == "error"


_FAILURES = (EXECUTION_ERROR, EXECUTION_INTERRUPTED)


# Job objects of GET /api/jobs/{id} (0.6.0+): the prompt's state while it is queued or running.
JOB_PENDING = "pending"
JOB_RUNNING = "in_progress"
JOB_FINISHED = frozenset({"completed", "failed", "cancelled"})


def job_status(job: Any) -> str | None:
    """The `status` of an /api/jobs job object (pending, in_progress, completed, failed, cancelled)."""
    return str(job.get("status")) if isinstance(job, dict) and job.get("status") else None


# -- outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    """One file entry of a node's outputs: {"filename", "subfolder", "type"} (+ keys we ignore)."""

    filename: str
    subfolder: str
    type: str  # ComfyUI's folder type: output, temp or input


def output_files(ui: Any) -> list[FileRef]:
    """Every file entry of a node's ui outputs, whatever key it is under.

    Non-file items are skipped: `animated` flags, `text` strings, 3D `result` triples (their
    files are listed under `3d` as entries too), nulls.
    """
    files = []
    for key, value in ui.items() if isinstance(ui, dict) else ():
        if key == "text" or not isinstance(value, list):
            continue
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("filename"), str) and item["filename"]:
                files.append(
                    FileRef(item["filename"], str(item.get("subfolder") or ""), str(item.get("type") or "output"))
                )
    return files


def output_texts(ui: Any) -> list[str]:
    """The text outputs of a node (`{"text": [...]}` from PreviewAny, PreviewText)."""
    value = ui.get("text") if isinstance(ui, dict) else None
    values = value if isinstance(value, list) else [value]
    return [str(text) for text in values if text is not None]


# -- node classes (/object_info) ------------------------------------------------------------------

# Input types that hold a value in the workflow (a widget); every other type is a link from a node.
VALUE_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# Inputs ComfyUI's front end treats as seeds (it re-rolls them after each run).
SEED_INPUTS = frozenset({"seed", "noise_seed"})


@dataclass(frozen=True)
class InputSpec:
    """One input of a node class, as `/object_info` declares it: `[type, {options}]` or `[[choices], {options}]`.

    A choice input is `COMBO` whether ComfyUI wrote its choices in the old form (a list in the
    type's place) or the new one (`["COMBO", {"options": [...]}]`).
    """

    name: str
    type: str
    required: bool
    options: dict[str, Any]
    choices: tuple[Any, ...] | None = None

    @classmethod
    def from_spec(cls, name: str, spec: Any, required: bool) -> InputSpec:
        spec = spec if isinstance(spec, list | tuple) and spec else ["*"]
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if isinstance(spec[0], list | tuple):
            return cls(name, "COMBO", required, options, tuple(spec[0]))
        kind = str(spec[0])
        if kind == "COMBO":
            return cls(name, kind, required, options, tuple(options.get("options") or ()))
        return cls(name, kind, required, options)

    @property
    def takes_value(self) -> bool:
        """Whether the input holds a value in the workflow rather than a link from another node."""
        return self.type in VALUE_TYPES and not self.options.get("forceInput") and not self.options.get("rawLink")

    @property
    def names_an_input_file(self) -> bool:
        """Whether the value names a file in ComfyUI's input folder (LoadImage's `image`: an upload flag)."""
        return bool(self.options.get("upload")) or any(
            key.endswith("_upload") and value for key, value in self.options.items()
        )

    @property
    def is_seed(self) -> bool:
        return self.type == "INT" and (bool(self.options.get("control_after_generate")) or self.name in SEED_INPUTS)


def node_inputs(info: Any) -> dict[str, InputSpec]:
    """Every input of a node class's `/object_info` entry, required first, then optional."""
    declared = info.get("input") if isinstance(info, dict) and isinstance(info.get("input"), dict) else {}
    inputs: dict[str, InputSpec] = {}
    for group in ("required", "optional"):
        if isinstance(declared.get(group), dict):
            for name, spec in declared[group].items():
                inputs[str(name)] = InputSpec.from_spec(str(name), spec, group == "required")
    return inputs
