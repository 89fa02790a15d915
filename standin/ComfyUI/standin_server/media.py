"""0.38.1's media_enrichment: file entries of an output gain a `metadata` object.

Images get {"kind": "image", "width", "height"} (read with Pillow, so animated WEBP too).
The stand-in has no video node, so the video form ({"kind": "video", ..., "duration", "fps",
"frame_count"}) never arises; files Pillow cannot read are left as they are, as ComfyUI
leaves entries it cannot probe.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, UnidentifiedImageError

from . import paths


def _metadata(path: str) -> dict[str, Any] | None:
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError):
        return None
    return {"kind": "image", "width": width, "height": height}


def enrich(output_ui: dict[str, Any]) -> dict[str, Any]:
    """A copy of `output_ui` whose file entries carry `metadata` where it can be read."""
    enriched: dict[str, Any] = {}
    for key, entries in output_ui.items():
        if not isinstance(entries, list):
            enriched[key] = entries
            continue
        enriched[key] = [_with_metadata(entry) for entry in entries]
    return enriched


def _with_metadata(entry: Any) -> Any:
    if not isinstance(entry, dict) or "metadata" in entry or "filename" not in entry or "type" not in entry:
        return entry
    path = paths.output_entry_path(entry)
    metadata = _metadata(path) if path is not None else None
    return entry if metadata is None else {**entry, "metadata": metadata}
