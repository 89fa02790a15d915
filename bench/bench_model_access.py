"""How ComfyUI's ways of reading a model's weights cost on a network volume (issue 20, ComfyUI issue #15661).

    .venv/bin/python bench/bench_model_access.py [--mb 512] [--settings pessimistic,close-to-open] [--rtt-ms 2]

Newer ComfyUI loads safetensors through mmap (unless --disable-mmap) and, with dynamic VRAM,
may keep weights "disk-backed": offloaded weights are not kept in RAM but read again from the
model file when next needed (--fast-disk / --disable-fast-disk; by default only for files on a
fast local NVMe disk). On the emulated volume (bench/netvol), a safetensors-shaped file of --mb:

  read once          the file read front to back in 16 MiB reads, one stream (--disable-mmap)
  mmap               the file mapped and every page touched in order, 16 MiB at a time (the default)
  read again         after a read once, the file's cached pages dropped (memory pressure) and every
                     tensor read again with pread, as disk-backed offload does at each reuse
  read again, kept   the same without dropping: what a reuse costs while the page cache holds it

Prints seconds and MB/s for each, with the volume's calls and bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import mmap
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import netvol

MB = 1_000_000
CHUNK = 16 << 20
TENSOR = 32 << 20


def make_model(path: Path, size: int) -> list[tuple[int, int]]:
    """A sparse safetensors-shaped file: header, then tensors of TENSOR bytes; returns their (offset, size)."""
    count = max(size // TENSOR, 1)
    tensors = {
        f"t{i}": {"dtype": "F16", "shape": [TENSOR // 2], "data_offsets": [i * TENSOR, (i + 1) * TENSOR]}
        for i in range(count)
    }
    header = json.dumps(tensors).encode()
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(header)) + header)
        out.truncate(8 + len(header) + count * TENSOR)
    return [(8 + len(header) + i * TENSOR, TENSOR) for i in range(count)]


def read_once(reader: object) -> int:
    """Front to back in CHUNK reads from the start, on the open file `reader`."""
    fd = reader.fileno()  # type: ignore[attr-defined]
    done = 0
    buffer = bytearray(CHUNK)
    while got := os.preadv(fd, [buffer], done):
        done += got
    return done


def through_mmap(reader: object) -> int:
    with mmap.mmap(reader.fileno(), 0, access=mmap.ACCESS_READ) as mapped:  # type: ignore[attr-defined]
        buffer = bytearray(CHUNK)
        for start in range(0, len(mapped), CHUNK):
            piece = mapped[start : start + CHUNK]
            buffer[: len(piece)] = piece
        return len(mapped)


def measure(source: Path, settings: netvol.Settings, tensors: list[tuple[int, int]]) -> list[dict]:
    rows = []
    for name in ("read once", "mmap", "read again (pages dropped)", "read again (pages kept)"):
        netvol.drop_page_cache()
        with tempfile.TemporaryDirectory() as mnt, netvol.mounted(source, Path(mnt), settings) as volume:
            path = Path(mnt) / "model.safetensors"
            with open(path, "rb", buffering=0) as reader:
                if name.startswith("read again"):  # loaded once (not timed), then every tensor used again
                    read_once(reader)
                    if "dropped" in name:  # memory pressure: the offloaded weights' pages are gone
                        os.posix_fadvise(reader.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                volume.reset()
                started = time.monotonic()
                if name == "read once":
                    size = read_once(reader)
                elif name == "mmap":
                    size = through_mmap(reader)
                else:
                    size = sum(len(os.pread(reader.fileno(), length, offset)) for offset, length in tensors)
                seconds = time.monotonic() - started
            stats = volume.stats()
        row = {"mode": name, "s": seconds, "MB/s": size / MB / seconds, "calls": stats["total_calls"]}
        rows.append(row | {"MB read": stats["bytes_read"] / MB})
        print(
            f"  {name}: {seconds:.2f} s, {size / MB / seconds:.0f} MB/s, {stats['total_calls']} calls, "
            f"{stats['bytes_read'] / MB:.0f} MB from the volume",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--settings", default="pessimistic,close-to-open")
    parser.add_argument("--rtt-ms", type=float, default=2.0)
    args = parser.parse_args()
    chosen = {"pessimistic": netvol.PESSIMISTIC, "close-to-open": netvol.CLOSE_TO_OPEN, "kinder": netvol.KINDER}
    with tempfile.TemporaryDirectory(prefix="model-access-") as source:
        tensors = make_model(Path(source) / "model.safetensors", args.mb * MB)
        for name in args.settings.split(","):
            settings = dataclasses.replace(chosen[name], rtt_ms=args.rtt_ms)
            print(f"{name}: {settings.describe()}", flush=True)
            measure(Path(source), settings, tensors)


if __name__ == "__main__":
    main()
