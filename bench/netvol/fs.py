"""The emulated network volume: a FUSE pass-through to a local folder that answers like a network file system.

    python -m bench.netvol.fs SOURCE MOUNTPOINT --control SOCKET [--rtt-ms 2] [--stream-mbps 200]
        [--total-mbps 400] [--attr-timeout 0] [--entry-timeout 0] [--negative-timeout 0] [--keep-cache]

Every call the kernel sends (look-up, getattr, open, read, readdir, readlink, access, statfs...)
waits one round trip (--rtt-ms) before it is answered; calls from different threads overlap, as
a network client's requests do. Reads are also capped in bandwidth, per open file (--stream-mbps)
and over all files together (--total-mbps), as a volume's client sees its share of the network.

The kernel's caching is explicit: --attr-timeout and --entry-timeout (seconds the kernel keeps
a file's attributes and a name's look-up), --negative-timeout (seconds it remembers that a name
does not exist), --keep-cache (file data stays in the page cache across opens). All zero and no
keep-cache is the pessimistic end: every call reaches the volume, as with a client that caches
nothing. Writes pass through (a round trip each, counted by kind): tests check from the counters
and the source folder that nothing but the worker's own manifest is ever written.

Counters (calls per kind, bytes read) are served as JSON on a Unix socket (--control): send
"stats" or "reset". bench/netvol/__init__.py mounts, reads and unmounts it.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import threading
import time
from collections import Counter
from typing import Any

import mfusepy as fuse

MB = 1_000_000
READ_SIZE = 1 << 20


class Pacer:
    """A bandwidth cap: each read of n bytes takes its n / rate after the reads before it on the same cap."""

    def __init__(self, bytes_per_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self.free_at = 0.0
        self.block = -1
        self.guard = threading.Lock()

    def new_request(self, offset: int) -> bool:
        """Whether a read at `offset` starts a client request of its own (a 1 MiB block not asked yet)."""
        block = offset // READ_SIZE
        with self.guard:
            fresh, self.block = block != self.block, block
        return fresh

    def book(self, size: int, now: float) -> float:
        """Reserve `size` bytes; returns when they have passed."""
        with self.guard:
            start = max(now, self.free_at)
            self.free_at = start + size / self.bytes_per_s
            return self.free_at


class NetVolume(fuse.Operations):
    use_ns = True

    def __init__(self, source: str, args: argparse.Namespace) -> None:
        self.source = os.path.realpath(source)
        self.rtt_s = args.rtt_ms / 1000
        self.stream_bps = args.stream_mbps * MB
        self.total = Pacer(args.total_mbps * MB)
        self.config = args
        self.calls: Counter[str] = Counter()
        self.bytes_read = 0
        self.guard = threading.Lock()
        self.streams: dict[int, Pacer] = {}

    # -- bookkeeping ------------------------------------------------------------------

    def _call(self, kind: str) -> None:
        """One round trip for one call of `kind`."""
        with self.guard:
            self.calls[kind] += 1
        if self.rtt_s:
            time.sleep(self.rtt_s)

    def _path(self, path: str) -> str:
        return os.path.join(self.source, path.lstrip("/"))

    def stats(self) -> dict[str, Any]:
        with self.guard:
            return {"calls": dict(self.calls), "total_calls": sum(self.calls.values()), "bytes_read": self.bytes_read}

    def reset(self) -> None:
        with self.guard:
            self.calls.clear()
            self.bytes_read = 0

    def init_with_config(self, conn: Any, config: Any) -> None:
        if conn is not None:  # reads of up to 1 MiB, as a network client's (the kernel's default is 128 KiB)
            conn.max_write = conn.max_readahead = READ_SIZE
        if config is None:
            return
        config.attr_timeout = self.config.attr_timeout
        config.entry_timeout = self.config.entry_timeout
        config.negative_timeout = self.config.negative_timeout
        config.kernel_cache = 1 if self.config.keep_cache else 0
        config.use_ino = 1

    # -- the calls --------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self._call("getattr")
        try:
            st = os.fstat(fh) if fh is not None else os.lstat(self._path(path))
        except OSError as error:
            raise fuse.FuseOSError(error.errno) from None
        names = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")
        attrs = {name: getattr(st, name) for name in names}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def access(self, path: str, amode: int) -> int:
        self._call("access")
        if not os.access(self._path(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def readlink(self, path: str) -> str:
        self._call("readlink")
        return os.readlink(self._path(path))

    def opendir(self, path: str) -> int:
        self._call("opendir")
        if not os.path.isdir(self._path(path)):
            raise fuse.FuseOSError(errno.ENOTDIR)
        return 0

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """The entries with their type and inode (the kernel skips an entry whose inode is 0)."""
        self._call("readdir")
        try:
            here = os.lstat(self._path(path))
            entries = [(".", here), ("..", here)]
            entries += [(entry.name, entry.stat(follow_symlinks=False)) for entry in os.scandir(self._path(path))]
        except OSError as error:
            raise fuse.FuseOSError(error.errno) from None
        return [(name, {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0) for name, st in entries]

    def releasedir(self, path: str, fh: int) -> int:
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        self._call("statfs")
        st = os.statvfs(self._path(path))
        names = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize")
        return {name: getattr(st, name) for name in names} | {"f_namemax": st.f_namemax}

    def open(self, path: str, flags: int) -> int:
        self._call("open")
        try:
            fh = os.open(self._path(path), flags & ~os.O_CREAT)
        except OSError as error:
            raise fuse.FuseOSError(error.errno) from None
        with self.guard:
            self.streams[fh] = Pacer(self.stream_bps)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        """A round trip per 1 MiB request, overlapped with the transfer; reads in flight share the caps.

        The kernel splits reads into 128 KiB FUSE calls; a network client asks for 1 MiB at a
        time, so only a read that starts a new 1 MiB block of the file waits a round trip.
        """
        started = time.monotonic()
        with self.guard:
            self.calls["read"] += 1
        data = os.pread(fh, size, offset)
        with self.guard:
            self.bytes_read += len(data)
            stream = self.streams.get(fh)
        sent = max(self.total.book(len(data), started), stream.book(len(data), started) if stream else 0.0)
        done_at = max(started + self.rtt_s, sent) if stream is None or stream.new_request(offset) else sent
        wait = done_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return data

    def release(self, path: str, fh: int) -> int:
        with self.guard:
            self.streams.pop(fh, None)
        os.close(fh)
        return 0

    # -- writes pass through, a round trip each (the worker writes only its manifest) ------

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        self._call("create")
        fh = os.open(self._path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with self.guard:
            self.streams[fh] = Pacer(self.stream_bps)
        return fh

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._call("write")
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self._call("truncate")
        os.truncate(self._path(path), length)
        return 0

    def _passed(kind: str, call: Any) -> Any:
        def method(self: NetVolume, path: str, *args: Any) -> int:
            self._call(kind)
            try:
                call(self, path, *args)
            except OSError as error:
                raise fuse.FuseOSError(error.errno) from None
            return 0

        return method

    mkdir = _passed("mkdir", lambda self, path, mode: os.mkdir(self._path(path), mode))
    rmdir = _passed("rmdir", lambda self, path: os.rmdir(self._path(path)))
    unlink = _passed("unlink", lambda self, path: os.unlink(self._path(path)))
    rename = _passed("rename", lambda self, path, new: os.rename(self._path(path), self._path(new)))
    chmod = _passed("chmod", lambda self, path, mode: os.chmod(self._path(path), mode))
    chown = _passed("chown", lambda self, path, uid, gid: os.lchown(self._path(path), uid, gid))
    utimens = _passed("utimens", lambda self, path, times=None: os.utime(self._path(path), ns=times))
    symlink = _passed("symlink", lambda self, path, target: os.symlink(target, self._path(path)))


def serve_control(volume: NetVolume, path: str) -> None:
    """Answer "stats" and "reset" on a Unix socket, one connection at a time."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)

    def loop() -> None:
        while True:
            connection, _ = server.accept()
            with connection:
                command = connection.recv(64).decode().strip()
                if command == "reset":
                    volume.reset()
                connection.sendall(json.dumps(volume.stats()).encode())

    threading.Thread(target=loop, daemon=True, name="control").start()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("--control", required=True, help="Unix socket for the counters")
    parser.add_argument("--rtt-ms", type=float, default=2.0)
    parser.add_argument("--stream-mbps", type=float, default=200.0, help="read cap per open file, MB/s")
    parser.add_argument("--total-mbps", type=float, default=400.0, help="read cap over all files, MB/s")
    parser.add_argument("--attr-timeout", type=float, default=0.0)
    parser.add_argument("--entry-timeout", type=float, default=0.0)
    parser.add_argument("--negative-timeout", type=float, default=0.0)
    parser.add_argument("--keep-cache", action="store_true", help="file data stays cached across opens")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    volume = NetVolume(args.source, args)
    serve_control(volume, args.control)
    # allow_other: ComfyUI's own user reads the volume too; max_read: the kernel's large reads.
    fuse.FUSE(volume, args.mountpoint, foreground=True, allow_other=True, default_permissions=True)


if __name__ == "__main__":
    main()
