"""The stand-in's node classes, registered by class name as in ComfyUI's NODE_CLASS_MAPPINGS."""

from __future__ import annotations

from . import audio, image, loaders, testing, text
from .base import Node

NODE_CLASS_MAPPINGS: dict[str, type[Node]] = {
    cls.__name__: cls for module in (image, text, audio, loaders, testing) for cls in module.NODES
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    name: cls.DISPLAY_NAME for name, cls in NODE_CLASS_MAPPINGS.items() if cls.DISPLAY_NAME
}


def node_info(node_class: str) -> dict:
    """One entry of GET /object_info, built the way ComfyUI's server.node_info builds it."""
    cls = NODE_CLASS_MAPPINGS[node_class]
    input_types = cls.INPUT_TYPES()
    info: dict = {
        "input": input_types,
        "input_order": {key: list(value.keys()) for key, value in input_types.items()},
        "output": cls.RETURN_TYPES,
        "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
        "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
        "name": node_class,
        "display_name": NODE_DISPLAY_NAME_MAPPINGS.get(node_class, node_class),
        "description": cls.DESCRIPTION,
        "python_module": cls.PYTHON_MODULE,
        "category": cls.CATEGORY,
        "output_node": cls.OUTPUT_NODE is True,
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    return info
