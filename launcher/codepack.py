"""A pack of ComfyUI's code on the volume, so that a fresh worker's copy costs bytes, not round trips.

A fresh container's copy (launcher/codecopy.py) opens and reads every file of the code on the
volume: tens of thousands of opens, each a few round trips. Instead, a worker that has a copy
keeps one pack of it on the volume: `VOLUME/.comfy-worker/code/<worker id>.pack` (the files'
bytes one after another, after a header naming the pack) and `<worker id>.pack.json` (the
manifest of the code plus each file's offset in the pack). A fresh worker reads the newest pack
in a few large range reads in parallel (several streams, each its own open file, to use the
volume's whole bandwidth) and writes the files to its disk while it checks the volume, entry by
entry, as for any copy: a file whose size or mtime changed since the pack was made is copied
again from the volume, so a changed volume is never served stale.

On the volume: each worker writes only its own two files, atomically (the pack under a
temporary name, then renamed, then its index), in the background after ComfyUI's start began,
never while a job runs through it. A worker skips writing when a pack of exactly its code
exists (whoever wrote it) and then removes its own older pack: the volume holds about one pack
of the current code (the size of the copy), not one per worker.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker_common.files import write_atomically

MAGIC = b"comfy-worker code pack 1\n"
TOKEN_BYTES = 16
HEADER = len(MAGIC) + 2 * TOKEN_BYTES + 1
BLOCK = 8 << 20  # one range read: at least this much, unless a single larger file is read in pieces
INDEX = ".pack.json"

# One entry as codecopy keeps it: kind, mode, size, mtime in ns, a link's target.
Entry = tuple[str, int, int, int, str]


@dataclass(frozen=True)
class Pack:
    """A pack on the volume: its data file, the token its header must carry, the code it holds."""

    path: Path
    token: str
    entries: dict[str, Entry]
    offsets: dict[str, int]

    @property
    def data_bytes(self) -> int:
        return sum(self.entries[rel][2] for rel in self.offsets)

    def as_index(self) -> dict[str, Any]:
        """The pack as its index holds it (beside the index's `source`); `from_index` reads it back."""
        return {"pack": self.path.name, "token": self.token, "entries": self.entries, "offsets": self.offsets}


def from_index(data: dict[str, Any], folder: Path) -> Pack:
    """The pack an index's data names, its file in `folder`; raises KeyError/TypeError on a malformed one."""
    entries = {rel: tuple(entry) for rel, entry in data["entries"].items()}
    return Pack(folder / data["pack"], data["token"], entries, data["offsets"])  # type: ignore[arg-type]


def index_path(folder: Path, worker_id: str) -> Path:
    return folder / f"{worker_id}{INDEX}"


def read_index(path: Path, source: list[str]) -> Pack | None:
    """The pack an index names, if the index is whole and for this install and venv."""
    try:
        data = json.loads(path.read_text())
        if data.get("source") != source:
            return None
        return from_index(data, path.parent)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def newest_pack(folder: Path, source: list[str]) -> Pack | None:
    """The newest pack any worker keeps for this install (a listing, a stat per worker, one index read)."""
    try:
        indexes = sorted(folder.glob(f"*{INDEX}"), key=lambda path: path.stat().st_mtime, reverse=True)
    except OSError:
        return None
    return next(filter(None, (read_index(path, source) for path in indexes)), None)


# -- reading a pack -------------------------------------------------------------------------


def unpack(pack: Pack, local_path: Callable[[str], str], streams: int) -> dict[str, Entry]:
    """Write the pack's files to where `local_path(rel)` says, mode and mtime as the index has them,
    reading the pack in `streams` parallel runs of large range reads; returns the entries written.
    Raises OSError when the pack is not the one its index names (rewritten meanwhile)."""
    files = sorted(pack.offsets.items(), key=lambda item: item[1])
    runs = split(files, pack.entries, streams)
    with concurrent.futures.ThreadPoolExecutor(len(runs) or 1, thread_name_prefix="codepack") as pool:
        written = pool.map(lambda run: unpack_run(pack, run, local_path), runs)
        return {rel: pack.entries[rel] for names in written for rel in names}


def split(files: list[tuple[str, int]], entries: dict[str, Entry], streams: int) -> list[list[tuple[str, int]]]:
    """Files in pack order cut into at most `streams` runs of about equal bytes."""
    total = sum(entries[rel][2] for rel, _ in files)
    share = max(total // max(streams, 1), 1)
    runs: list[list[tuple[str, int]]] = [[]]
    taken = 0
    for rel, offset in files:
        if taken >= share * len(runs) and len(runs) < streams:
            runs.append([])
        runs[-1].append((rel, offset))
        taken += entries[rel][2]
    return [run for run in runs if run]


def unpack_run(pack: Pack, run: list[tuple[str, int]], local_path: Callable[[str], str]) -> list[str]:
    """One stream: its own open file (a volume caps each open file's bandwidth), files read in
    blocks of several files at once, each file written where it goes."""
    fd = os.open(pack.path, os.O_RDONLY)
    try:
        if os.pread(fd, HEADER, 0) != header(pack.token):
            raise OSError(f"{pack.path} is not the pack its index names (rewritten meanwhile)")
        for block in blocks(run, pack.entries):
            start = block[0][1]
            end = block[-1][1] + pack.entries[block[-1][0]][2]
            if end - start <= BLOCK:
                data = read_exactly(fd, start, end - start)
                for rel, offset in block:
                    size = pack.entries[rel][2]
                    place(local_path(rel), pack.entries[rel], [data[offset - start : offset - start + size]])
            else:  # one file larger than a block: read in pieces
                rel, offset = block[0]
                size = pack.entries[rel][2]
                pieces = (
                    read_exactly(fd, at, min(BLOCK, offset + size - at)) for at in range(offset, offset + size, BLOCK)
                )
                place(local_path(rel), pack.entries[rel], pieces)
    finally:
        os.close(fd)
    return [rel for rel, _ in run]


def blocks(run: list[tuple[str, int]], entries: dict[str, Entry]) -> list[list[tuple[str, int]]]:
    """Consecutive files grouped into blocks of at most BLOCK bytes (a larger file alone)."""
    grouped: list[list[tuple[str, int]]] = []
    size = 0
    for rel, offset in run:
        if not grouped or size + entries[rel][2] > BLOCK:
            grouped.append([])
            size = 0
        grouped[-1].append((rel, offset))
        size += entries[rel][2]
    return grouped


def read_exactly(fd: int, offset: int, size: int) -> bytes:
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            raise OSError(f"the pack ends before byte {offset + size}")
        data += more
    return data


def place(target: str, entry: Entry, pieces: Iterable[bytes]) -> None:
    """Written in place: the copy is not served before its manifest is written, after the unpacking."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
        os.fchmod(fd, stat.S_IMODE(entry[1]))
        os.utime(fd, ns=(entry[3], entry[3]))
    finally:
        os.close(fd)


def header(token: str) -> bytes:
    return MAGIC + token.encode() + b"\n"


# -- writing a pack -------------------------------------------------------------------------


def publish(
    folder: Path,
    worker_id: str,
    source: list[str],
    entries: dict[str, Entry],
    packable: dict[str, Entry],
    local_path: Callable[[str], str],
) -> str:
    """Keep a pack of this worker's copy (its code is `entries`, the files of `packable` go in the pack) on
    the volume, unless one of the same code is already there; says what it did. Reads only the local
    copy; writes only this worker's files."""
    current = newest_pack(folder, source)
    own_index = index_path(folder, worker_id)
    if current is not None and same_files(current.entries, entries) and pack_is_whole(current):
        if current.path != folder / f"{worker_id}.pack":
            for path in (own_index, folder / f"{worker_id}.pack"):
                path.unlink(missing_ok=True)
        return f"a pack of this code is on the volume already ({current.path.name})"
    packed = [rel for rel, entry in sorted(packable.items()) if entry[0] == "f" and matches(local_path(rel), entry)]
    token = secrets.token_hex(TOKEN_BYTES)
    data_path = folder / f"{worker_id}.pack"
    partial = folder / f".{worker_id}.pack.partial"
    offsets: dict[str, int] = {}
    folder.mkdir(parents=True, exist_ok=True)
    with open(partial, "wb") as writer:
        writer.write(header(token))
        for rel in packed:
            offsets[rel] = writer.tell()
            with open(local_path(rel), "rb") as reader:
                copied = 0
                while chunk := reader.read(BLOCK):
                    copied += writer.write(chunk)
            if copied != entries[rel][2]:  # the copy changed while it was packed: no pack this time
                partial.unlink()
                return f"no pack: {rel} changed while it was packed"
    os.replace(partial, data_path)
    index = {"source": source, **Pack(data_path, token, entries, offsets).as_index()}
    write_atomically(own_index, json.dumps(index, separators=(",", ":")))
    return f"wrote {data_path.name}: {len(packed)} files, {sum(entries[rel][2] for rel in packed) / 1e6:.1f} MB"


def same_files(one: dict[str, Entry], other: dict[str, Entry]) -> bool:
    """The same files, same sizes and mtimes: a folder's mtime (a name added beside the code, such as
    the worker's own `.comfy-worker`) does not make a pack stale."""

    def files(entries: dict[str, Entry]) -> dict[str, Entry]:
        return {rel: entry for rel, entry in entries.items() if entry[0] != "d"}

    return files(one) == files(other)


def matches(path: str, entry: Entry) -> bool:
    """The copy's file is the volume's as the manifest says (a venv script rewritten for the copy is not)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == entry[2] and st.st_mtime_ns == entry[3]


def pack_is_whole(pack: Pack) -> bool:
    try:
        with open(pack.path, "rb") as reader:
            if reader.read(HEADER) != header(pack.token):
                return False
            return os.fstat(reader.fileno()).st_size == HEADER + pack.data_bytes
    except OSError:
        return False
