"""ComfyUI's errors in plain words: a rejected workflow, a failed or interrupted run.

ComfyUI's facts come parsed from worker_common.comfy_protocol; this module phrases them for
the person who sent the job: each problem names the node, its class and the input, lists the
values a choice input accepts, and for a node class that does not exist says whether a custom
node pack failed to import (and why) and which existing classes have a similar name. Names
the handler gave the job's files are shown as the user wrote them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from worker_common.comfy_protocol import (
    EXCEPTION_DURING_VALIDATION,
    REQUIRED_INPUT_MISSING,
    VALUE_NOT_IN_LIST,
    ExecutionFailure,
    Rejection,
    ValidationError,
)

from .catalog import Catalog
from .errors import JobError, Reason

MAX_LISTED_OPTIONS = 25
MAX_SUGGESTIONS = 3
TRACEBACK_LINES = 6

Unmask = Callable[[str], str]  # the user's names for the job's own (namespace.JobSpace.unmask)
FileChoices = Callable[[], list[str]]  # the files a job may name (namespace.JobSpace.usable_inputs)
PackFailures = Callable[[], list[Any]]  # custom node packs that failed to import (worker_common.custom_nodes)


def rejection(
    answer: Rejection,
    workflow: dict[str, Any],
    catalog: Catalog,
    unmask: Unmask,
    pack_failures: PackFailures,
    file_choices: FileChoices = list,
) -> JobError:
    """The JobError for ComfyUI's 400 answer to POST /prompt.

    A file input's accepted values are `file_choices()`, never ComfyUI's list: that is the
    worker's input folder, other jobs' files included.
    """
    problems = [_node_problem(error, catalog, workflow, unmask, file_choices) for error in answer.node_errors]
    if not problems:
        problems.append(_top_level_problem(answer.error, catalog, unmask, pack_failures))
    message = "ComfyUI rejected the workflow: " + "; ".join(problem["message"] for problem in problems)
    return JobError(Reason.VALIDATION, message, {"node_errors": problems})


def _top_level_problem(error: ValidationError, catalog: Catalog, unmask: Unmask, failures: PackFailures) -> dict:
    missing = error.missing_class
    if missing:
        return {
            "type": error.type,
            "node_id": error.missing_node_id,
            "class_type": missing,
            "message": missing_class_text(missing, error.missing_node_id, catalog, failures),
        }
    text = error.message or "the workflow is not valid"
    if error.details:
        text += f" ({error.details})"
    return {"type": error.type, "message": unmask(text)}


def missing_class_text(name: str, node_id: str | None, catalog: Catalog, failures: PackFailures) -> str:
    """ "node 3: there is no node class 'X'; ..." with the import failures and near names."""
    where = f"node {node_id}" if node_id else "a node"
    text = f"{where}: there is no node class {name!r} in this ComfyUI"
    failed = failures()
    if failed:
        listing = "; ".join(f"{pack.name} ({pack.error})" for pack in failed)
        text += f"; custom node packs that failed to import at start-up: {listing}"
    else:
        text += "; no custom node pack failed to import, so the pack that provides it is not installed"
    near = difflib.get_close_matches(name, catalog.names(), n=MAX_SUGGESTIONS, cutoff=0.6)
    if near:
        text += f"; similar classes that exist: {', '.join(near)}"
    return text


def _node_problem(
    error: ValidationError, catalog: Catalog, workflow: dict[str, Any], unmask: Unmask, file_choices: FileChoices
) -> dict:
    node_id = error.node_id or "?"
    class_type = error.class_type or (workflow.get(node_id) or {}).get("class_type", "?")
    problem: dict[str, Any] = {"node_id": node_id, "class_type": class_type, "type": error.type}
    where = f"node {node_id} ({class_type})"
    input_name = error.input_name
    if input_name:
        problem["input"] = input_name
    if error.type == REQUIRED_INPUT_MISSING and input_name:
        problem["message"] = f"{where}: required input '{input_name}' is missing"
        return problem
    missing = _missing_links(workflow.get(node_id) or {}, workflow)
    if error.type == EXCEPTION_DURING_VALIDATION and missing:
        problem["message"] = f"{where}: {missing}"
        return problem
    text = f"{where}: {unmask(_error_text(error))}"
    node_class = catalog.get(class_type)
    available = node_class.choices(input_name) if input_name and error.is_choice_error else None
    if available is not None:
        available = file_choices() if input_name in node_class.file_inputs else [unmask(value) for value in available]
        problem["available"] = available
        text += f"; available: {_listing(available)}"
    problem["message"] = text
    return problem


def _error_text(error: ValidationError) -> str:
    """One phrase: "width: Value 0 smaller than min of 1", "image: Invalid image file: x.png"…"""
    input_name, extra = error.input_name, error.extra_info
    if error.type == VALUE_NOT_IN_LIST and input_name and "received_value" in extra:
        return f"{input_name} {extra['received_value']!r} not found"
    message = error.message or error.type or "invalid"
    details = error.details
    if input_name:
        for separator in (": ", " - "):
            details = details.removeprefix(input_name + separator)
        if details == input_name:
            details = ""
    if error.message_first and details:
        exception = extra.get("exception_type")
        text = f"{message}: {exception + ' ' if exception else ''}{details}"
    else:
        text = details or message
    return f"{input_name}: {text}" if input_name else text


def _missing_links(node: dict[str, Any], workflow: dict[str, Any]) -> str:
    """ "input 'images' links to node 99, which is not in the workflow" for each such link, joined."""
    inputs = node.get("inputs") or {}
    dangling = [(name, value[0]) for name, value in inputs.items() if is_link(value) and value[0] not in workflow]
    return "; ".join(
        f"input '{name}' links to node {target}, which is not in the workflow" for name, target in dangling
    )


def is_link(value: Any) -> bool:
    """A node input that is a link `[node_id, output_index]`."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _listing(values: list[str]) -> str:
    if not values:
        return "none (ComfyUI lists no values for it)"
    shown = ", ".join(str(value) for value in values[:MAX_LISTED_OPTIONS])
    more = len(values) - MAX_LISTED_OPTIONS
    return shown + (f" … and {more} more" if more > 0 else "")


# -- a run that failed -----------------------------------------------------------------------


def execution_failure(failure: ExecutionFailure, unmask: Unmask) -> JobError:
    """The JobError for an execution_error, or an interrupt this job did not ask for."""
    if failure.interrupted:
        return JobError(
            Reason.INTERRUPTED,
            f"ComfyUI interrupted the prompt at {failure.where}: "
            "someone called POST /interrupt, or ComfyUI was stopping",
            {"node_id": failure.node_id, "class_type": failure.node_type},
        )
    exception = unmask(f"{failure.exception_type or 'Exception'}: {failure.exception_message}")
    lines = [line for line in "".join(failure.traceback).rstrip().splitlines() if line.strip(" ^~")]
    message = f"ComfyUI failed at {failure.where}: {exception}"
    if lines:
        message += "\nTraceback (last lines):\n" + unmask("\n".join(lines[-TRACEBACK_LINES:]))
    details = {
        "node_id": failure.node_id,
        "class_type": failure.node_type,
        "exception_type": failure.exception_type,
        "exception_message": unmask(failure.exception_message),
        "traceback": [unmask(line) for line in failure.traceback],
    }
    return JobError(Reason.EXECUTION, message, details)
