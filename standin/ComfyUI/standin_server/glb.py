"""A minimal binary glTF 2.0 (.glb) writer: one mesh, one triangle list, positions only.

The file is what glTF validators accept: the 12-byte header ("glTF", version 2, length), a
JSON chunk padded with spaces and a BIN chunk padded with zeros to 4 bytes, an accessor
with the min/max the spec requires for POSITION. Optional JSON metadata (the prompt, as
ComfyUI's SaveGLB writes it) goes into asset.extras.
"""

from __future__ import annotations

import json
import struct
from typing import Any

MAGIC = b"glTF"
VERSION = 2
JSON_CHUNK = 0x4E4F534A
BIN_CHUNK = 0x004E4942
FLOAT = 5126
ARRAY_BUFFER = 34962

# A unit tetrahedron's four faces.
TETRAHEDRON = [
    (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
    (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
    (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0),
    (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0),
]  # fmt: skip


def _pad(data: bytes, filler: bytes) -> bytes:
    return data + filler * (-len(data) % 4)


def encode(vertices: list[tuple[float, float, float]] = TETRAHEDRON, extras: dict[str, Any] | None = None) -> bytes:
    """A .glb of the triangles `vertices` lists (three per triangle)."""
    binary = b"".join(struct.pack("<3f", *v) for v in vertices)
    document: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "ComfyUI stand-in"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "mode": 4}]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(binary), "target": ARRAY_BUFFER}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": FLOAT,
                "count": len(vertices),
                "type": "VEC3",
                "min": [min(v[i] for v in vertices) for i in range(3)],
                "max": [max(v[i] for v in vertices) for i in range(3)],
            }
        ],
    }
    if extras:
        document["asset"]["extras"] = extras
    json_chunk = _pad(json.dumps(document, separators=(",", ":")).encode(), b" ")
    bin_chunk = _pad(binary, b"\0")
    body = struct.pack("<II", len(json_chunk), JSON_CHUNK) + json_chunk
    body += struct.pack("<II", len(bin_chunk), BIN_CHUNK) + bin_chunk
    return MAGIC + struct.pack("<II", VERSION, 12 + len(body)) + body
