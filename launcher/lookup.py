"""A name's attributes as its look-up brought them, without asking the volume again, where that is safe.

On a network volume whose client caches nothing, `os.stat(name, dir_fd=fd)` costs two round
trips after the folder's own: the look-up of the name (whose answer carries the attributes)
and a getattr, because the attributes the look-up brought count as expired at once. statx with
AT_STATX_DONT_SYNC takes the look-up's attributes: one round trip less per entry, a third of
the code copy's check (launcher/codecopy.py).

That is only as fresh as a getattr on FUSE (`looked_up_attributes_are_fresh`), whose kernel
client takes a name's attributes from the look-up's own answer each time it asks the volume
for the name, and keeps neither longer than the timeouts the volume's client set. An NFS client
keeps a name while its folder is unchanged and refreshes the attributes only by a getattr: with
AT_STATX_DONT_SYNC a file edited in place could keep its old size and mtime for as long as the
machine caches it (a host shared by several containers may have cached it long before). There,
and where libc has no statx, os.stat asks as the client's own rules say.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import NamedTuple

AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_STATX_DONT_SYNC = 0x4000
STATX_BASIC_STATS = 0x7FF
STATX_SIZE = 256  # struct statx
STATFS_SIZE = 256  # struct statfs (120 bytes on 64-bit Linux), f_type first
FUSE_SUPER_MAGIC = 0x65735546
_LIBC = ctypes.CDLL(None, use_errno=True)
_STATX = getattr(_LIBC, "statx", None)
_STATFS = getattr(_LIBC, "statfs", None)


class Attributes(NamedTuple):
    """What the code copy keeps of an entry's attributes (named as os.stat_result's)."""

    st_mode: int
    st_size: int
    st_mtime_ns: int


def looked_up_attributes_are_fresh(path: Path) -> bool:
    """Whether the file system holding `path` is FUSE, whose look-ups bring attributes as fresh as a getattr's."""
    if _STATX is None or _STATFS is None:
        return False
    buffer = ctypes.create_string_buffer(STATFS_SIZE)
    if _STATFS(os.fsencode(path), buffer) != 0:
        return False
    return ctypes.c_long.from_buffer(buffer).value == FUSE_SUPER_MAGIC


def lstat_at(fd: int, name: str, from_look_up: bool) -> Attributes:
    """The attributes of `name` in the open folder `fd` (a link's own); with `from_look_up` (where
    `looked_up_attributes_are_fresh` said so, which also means libc has statx), as its look-up brought them."""
    if from_look_up:
        return _statx(fd, name, AT_SYMLINK_NOFOLLOW)
    return _attributes(os.stat(name, dir_fd=fd, follow_symlinks=False))


def fstat_known(fd: int, from_look_up: bool) -> Attributes:
    """The attributes of an open file or folder; with `from_look_up`, as its opening brought them."""
    return _statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) if from_look_up else _attributes(os.fstat(fd))


def _attributes(st: os.stat_result) -> Attributes:
    return Attributes(st.st_mode, st.st_size, st.st_mtime_ns)


def _statx(fd: int, name: str, flags: int) -> Attributes:
    buffer = ctypes.create_string_buffer(STATX_SIZE)
    if _STATX(fd, os.fsencode(name), flags | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, buffer) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), name)
    raw = buffer.raw  # struct statx: stx_mode at 28 (u16), stx_size at 40 (u64), stx_mtime at 112 (s64 s, u32 ns)
    seconds, nanoseconds = int.from_bytes(raw[112:120], "little", signed=True), int.from_bytes(raw[120:124], "little")
    mtime_ns = seconds * 1_000_000_000 + nanoseconds
    return Attributes(int.from_bytes(raw[28:30], "little"), int.from_bytes(raw[40:48], "little"), mtime_ns)
