"""The stand-in's node classes, registered by class name as in ComfyUI's NODE_CLASS_MAPPINGS."""

from __future__ import annotations

from .. import version
from . import audio, image, loaders, testing, text, three_d
from .base import Node

NODE_CLASS_MAPPINGS: dict[str, type[Node]] = {
    cls.__name__: cls for module in (image, text, audio, three_d, loaders, testing) for cls in module.NODES
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    name: cls.DISPLAY_NAME for name, cls in NODE_CLASS_MAPPINGS.items() if cls.DISPLAY_NAME
}


def node_info(node_class: str) -> dict:
    """One entry of GET /object_info, built the way ComfyUI's server.node_info builds it
    (0.38.1 adds is_input_list, has_intermediate_output and search_aliases)."""
    cls = NODE_CLASS_MAPPINGS[node_class]
    newer = version.current().object_info_v038_keys
    input_types = cls.INPUT_TYPES()
    info: dict = {"input": input_types, "input_order": {key: list(value.keys()) for key, value in input_types.items()}}
    if newer:
        info["is_input_list"] = getattr(cls, "INPUT_IS_LIST", False)
    info.update(
        output=cls.RETURN_TYPES,
        output_is_list=getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
        output_name=getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
        name=node_class,
        display_name=NODE_DISPLAY_NAME_MAPPINGS.get(node_class, node_class),
        description=cls.DESCRIPTION,
        python_module=cls.PYTHON_MODULE,
        category=cls.CATEGORY,
        output_node=cls.OUTPUT_NODE is True,
    )
    if newer:
        info["has_intermediate_output"] = cls.HAS_INTERMEDIATE_OUTPUT is True
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    if newer:
        info["search_aliases"] = getattr(cls, "SEARCH_ALIASES", [])
    return info
