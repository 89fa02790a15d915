"""`"describe"`: what a named workflow takes and gives, for a client, a form or an agent; nothing is queued.

`"describe": "portrait"` answers the workflow's parameters as a JSON Schema (draft 2020-12) of
the `params` object: one property per `NODE.INPUT` (and its `Title.INPUT` alias when the title
is unique), with the JSON type, the workflow's own value as `default`, `minimum`/`maximum`
and `enum` from `/object_info`, the node's title, and the ComfyUI facts under `x-comfy`. It
also lists the output nodes, whose files and text the job returns.

`"describe": true` (or `""`) lists the named workflows.
"""

from __future__ import annotations

from typing import Any

from . import validate
from .catalog import Catalog
from .config import InputBudgets
from .params import MISSING, Parameter, parameters
from .workflows import WorkflowStore

SCHEMA = "https://json-schema.org/draft/2020-12/schema"
JSON_TYPES = {"INT": "integer", "FLOAT": "number", "STRING": "string", "BOOLEAN": "boolean"}


def describe(
    request: Any, store: WorkflowStore, catalog: Catalog, timeout_s: float, budgets: InputBudgets
) -> dict[str, Any]:
    """The answer to a describe request: the list of workflows, or one workflow's parameters and outputs."""
    if request is True or request == "":
        return {"workflows": store.names(), "workflows_dir": str(store.folder)}
    workflow = validate.parse({"workflow": store.load(request, "input.describe")}, budgets).workflow
    answer = {
        "workflow": request,
        "parameters": schema(parameters(workflow, catalog, timeout_s)),
        "outputs": outputs(workflow, catalog, timeout_s),
    }
    unknown = sorted(
        {str(node.get("class_type")) for node in workflow.values() if not _known(node, catalog, timeout_s)}
    )
    if unknown:  # their inputs cannot be described (a custom node pack missing, or ComfyUI not answering)
        answer["unknown_node_classes"] = unknown
    return answer


def _known(node: dict[str, Any], catalog: Catalog, timeout_s: float) -> bool:
    return catalog.get(str(node.get("class_type")), timeout_s).known


def schema(found: list[Parameter]) -> dict[str, Any]:
    """The JSON Schema of a `params` object for these parameters."""
    properties: dict[str, Any] = {}
    for parameter in found:
        properties[parameter.key] = _property(parameter)
        if parameter.title_key:
            properties[parameter.title_key] = {**_property(parameter), "x-comfy": _facts(parameter, alias=True)}
    return {"$schema": SCHEMA, "type": "object", "properties": properties, "additionalProperties": False}


def outputs(workflow: dict[str, Any], catalog: Catalog, timeout_s: float) -> list[dict[str, Any]]:
    """The workflow's output nodes: what the job's result holds files and text from."""
    found = []
    for node_id, node in workflow.items():
        node_class = catalog.get(str(node.get("class_type")), timeout_s)
        if node_class.output_node:
            meta = node.get("_meta") if isinstance(node.get("_meta"), dict) else {}
            found.append({"node_id": str(node_id), "class_type": node_class.name, "title": meta.get("title")})
    return found


def _property(parameter: Parameter) -> dict[str, Any]:
    spec = parameter.spec
    prop: dict[str, Any] = {"title": parameter.title or f"{parameter.class_type} {parameter.input}"}
    if spec.type in JSON_TYPES:
        prop["type"] = JSON_TYPES[spec.type]
    if spec.choices is not None and not spec.names_an_input_file:
        prop["enum"] = list(spec.choices)
    for key, word in (("min", "minimum"), ("max", "maximum")):
        value = spec.options.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            prop[word] = value
    if parameter.value is not MISSING:
        prop["default"] = parameter.value
    if isinstance(spec.options.get("tooltip"), str):
        prop["description"] = spec.options["tooltip"]
    prop["x-comfy"] = _facts(parameter)
    return prop


def _facts(parameter: Parameter, alias: bool = False) -> dict[str, Any]:
    spec = parameter.spec
    facts: dict[str, Any] = {
        "node_id": parameter.node_id,
        "input": parameter.input,
        "class_type": parameter.class_type,
        "node_title": parameter.title,
        "comfy_type": spec.type,
        "required": spec.required,
    }
    if isinstance(spec.options.get("step"), int | float):
        facts["step"] = spec.options["step"]
    if spec.is_seed:
        facts["seed"] = True
    if spec.names_an_input_file:
        facts["input_file"] = True
    if alias:
        facts["alias_of"] = parameter.key
    return facts
