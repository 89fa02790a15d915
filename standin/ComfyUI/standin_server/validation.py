"""Prompt validation, following ComfyUI's execution.validate_prompt / validate_inputs.

The structure (and so the error types, messages and where each error is attached) is
ComfyUI's, including its quirks: Python errors inside validation become
`exception_during_validation` (an output node) or `exception_during_inner_validation` (a node
further up); a malformed body raises, which the server turns into a 500.

Two deliberate choices:
- Depth: ComfyUI validates recursively, so a linear chain deeper than about 980 nodes hits
  Python's recursion limit (976 passed, 984 failed on the recorded server). The stand-in counts
  the depth itself and raises the same RecursionError past MAX_VALIDATION_DEPTH.
- Cycles: ComfyUI 0.3.64 recurses around a cycle until the recursion limit and then reports
  an empty error; newer ComfyUI reports `dependency_cycle` on every node of the cycle. The
  stand-in does what the newer release does.
"""

from __future__ import annotations

import inspect
import logging
import sys
import traceback
from typing import Any

from . import version
from .nodes import NODE_CLASS_MAPPINGS

log = logging.getLogger("standin")

MAX_VALIDATION_DEPTH = 980

Result = tuple[bool, list[dict[str, Any]], str]


def full_type_name(klass: type) -> str:
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return module + "." + klass.__qualname__


def get_input_info(class_inputs: dict[str, Any], input_name: str) -> tuple[Any, str | None, dict | None]:
    for category in ("required", "optional", "hidden"):
        if category in class_inputs and input_name in class_inputs[category]:
            info = class_inputs[category][input_name]
            extra = info[1] if len(info) > 1 else {}
            return info[0], category, extra
    return None, None, None


def validate_node_input(received_type: Any, input_type: Any) -> bool:
    """comfy_execution.validation.validate_node_input, non-strict: "*" and comma lists."""
    if received_type == input_type or input_type == "*" or received_type == "*":
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    accepted = {t.strip() for t in input_type.split(",")}
    return len(received & accepted) > 0


def map_over_list(func: Any, input_data_all: dict[str, list]) -> list:
    """Call func once per index of the longest input list (ComfyUI's map_node_over_list)."""
    if not input_data_all:
        return [func()]
    length = max(len(v) for v in input_data_all.values())
    return [func(**{k: v[i if len(v) > i else -1] for k, v in input_data_all.items()}) for i in range(length)]


def constant_inputs(inputs: dict[str, Any], class_inputs: dict[str, Any]) -> dict[str, list]:
    """get_input_data without an execution list: links are missing (None), constants wrapped."""
    data: dict[str, list] = {}
    for name, value in inputs.items():
        _, category, _ = get_input_info(class_inputs, name)
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            data[name] = [None]
        elif category is not None:
            data[name] = [value]
    return data


def _cycle_result(prompt: dict, visiting: dict[str, None], unique_id: str, validated: dict[str, Result]) -> Result:
    stack = list(visiting)
    path = [*stack[stack.index(unique_id) :], unique_id]
    cycle_nodes = list(dict.fromkeys(path))
    details = " -> ".join(f"{node_id} ({prompt[node_id]['class_type']})" for node_id in path)
    for node_id in cycle_nodes:
        error = {
            "type": "dependency_cycle",
            "message": "Dependency cycle detected",
            "details": details,
            "extra_info": {"node_id": node_id, "cycle_nodes": cycle_nodes},
        }
        validated[node_id] = (False, [error], node_id)
    return validated[unique_id]


