"""ComfyUI's protocol, read in one place: what its answers and frames mean, in 0.3.64, 0.38.1 and 0.47.1.

Every reader of ComfyUI's answers (the handler, the sidecar, `status`) parses them through this
module, into typed values: WebSocket frames (`Frame`), rejections of POST /prompt and their
error types, execution errors and interrupts (frames and /history entries), `/queue`
(`QueueState`), `/history` (`HistoryEntry`, `history_prompts`), output entries, node classes
(`/object_info`: `NodeInfo`, `InputSpec`), `/system_stats` (`SystemStats`, `Features`) and the
`/api/jobs` job objects of newer releases. The differences between releases
(docs/comfyui-versions.md) are absorbed here:

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
# Other validation error types the worker explains in its own words (execution.py validate_inputs).
REQUIRED_INPUT_MISSING = "required_input_missing"
VALUE_NOT_IN_LIST = "value_not_in_list"
EXCEPTION_DURING_VALIDATION = "exception_during_validation"
# A value outside the input's choices: the choices are worth listing.
CHOICE_ERROR_TYPES = frozenset({VALUE_NOT_IN_LIST, "custom_validation_failed"})
# Errors whose details mean little without their message ("Dependency cycle detected: 1 -> 2 -> 1").
MESSAGE_FIRST_TYPES = frozenset({"dependency_cycle", EXCEPTION_DURING_VALIDATION, "exception_during_inner_validation"})
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
        version = SystemStats.from_body(stats).version or "unknown"
        number = parse_version(version)
        if number is None:
            return cls(version)
        return cls(version, jobs_api=number >= JOBS_API_SINCE, targeted_cancel=number >= TARGETED_CANCEL_SINCE)


@dataclass(frozen=True)
class Device:
    """One device of `/system_stats` `devices` (what torch inside ComfyUI sees); None where it says nothing."""

    position: int  # among the devices listed
    index: int | None
    name: str
    vram_total: float | None
    vram_free: float | None
    torch_vram_total: float | None
    torch_vram_free: float | None

    @property
    def label(self) -> str:
        """The device's index as ComfyUI numbers it, else its position in the list."""
        return str(self.index) if self.index is not None else str(self.position)


@dataclass(frozen=True)
class SystemStats:
    """`/system_stats`: ComfyUI's version (`system.comfyui_version`) and its devices."""

    version: str | None
    devices: tuple[Device, ...] = ()

    @classmethod
    def from_body(cls, body: Any) -> SystemStats:
        body = body if isinstance(body, dict) else {}
        system = body.get("system")
        version = system.get("comfyui_version") if isinstance(system, dict) else None
        listed = [device for device in body.get("devices") or [] if isinstance(device, dict)]
        return cls(str(version) if version else None, tuple(_device(position, d) for position, d in enumerate(listed)))


