"""Image bytes the tests send: random pixels, and the small files that decode to huge images."""

from __future__ import annotations

import base64
import functools
import io
import random
import struct
import zlib
from typing import Any

from PIL import Image


def encoded(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def noise_png(width: int = 32, height: int = 24, seed: int = 1) -> bytes:
    """A PNG of random pixels: no two seeds give the same image."""
    rng = random.Random(seed)
    return encoded(Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3)), "PNG")


@functools.cache
def square_png(side: int) -> bytes:
    """A one-bit PNG: side x side pixels in a few kilobytes (18 kB for 12000), a huge image decoded."""
    return encoded(Image.new("1", (side, side)), "PNG", optimize=True)


def png_header(width: int, height: int) -> bytes:
    """A PNG that only declares its size: a decompression bomb as a header reader sees it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def many_frame_gif(side: int, frames: int) -> bytes:
    """An animated GIF whose frames differ (so none is dropped): its size grows little with frames."""
    images = [Image.new("P", (side, side), index % 256) for index in range(frames)]
    for index, image in enumerate(images):
        image.putpalette([index % 256, 0, 0] * 256)
    return encoded(images[0], "GIF", save_all=True, append_images=images[1:])


def png_bytes(size: int | tuple[int, int] = 8, color: tuple[int, int, int] = (200, 30, 90), text: bytes = b"") -> bytes:
    """A PNG of one colour, `size` pixels square or (width, height); `text` in a tEXt chunk named "secret"."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if text:
        info.add_text("secret", text.decode())
    return encoded(Image.new("RGB", size if isinstance(size, tuple) else (size, size), color), "PNG", pnginfo=info)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decoded(item: dict[str, Any]) -> Image.Image:
    """The image of one base64 output item of a result."""
    assert item["type"] == "base64", item
    return Image.open(io.BytesIO(base64.b64decode(item["data"])))