def validate_inputs(
    prompt: dict, item: str, validated: dict[str, Result], visiting: dict[str, None] | None = None
) -> Result:
    """Validate one node and, through its links, everything upstream of it.

    `visiting` is the path from the output node down to here (a dict used as an ordered set).
    """
    if visiting is None:
        visiting = {}
    unique_id = item
    if unique_id in validated:
        return validated[unique_id]
    if unique_id in visiting:
        return _cycle_result(prompt, visiting, unique_id, validated)

    inputs = prompt[unique_id]["inputs"]
    class_type = prompt[unique_id]["class_type"]
    obj_class = NODE_CLASS_MAPPINGS[class_type]
    class_inputs = obj_class.INPUT_TYPES()

    validate_function = getattr(obj_class, "VALIDATE_INPUTS", None)
    validate_args: list[str] = []
    validate_has_kwargs = False
    if validate_function is not None:
        spec = inspect.getfullargspec(validate_function)
        validate_args = spec.args
        validate_has_kwargs = spec.varkw is not None
    received_types: dict[str, Any] = {}

    errors: list[dict[str, Any]] = []
    valid = True
    names = [*class_inputs.get("required", {}), *class_inputs.get("optional", {})]
    for x in names:
        input_type, input_category, extra_info = get_input_info(class_inputs, x)
        assert extra_info is not None
        if x not in inputs:
            if input_category == "required":
                errors.append(
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": f"{x}",
                        "extra_info": {"input_name": x},
                    }
                )
            continue

        val = inputs[x]
        info = (input_type, extra_info)
        if isinstance(val, list):
            if len(val) != 2:
                errors.append(
                    {
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    }
                )
                continue

            o_id = val[0]
            o_class_type = prompt[o_id]["class_type"]
            r = NODE_CLASS_MAPPINGS[o_class_type].RETURN_TYPES
            received_type = r[val[1]]
            received_types[x] = received_type
            if "input_types" not in validate_args and not validate_node_input(received_type, input_type):
                errors.append(
                    {
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                        "extra_info": {
                            "input_name": x,
                            "input_config": info,
                            "received_type": received_type,
                            "linked_node": val,
                        },
                    }
                )
                continue
            try:
                if len(visiting) >= MAX_VALIDATION_DEPTH:
                    # Where ComfyUI's recursive validation runs out of Python stack.
                    raise RecursionError("maximum recursion depth exceeded")
                visiting[unique_id] = None
                try:
                    r = validate_inputs(prompt, o_id, validated, visiting)
                finally:
                    visiting.popitem()
                if r[0] is False:
                    valid = False
                    continue
            except Exception as ex:
                typ, _, tb = sys.exc_info()
                valid = False
                assert typ is not None
                validated[o_id] = (
                    False,
                    [
                        {
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": str(ex),
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "exception_message": str(ex),
                                "exception_type": full_type_name(typ),
                                "traceback": traceback.format_tb(tb),
                                "linked_node": val,
                            },
                        }
                    ],
                    o_id,
                )
                continue
        else:
            try:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                    inputs[x] = val
                if input_type == "INT":
                    val = int(val)
                    inputs[x] = val
                if input_type == "FLOAT":
                    val = float(val)
                    inputs[x] = val
                if input_type == "STRING":
                    val = str(val)
                    inputs[x] = val
                if input_type == "BOOLEAN":
                    val = bool(val)
                    inputs[x] = val
            except Exception as ex:
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{x}, {val}, {ex}",
                        "extra_info": {
                            "input_name": x,
                            "input_config": info,
                            "received_value": val,
                            "exception_message": str(ex),
                        },
                    }
                )
                continue

            if x not in validate_args and not validate_has_kwargs:
                if "min" in extra_info and val < extra_info["min"]:
                    errors.append(
                        {
                            "type": "value_smaller_than_min",
                            "message": "Value {} smaller than min of {}".format(val, extra_info["min"]),
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                if "max" in extra_info and val > extra_info["max"]:
                    errors.append(
                        {
                            "type": "value_bigger_than_max",
                            "message": "Value {} bigger than max of {}".format(val, extra_info["max"]),
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                if isinstance(input_type, list) and val not in input_type:
                    input_config: Any = info
                    if len(input_type) > 20:
                        list_info = f"(list of length {len(input_type)})"
                        input_config = None
                    else:
                        list_info = str(input_type)
                    errors.append(
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"{x}: '{val}' not in {list_info}",
                            "extra_info": {"input_name": x, "input_config": input_config, "received_value": val},
                        }
                    )
                    continue

    if validate_args or validate_has_kwargs:
        input_data_all = constant_inputs(inputs, class_inputs)
        filtered = {k: v for k, v in input_data_all.items() if k in validate_args or validate_has_kwargs}
        if "input_types" in validate_args:
            filtered["input_types"] = [received_types]
        for x in filtered or (None,):
            for r in map_over_list(validate_function, filtered):
                if r is not True:
                    details = x if x is not None else ""
                    if r is not False:
                        details = f"{x} - {r}" if x is not None else str(r)
                    errors.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": details,
                            "extra_info": {"input_name": x} if x is not None else {},
                        }
                    )

    # A cycle found further down may already have put an error on this node: keep it.
    ret = validated.get(unique_id, (True, [], unique_id))
    ret = (ret[0] and valid is True and not errors, ret[1] + [e for e in errors if e not in ret[1]], unique_id)
    validated[unique_id] = ret
    return ret


def _missing_class_type(node_id: str, node: dict) -> dict[str, Any]:
    if not version.current().missing_node_type:
        return {
            "type": "invalid_prompt",
            "message": "Cannot execute because a node is missing the class_type property.",
            "details": f"Node ID '#{node_id}'",
            "extra_info": {},
        }
    title = node.get("_meta", {}).get("title")
    return {
        "type": "missing_node_type",
        "message": f"Node '{title or f'ID #{node_id}'}' has no class_type. The workflow may be corrupted or a custom "
        "node is missing.",
        "details": f"Node ID '#{node_id}'",
        "extra_info": {"node_id": node_id, "class_type": None, "node_title": title},
    }


def _unknown_class(node_id: str, node: dict) -> dict[str, Any]:
    class_type = node["class_type"]
    if not version.current().missing_node_type:
        return {
            "type": "invalid_prompt",
            "message": f"Cannot execute because node {class_type} does not exist.",
            "details": f"Node ID '#{node_id}'",
            "extra_info": {},
        }
    title = node.get("_meta", {}).get("title", class_type)
    return {
        "type": "missing_node_type",
        "message": f"Node '{title}' not found. The custom node may not be installed.",
        "details": f"Node ID '#{node_id}'",
        "extra_info": {"node_id": node_id, "class_type": class_type, "node_title": title},
    }


def validate_prompt(prompt: dict, partial_execution_list: list[str] | None = None) -> tuple:
    """(ok, error, good_output_ids, node_errors), as ComfyUI's validate_prompt returns."""
    outputs = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            return (False, _missing_class_type(x, prompt[x]), [], {})

        class_type = prompt[x]["class_type"]
        class_ = NODE_CLASS_MAPPINGS.get(class_type, None)
        if class_ is None:
            return (False, _unknown_class(x, prompt[x]), [], {})

        if getattr(class_, "OUTPUT_NODE", False) is True and (
            partial_execution_list is None or x in partial_execution_list
        ):
            outputs.append(x)

    if len(outputs) == 0:
        error = {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
        return (False, error, [], {})

    good_outputs = []
    errors = []
    node_errors: dict[str, dict[str, Any]] = {}
    validated: dict[str, Result] = {}
    for o in outputs:
        try:
            valid, reasons, _ = validate_inputs(prompt, o, validated)
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {"exception_type": full_type_name(typ), "traceback": traceback.format_tb(tb)},
                }
            ]
            validated[o] = (False, reasons, o)

        if valid is True:
            good_outputs.append(o)
            continue
        log.error(f"Failed to validate prompt for output {o}:")
        if reasons:
            log.error("* (prompt):")
            for reason in reasons:
                log.error(f"  - {reason['message']}: {reason['details']}")
        errors.append((o, reasons))
        for node_id, result in validated.items():
            # Nodes downstream of a broken node are invalid too, but carry no errors of their own.
            if result[0] is not True and len(result[1]) > 0:
                if node_id not in node_errors:
                    node_class = prompt[node_id]["class_type"]
                    node_errors[node_id] = {"errors": result[1], "dependent_outputs": [], "class_type": node_class}
                    log.error(f"* {node_class} {node_id}:")
                    for reason in result[1]:
                        log.error(f"  - {reason['message']}: {reason['details']}")
                node_errors[node_id]["dependent_outputs"].append(o)
        log.error("Output will be ignored")

    if len(good_outputs) == 0:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in errors for e in reasons)
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        }
        return (False, error, good_outputs, node_errors)

    return (True, None, good_outputs, node_errors)
