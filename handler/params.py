"""A job's `"params"`: values for inputs of its workflow, checked against `/object_info` before ComfyUI sees them.

Keys are `NODE.INPUT`, where NODE is a node id (`"6.text"`) or a node's title (`_meta.title`,
as ComfyUI writes it in API format: `"Positive prompt.text"`); a title shared by several nodes
is refused, naming them. The input is split off at the last dot, so titles may hold dots.

Each value is checked as ComfyUI's own validation would (execution.validate_inputs), and
more strictly where ComfyUI converts silently: an INT must be an integer (7.0 is taken as 7,
"7" is refused), within min and max and on its step counted from min; a FLOAT a finite number
within min and max (its step is only the front end's slider increment: ComfyUI takes any
float, and so does this); a STRING a string; a BOOLEAN true or false; a choice one of its
options. An input that names an input file (LoadImage's `image`) must name one of the job's
images or a file in the volume's input folder, as in a workflow (namespace.py).

A parameter sets a value, never a structure: a list or object as a value (a list
`[node, output]` is a link in ComfyUI's format) is refused, an input that takes a link
(IMAGE, MODEL...) cannot be set, and an input that is linked to another node in the workflow
is refused rather than cut loose (the link is part of the workflow's design). Nodes are never
added: only the workflow's own nodes can be named.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker_common.comfy_protocol import InputSpec

from .catalog import Catalog, NodeClass
from .errors import JobError, Reason
from .validate import _kind

MAX_LISTED = 40  # parameters or options named in one error
SHARED = "in the volume's input folder"
MISSING = object()  # an input the workflow does not set (an optional one)


@dataclass(frozen=True)
class Parameter:
    """One input of the workflow a job may set."""

    node_id: str
    input: str
    class_type: str
    title: str | None  # the node's _meta.title, when it has one
    title_unique: bool
    spec: InputSpec
    value: Any  # the workflow's own value (MISSING when it sets none)

    @property
    def key(self) -> str:
        return f"{self.node_id}.{self.input}"

    @property
    def title_key(self) -> str | None:
        return f"{self.title}.{self.input}" if self.title and self.title_unique else None


def parameters(workflow: dict[str, Any], catalog: Catalog, timeout_s: float) -> list[Parameter]:
    """Every input of the workflow that holds a value (not a link), node by node."""
    titles = _titles(workflow)
    found = []
    for node_id in sorted(workflow, key=_node_order):
        node = workflow[node_id]
        node_class = catalog.get(str(node.get("class_type")), timeout_s)
        inputs = node.get("inputs") or {}
        title = _title(node)
        for spec in (node_class.inputs or {}).values():
            value = inputs.get(spec.name, MISSING)
            if spec.takes_value and not is_link(value):
                unique = title is not None and len(titles.get(title, [])) == 1
                found.append(Parameter(str(node_id), spec.name, node_class.name, title, unique, spec, value))
    return found


def apply(
    workflow: dict[str, Any],
    params: Any,
    catalog: Catalog,
    timeout_s: float,
    file_ok: Callable[[str], bool],
) -> dict[str, Any]:
    """The workflow with `params` set; raises JobError(invalid_input) listing every problem, nothing changed."""
    if params is None or params == {}:
        return workflow
    if not isinstance(params, dict):
        raise _invalid([f"input.params must be an object of 'NODE.INPUT': value; got {_kind(params)}"], [])
    setter = _Setter(workflow, catalog, timeout_s, file_ok)
    for key, value in params.items():
        setter.set(key, value)
    if setter.problems:
        raise _invalid(setter.problems, parameters(workflow, catalog, timeout_s))
    return setter.result


class _Setter:
    def __init__(self, workflow: dict[str, Any], catalog: Catalog, timeout_s: float, file_ok: Callable[[str], bool]):
        self.workflow = workflow
        self.catalog = catalog
        self.timeout_s = timeout_s
        self.file_ok = file_ok
        self.titles = _titles(workflow)
        self.result = dict(workflow)
        self.problems: list[str] = []
        self.set_by: dict[tuple[str, str], str] = {}

    def set(self, key: Any, value: Any) -> None:
        where = f"input.params[{key!r}]"
        target = self._target(where, key)
        if target is None:
            return
        node_id, node_class, spec = target
        if (node_id, spec.name) in self.set_by:
            self.problems.append(f"{where} sets the same input as input.params[{self.set_by[node_id, spec.name]!r}]")
            return
        self.set_by[node_id, spec.name] = key
        where = f"{where} (node {node_id} {node_class.name}, input '{spec.name}')"
        current = (self.workflow[node_id].get("inputs") or {}).get(spec.name, MISSING)
        if is_link(current):
            self.problems.append(
                f"{where}: that input is linked to node {current[0]}'s output {current[1]} in the workflow; "
                "a parameter sets values only, it never replaces a link"
            )
            return
        if not spec.takes_value:
            self.problems.append(
                f"{where} takes a link from another node ({spec.type}), not a value: it cannot be a parameter"
            )
            return
        checked, problem = check_value(spec, value, self.file_ok)
        if problem:
            self.problems.append(f"{where}: {problem}")
            return
        node = self.result[node_id]
        self.result[node_id] = {**node, "inputs": {**(node.get("inputs") or {}), spec.name: checked}}

    def _target(self, where: str, key: Any) -> tuple[str, NodeClass, InputSpec] | None:
        if not isinstance(key, str) or "." not in key.strip(".") or key.endswith("."):
            self.problems.append(f"{where}: a key is NODE.INPUT, a node id or title, a dot, an input name ('6.text')")
            return None
        node_ref, input_name = key.rsplit(".", 1)
        node_id = self._node(where, node_ref)
        if node_id is None:
            return None
        node_class = self.catalog.get(str(self.workflow[node_id].get("class_type")), self.timeout_s)
        if not node_class.known:
            self.problems.append(
                f"{where}: node {node_id}'s class {node_class.name!r} is not known to ComfyUI, "
                "so its inputs cannot be checked"
            )
            return None
        spec = (node_class.inputs or {}).get(input_name)
        if spec is None:
            own = [name for name, spec in (node_class.inputs or {}).items() if spec.takes_value]
            self.problems.append(
                f"{where}: node {node_id} ({node_class.name}) has no input {input_name!r}; "
                f"its inputs that take values: {_listing(own) or 'none'}"
            )
            return None
        return node_id, node_class, spec

    def _node(self, where: str, node_ref: str) -> str | None:
        if node_ref in self.workflow:
            return node_ref
        titled = self.titles.get(node_ref, [])
        if len(titled) == 1:
            return titled[0]
        if titled:
            self.problems.append(
                f"{where}: the title {node_ref!r} is not unique: nodes {', '.join(titled)} have it; "
                "name the node by its id instead"
            )
            return None
        self.problems.append(f"{where}: the workflow has no node with the id or title {node_ref!r}")
        return None


def check_value(spec: InputSpec, value: Any, file_ok: Callable[[str], bool]) -> tuple[Any, str | None]:
    """(the value as ComfyUI gets it, None) or (None, what is wrong and what is accepted)."""
    given = f"got {_shown(value)}"
    if isinstance(value, list | dict):
        return None, f"{given}; a parameter is one value (a list [node, output] would be a link, which it cannot make)"
    if value is None:
        return None, f"{given}; give a value"
    if spec.names_an_input_file:
        if isinstance(value, str) and file_ok(value):
            return value, None
        return None, f"{given}; give the name of one of the job's images (input.images) or of a file {SHARED}"
    checker = _CHECKS.get(spec.type)
    return checker(spec, value, given) if checker else (None, f"inputs of type {spec.type} cannot be set")


def _int(spec: InputSpec, value: Any, given: str) -> tuple[Any, str | None]:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None, f"{given}; an integer (INT) is accepted{_range(spec)}"
    problem = _range_problem(spec, value, given)
    step = spec.options.get("step")
    if problem is None and isinstance(step, int) and step > 1 and (value - _number(spec, "min", 0)) % step:
        problem = f"{given}; it must be {_number(spec, 'min', 0)} plus a multiple of the step {step}"
    return (None, problem) if problem else (value, None)


def _float(spec: InputSpec, value: Any, given: str) -> tuple[Any, str | None]:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"{given}; a finite number (FLOAT) is accepted{_range(spec)}"
    problem = _range_problem(spec, value, given)
    return (None, problem) if problem else (value, None)


def _string(spec: InputSpec, value: Any, given: str) -> tuple[Any, str | None]:
    return (value, None) if isinstance(value, str) else (None, f"{given}; a string (STRING) is accepted")


def _boolean(spec: InputSpec, value: Any, given: str) -> tuple[Any, str | None]:
    return (value, None) if isinstance(value, bool) else (None, f"{given}; true or false (BOOLEAN) is accepted")


def _choice(spec: InputSpec, value: Any, given: str) -> tuple[Any, str | None]:
    choices = spec.choices or ()
    if not isinstance(value, bool) and value in choices:
        return value, None
    offered = _listing([str(choice) for choice in choices]) if choices else "none (ComfyUI lists no options)"
    return None, f"{given}, which is not one of the options: {offered}"


_CHECKS = {"INT": _int, "FLOAT": _float, "STRING": _string, "BOOLEAN": _boolean, "COMBO": _choice}


def _range_problem(spec: InputSpec, value: float, given: str) -> str | None:
    low, high = _number(spec, "min", None), _number(spec, "max", None)
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{given}, out of range{_range(spec)}"
    return None


def _range(spec: InputSpec) -> str:
    low, high = _number(spec, "min", None), _number(spec, "max", None)
    if low is None and high is None:
        return ""
    return f" from {'-inf' if low is None else low} to {'inf' if high is None else high}"


def _number(spec: InputSpec, key: str, default: Any) -> Any:
    value = spec.options.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else default


def is_link(value: Any) -> bool:
    """Whether a workflow input is a link `[node_id, output_index]` (ComfyUI's API format)."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool)


def _titles(workflow: dict[str, Any]) -> dict[str, list[str]]:
    titles: dict[str, list[str]] = {}
    for node_id in sorted(workflow, key=_node_order):
        title = _title(workflow[node_id])
        if title is not None:
            titles.setdefault(title, []).append(str(node_id))
    return titles


def _title(node: dict[str, Any]) -> str | None:
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return title if isinstance(title, str) and title else None


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if str(node_id).isdigit() else (1 << 62, str(node_id))


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" … and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _invalid(problems: list[str], existing: list[Parameter]) -> JobError:
    keys = [parameter.key for parameter in existing]
    titled = [parameter.title_key for parameter in existing if parameter.title_key]
    listing = f" The workflow's parameters: {_listing(keys) or 'none'}" + (
        f" (by title: {_listing(titled)})" if titled else ""
    )
    message = problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems)
    details = {"problems": problems, "parameters": keys, "parameters_by_title": titled}
    return JobError(Reason.INVALID_INPUT, f"Invalid input: {message}.{listing}", details)