def _device(position: int, device: dict[str, Any]) -> Device:
    index = device.get("index")
    return Device(
        position,
        index if isinstance(index, int) else None,
        str(device.get("name", "")),
        _number(device.get("vram_total")),
        _number(device.get("vram_free")),
        _number(device.get("torch_vram_total")),
        _number(device.get("torch_vram_free")),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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
    def is_choice_error(self) -> bool:
        """A value not among the input's choices (or refused by its own check)."""
        return self.type in CHOICE_ERROR_TYPES

    @property
    def message_first(self) -> bool:
        """Whether the details mean little without the message (a cycle, an exception)."""
        return self.type in MESSAGE_FIRST_TYPES

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


def credential_auth(key: str) -> str:
    """The first message a reconnecting socket sends: ComfyUI refuses (1008) a socket that takes
    over a live one of the same clientId without it, and skips it on a fresh connection."""
    return json.dumps({"type": CREDENTIAL_AUTH, "data": {"credential_key": key}})


# -- WebSocket frames -------------------------------------------------------------------------

# Frames dropped unparsed: progress_state repeats every node's state and grows with the square
# of the graph (tens of MB for wide graphs).
_SKIPPED_TYPES = (b'"progress_state"',)
_TYPE_PREFIX_BYTES = 48
ACTIVITY_TYPE = "__activity__"  # a frame arrived but carries nothing to act on


@dataclass(frozen=True)
class Frame:
    """One message of ComfyUI's WebSocket: its `type` and its `data` ({} when it has none)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, message: Any) -> Frame:
        """The frame of a decoded message; ACTIVITY for anything but a JSON object."""
        if not isinstance(message, dict):
            return ACTIVITY
        data = message.get("data")
        return cls(str(message.get("type")), data if isinstance(data, dict) else {})

    @property
    def prompt_id(self) -> str | None:
        return self.data.get("prompt_id")

    @property
    def node(self) -> Any:
        """The node of `executing`/`executed`/`progress` frames (None: `executing` for the prompt's end)."""
        return self.data.get("node")

    @property
    def ends_prompt(self) -> bool:
        """`executing` with node null: ComfyUI finished the frame's prompt."""
        return self.type == EXECUTING and self.node is None

    @property
    def failure(self) -> ExecutionFailure | None:
        """The failure an `execution_error` or `execution_interrupted` frame carries, else None."""
        return ExecutionFailure.from_message(self.type, self.data) if self.type in _FAILURES else None

    @property
    def credential_key(self) -> str | None:
        """The `credential_key` of a `status` frame (0.47.1, to a loopback peer), else None."""
        key = self.data.get("credential_key") if self.type == STATUS else None
        return key if isinstance(key, str) and key else None


ACTIVITY = Frame(ACTIVITY_TYPE)
ACTIVITY_MESSAGE: dict[str, Any] = {"type": ACTIVITY_TYPE}


def decode_message(text: bytes) -> dict[str, Any]:
    """A text message as JSON; ACTIVITY_MESSAGE for one skipped unread or that is not a JSON object."""
    if any(kind in text[:_TYPE_PREFIX_BYTES] for kind in _SKIPPED_TYPES):
        return ACTIVITY_MESSAGE
    try:
        message = json.loads(text)
    except ValueError:
        return ACTIVITY_MESSAGE
    return message if isinstance(message, dict) else ACTIVITY_MESSAGE


def credential_key(message: Any) -> str | None:
    """The `credential_key` of a decoded `status` message (0.47.1, to a loopback peer), else None."""
    return Frame.from_message(message).credential_key


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


# -- the queue (/queue) and the prompts in /history --------------------------------------------


@dataclass(frozen=True)
class QueuedPrompt:
    """A /queue item or a /history entry's `prompt`: `[number, prompt_id, prompt, extra_data, outputs]`."""

    prompt_id: str
    prompt: dict[str, Any]  # the workflow as ComfyUI runs it ({} when the item has none)

    @classmethod
    def from_item(cls, item: Any) -> QueuedPrompt | None:
        if not isinstance(item, list) or len(item) < 3 or not isinstance(item[1], str):
            return None
        return cls(item[1], item[2] if isinstance(item[2], dict) else {})


@dataclass(frozen=True)
class QueueState:
    """`/queue`: the prompts running and waiting; the counts are of the lists as ComfyUI sent them."""

    running: tuple[QueuedPrompt, ...] = ()
    pending: tuple[QueuedPrompt, ...] = ()
    running_count: int = 0
    pending_count: int = 0

    @classmethod
    def from_body(cls, body: Any) -> QueueState | None:
        """The queue, or None when the body is not a JSON object."""
        if not isinstance(body, dict):
            return None
        running, pending = body.get("queue_running") or [], body.get("queue_pending") or []
        return cls(_prompts(running), _prompts(pending), len(running), len(pending))

    @property
    def prompts(self) -> tuple[QueuedPrompt, ...]:
        return self.running + self.pending

    @property
    def busy(self) -> bool:
        return bool(self.running_count or self.pending_count)

    def is_running(self, prompt_id: str) -> bool:
        return any(prompt.prompt_id == prompt_id for prompt in self.running)

    def is_pending(self, prompt_id: str) -> bool:
        return any(prompt.prompt_id == prompt_id for prompt in self.pending)


def _prompts(items: Any) -> tuple[QueuedPrompt, ...]:
    parsed = (QueuedPrompt.from_item(item) for item in (items if isinstance(items, list) else ()))
    return tuple(prompt for prompt in parsed if prompt is not None)


def history_prompts(body: Any) -> list[QueuedPrompt]:
    """The prompts of every entry of `GET /history` (a finished prompt's entry keeps its queue item)."""
    entries = body.values() if isinstance(body, dict) else ()
    parsed = (QueuedPrompt.from_item(entry.get("prompt")) for entry in entries if isinstance(entry, dict))
    return [prompt for prompt in parsed if prompt is not None]


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


@dataclass(frozen=True)
class NodeInfo:
    """A node class's `/object_info/{class}` entry: whether it is an output node, and its inputs."""

    output_node: bool
    inputs: dict[str, InputSpec]

    @classmethod
    def from_entry(cls, info: Any) -> NodeInfo | None:
        """The node class, or None when the entry is not one (ComfyUI has no such class)."""
        if not isinstance(info, dict):
            return None
        return cls(bool(info.get("output_node")), node_inputs(info))


def is_model_loader(class_type: str) -> bool:
    """A node that loads model files: ComfyUI's are named so (CheckpointLoaderSimple, UNETLoader, VAELoader,
    LoraLoader, CLIPLoader, ControlNetLoader, UpscaleModelLoader...), and custom nodes follow them."""
    return "Loader" in class_type


def node_inputs(info: Any) -> dict[str, InputSpec]:
    """Every input of a node class's `/object_info` entry, required first, then optional."""
    declared = info.get("input") if isinstance(info, dict) and isinstance(info.get("input"), dict) else {}
    inputs: dict[str, InputSpec] = {}
    for group in ("required", "optional"):
        if isinstance(declared.get(group), dict):
            for name, spec in declared[group].items():
                inputs[str(name)] = InputSpec.from_spec(str(name), spec, group == "required")
    return inputs
