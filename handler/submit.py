"""Step 3: queue the workflow with POST /prompt, and explain a rejection in plain words.

ComfyUI answers 400 with `node_errors` when the graph does not validate. Each error becomes
one sentence naming the node, its class and the input; for a choice input (a model file,
an input image) it also lists the values ComfyUI would accept, from /object_info/{class}.
"""

from __future__ import annotations

import uuid
from typing import Any

from worker_common.comfy_client import ComfyClient, ComfyError, ComfyHTTPError

from .context import JobContext
from .errors import JobError, Reason
from .runtime import Runtime
from .validate import JobInput

MAX_LISTED_OPTIONS = 25
# An input ComfyUI does not know: nodes ignore it, but it is part of their cache key.
RERUN_INPUT = "_comfy_worker_run"
_CHOICE_ERRORS = ("value_not_in_list", "custom_validation_failed")
# Errors whose details mean little without their message ("Dependency cycle detected: 1 -> 2 -> 1").
_MESSAGE_FIRST = ("dependency_cycle", "exception_during_validation", "exception_during_inner_validation")


def queue(rt: Runtime, ctx: JobContext, client_id: str, job_input: JobInput) -> str:
    """Queue the workflow for `client_id`'s socket; returns its prompt id."""
    prompt_id = str(uuid.uuid4())
    api_key = job_input.api_key or rt.config.comfy_org_api_key
    extra_data = {"api_key_comfy_org": api_key} if api_key else None
    workflow = rerun_outputs(job_input.workflow, prompt_id) if rt.config.cleanup_outputs else job_input.workflow
    try:
        rt.comfy.queue_prompt(workflow, client_id, prompt_id, extra_data)
    except ComfyHTTPError as error:
        if error.status == 400 and isinstance(error.json(), dict):
            raise rejection(rt.comfy, error.json(), job_input.workflow) from None
        raise rt.comfy_failure(error, "queueing the workflow") from error
    except ComfyError as error:
        raise rt.comfy_failure(error, "queueing the workflow") from error
    ctx.prompt_id = prompt_id
    return prompt_id


def rerun_outputs(workflow: dict[str, Any], token: str) -> dict[str, Any]:
    """The workflow with a unique input on its leaf nodes (the output nodes), so they run again.

    ComfyUI caches output nodes too: an identical re-submission (a retry) would list the
    files of the earlier run, which clean-up has deleted. A new value in the cache key makes
    just those nodes run again; everything upstream (model loads, sampling) stays cached.
    """
    linked = {value[0] for node in workflow.values() for value in node.get("inputs", {}).values() if _is_link(value)}
    return {
        node_id: node if node_id in linked else {**node, "inputs": {**node.get("inputs", {}), RERUN_INPUT: token}}
        for node_id, node in workflow.items()
    }


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def rejection(comfy: ComfyClient, body: dict[str, Any], workflow: dict[str, Any]) -> JobError:
    """The JobError for ComfyUI's 400 answer to /prompt."""
    options = _OptionLookup(comfy)
    problems = []
    for node_id, entry in (body.get("node_errors") or {}).items():
        class_type = entry.get("class_type") or workflow.get(node_id, {}).get("class_type", "?")
        for error in entry.get("errors") or []:
            problems.append(_node_problem(str(node_id), class_type, error, options, workflow))
    if not problems:
        problems.append(_top_level_problem(body.get("error") or {}))
    sentences = [problem["message"] for problem in problems]
    message = "ComfyUI rejected the workflow: " + "; ".join(sentences)
    return JobError(Reason.VALIDATION, message, {"node_errors": problems})


def _top_level_problem(error: dict[str, Any]) -> dict[str, Any]:
    text = error.get("message") or "the workflow is not valid"
    if error.get("details"):
        text += f" ({error['details']})"
    return {"type": error.get("type", ""), "message": text}


def _node_problem(
    node_id: str, class_type: str, error: dict[str, Any], options: _OptionLookup, workflow: dict[str, Any]
) -> dict[str, Any]:
    extra = error.get("extra_info") or {}
    input_name = extra.get("input_name")
    problem: dict[str, Any] = {"node_id": node_id, "class_type": class_type, "type": error.get("type", "")}
    where = f"node {node_id} ({class_type})"
    if input_name:
        problem["input"] = input_name
    if error.get("type") == "required_input_missing" and input_name:
        problem["message"] = f"{where}: required input '{input_name}' is missing"
        return problem
    missing = _missing_links(workflow.get(node_id) or {}, workflow)
    if error.get("type") == "exception_during_validation" and missing:
        problem["message"] = f"{where}: {missing}"
        return problem
    text = f"{where}: {_error_text(error, input_name, extra)}"
    available = options.get(class_type, input_name) if error.get("type") in _CHOICE_ERRORS else None
    if available is not None:
        problem["available"] = available
        text += f"; available: {_listing(available)}"
    problem["message"] = text
    return problem


def _error_text(error: dict[str, Any], input_name: str | None, extra: dict[str, Any]) -> str:
    """One phrase: "width: Value 0 smaller than min of 1", "image: Invalid image file: x.png"…"""
    kind = error.get("type")
    if kind == "value_not_in_list" and input_name and "received_value" in extra:
        return f"{input_name} {extra['received_value']!r} not found"
    message = str(error.get("message") or kind or "invalid")
    details = str(error.get("details") or "")
    if input_name:
        for separator in (": ", " - "):
            details = details.removeprefix(input_name + separator)
        if details == input_name:
            details = ""
    if kind in _MESSAGE_FIRST and details:
        exception = extra.get("exception_type")
        text = f"{message}: {exception + ' ' if exception else ''}{details}"
    else:
        text = details or message
    return f"{input_name}: {text}" if input_name else text


def _missing_links(node: dict[str, Any], workflow: dict[str, Any]) -> str:
    """ "input 'images' links to node 99, which is not in the workflow" for each such link, joined."""
    inputs = node.get("inputs") or {}
    dangling = [(name, value[0]) for name, value in inputs.items() if _is_link(value) and value[0] not in workflow]
    return "; ".join(
        f"input '{name}' links to node {target}, which is not in the workflow" for name, target in dangling
    )


def _listing(values: list[str]) -> str:
    if not values:
        return "none (ComfyUI lists no values for it)"
    shown = ", ".join(str(value) for value in values[:MAX_LISTED_OPTIONS])
    more = len(values) - MAX_LISTED_OPTIONS
    return shown + (f" … and {more} more" if more > 0 else "")


class _OptionLookup:
    """The values a choice input accepts, from /object_info/{class}, asked once per class."""

    def __init__(self, comfy: ComfyClient) -> None:
        self.comfy = comfy
        self._infos: dict[str, dict[str, Any]] = {}

    def get(self, class_type: str, input_name: str | None) -> list[str] | None:
        if not input_name:
            return None
        if class_type not in self._infos:
            try:
                self._infos[class_type] = self.comfy.object_info(class_type).get(class_type, {})
            except ComfyError:
                self._infos[class_type] = {}
        inputs = self._infos[class_type].get("input") or {}
        spec = (inputs.get("required") or {}).get(input_name) or (inputs.get("optional") or {}).get(input_name)
        return _choices(spec)


def _choices(spec: Any) -> list[str] | None:
    """The options of a COMBO input spec: old form [[...], {...}] or new form ["COMBO", {"options": [...]}]."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options") or [])
    return None
