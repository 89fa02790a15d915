"""0.38.1's RAM-pressure cache, as comfy_execution/caching.py's RAMPressureCache decides.

Results stay across prompts (an LRU without a size) until RAM runs short: before each node
runs and after each prompt, while `psutil.virtual_memory().available` is below the headroom,
the result with the highest OOM score goes, its score being 1.3 ** (prompts since it was last
used) times its bytes (images) plus a base of a fraction of a byte (RAM_CACHE_DEFAULT_RAM_USAGE,
so a result without images goes after every result with them), until 1.1 x the headroom is
free again. The headroom is --cache-ram's first value in GB, else 10% of psutil's total RAM,
at least 2 GB and at most 10 GB. Like ComfyUI, the stand-in measures with psutil, so inside a
container it sees whatever psutil reports there (the machine's RAM, unless clamped).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import psutil
from PIL import Image

GB = 1024**3
HYSTERESIS = 1.1
OLD_WORKFLOW_MULTIPLIER = 1.3
BASE_SIZE = 0.05  # bytes: ComfyUI's RAM_CACHE_DEFAULT_RAM_USAGE, added to every result's size


def headroom(cache_ram: list[float] | None) -> float:
    """The free RAM (bytes) the cache keeps: --cache-ram GB, or ComfyUI's default."""
    if cache_ram:
        return cache_ram[0] * GB
    return min(max(psutil.virtual_memory().total * 0.1, 2 * GB), 10 * GB)


def size_of(outputs: Any) -> int:
    """Bytes the images in a node's outputs hold."""
    return sum(image.width * image.height * len(image.getbands()) for image in _images(outputs))


def _images(value: Any) -> Iterator[Image.Image]:
    if isinstance(value, Image.Image):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _images(item)


def available() -> int:
    return psutil.virtual_memory().available


def to_evict(sizes: dict[str, int], ages: dict[str, int], target: float) -> Iterator[str]:
    """Keys in the order RAMPressureCache frees them, for as long as RAM is short of `target`."""
    if available() >= target:
        return
    gc.collect()
    if available() >= target:
        return
    ranked = sorted(sizes, key=lambda key: OLD_WORKFLOW_MULTIPLIER ** ages[key] * (BASE_SIZE + sizes[key]))
    while ranked and available() < target * HYSTERESIS:
        yield ranked.pop()
        gc.collect()
