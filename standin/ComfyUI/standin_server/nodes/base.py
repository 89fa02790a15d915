"""The node class contract the stand-in shares with ComfyUI's V1 nodes.

A node class has INPUT_TYPES() (classmethod), RETURN_TYPES, FUNCTION, CATEGORY and optionally
OUTPUT_NODE, HAS_INTERMEDIATE_OUTPUT, RETURN_NAMES, OUTPUT_IS_LIST, OUTPUT_TOOLTIPS, DESCRIPTION, IS_CHANGED and
VALIDATE_INPUTS, read the same way ComfyUI reads them.

Data types: IMAGE is a list of RGB PIL images (a batch), MASK a list of "L" images, AUDIO a
dict {"waveform": [[array('h') per channel] per batch item], "sample_rate": int}, STRING a str.
"""

from __future__ import annotations

from typing import Any, ClassVar

MAX_RESOLUTION = 16384

# A stand-in for ComfyUI's IO.ANY ("*"): accepts a link of any type.
ANY = "*"


class Node:
    RETURN_TYPES: ClassVar[tuple[str, ...]] = ()
    FUNCTION: ClassVar[str] = ""
    CATEGORY: ClassVar[str] = "standin"
    OUTPUT_NODE: ClassVar[bool] = False
    # 0.38.1: a node that is not an output node but shows a result (LoadVideo's preview).
    HAS_INTERMEDIATE_OUTPUT: ClassVar[bool] = False
    DESCRIPTION: ClassVar[str] = ""
    DISPLAY_NAME: ClassVar[str | None] = None
    PYTHON_MODULE: ClassVar[str] = "nodes"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, Any]]:
        return {"required": {}}


def always_changed(*_args: Any, **_kwargs: Any) -> float:
    """IS_CHANGED that never matches (NaN != NaN): the node runs on every prompt."""
    return float("nan")
