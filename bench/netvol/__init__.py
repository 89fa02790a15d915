"""Mount the emulated network volume (bench/netvol/netvol.c) for benchmarks and tests.

    with mounted(source, mountpoint, Settings(rtt_ms=2)) as volume:
        ...  # use mountpoint; volume.stats() / volume.reset()

The volume is a small C program on libfuse3, built here on first use (gcc, pkg-config and
libfuse3-dev: `make system-deps`) into .run/netvol/. Needs root (or fuse3's fusermount3) and
/dev/fuse. Each mount starts with an empty cache for its files (the kernel keeps a FUSE file's
pages only while it is mounted); `drop_page_cache` drops the whole machine's page cache too,
where that is allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
SOURCE = Path(__file__).resolve().parent / "netvol.c"
BUILT = REPO / ".run" / "netvol" / "netvol"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The volume's behaviour: a round trip per call, read caps, and how much the kernel may cache."""

    rtt_ms: float = 2.0
    stream_mbps: float = 200.0
    total_mbps: float = 400.0
    attr_timeout: float = 0.0
    entry_timeout: float = 0.0
    negative_timeout: float = 0.0
    keep_cache: bool = False  # file data kept across opens, whatever happened to the file
    close_to_open: bool = False  # file data kept across opens while its mtime and size are unchanged (NFS)

    def args(self) -> list[str]:
        args = [
            f"--rtt-ms={self.rtt_ms}",
            f"--stream-mbps={self.stream_mbps}",
            f"--total-mbps={self.total_mbps}",
            f"--attr-timeout={self.attr_timeout}",
            f"--entry-timeout={self.entry_timeout}",
            f"--negative-timeout={self.negative_timeout}",
        ]
        args += ["--keep-cache"] if self.keep_cache else []
        return args + (["--close-to-open"] if self.close_to_open else [])

    def describe(self) -> str:
        caching = (
            f"attr {self.attr_timeout:g} s, entry {self.entry_timeout:g} s, negative {self.negative_timeout:g} s"
            + (", keep-cache" if self.keep_cache else "")
            + (", close-to-open" if self.close_to_open else "")
        )
        return (
            f"+{self.rtt_ms:g} ms/call, {self.stream_mbps:g} MB/s per file, {self.total_mbps:g} MB/s total; {caching}"
        )


PESSIMISTIC = Settings()
# Nothing cached but file data while the file is unchanged: an NFS client's close-to-open consistency.
CLOSE_TO_OPEN = Settings(close_to_open=True)
# A client that caches attributes and look-ups (failed ones too) for a while, and file data across opens.
KINDER = Settings(attr_timeout=60.0, entry_timeout=60.0, negative_timeout=60.0, keep_cache=True)


class Volume:
    """A mounted emulated volume: its counters over its control socket."""

    def __init__(self, mountpoint: Path, control: Path, process: subprocess.Popen) -> None:
        self.mountpoint = mountpoint
        self.control = control
        self.process = process

    def _ask(self, command: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(self.control))
            client.sendall(command.encode())
            client.shutdown(socket.SHUT_WR)
            return json.loads(b"".join(iter(lambda: client.recv(65536), b"")))

    def stats(self) -> dict[str, Any]:
        """{"calls": {kind: n}, "total_calls": n, "bytes_read": n} since the mount or the last reset."""
        return self._ask("stats")

    def reset(self) -> dict[str, Any]:
        return self._ask("reset")


def is_mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines())


@contextlib.contextmanager
def mounted(source: Path, mountpoint: Path, settings: Settings = PESSIMISTIC) -> Iterator[Volume]:
    """Mount `source` at `mountpoint` through the emulated volume; unmounted on exit."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    control = mountpoint.parent / f".{mountpoint.name}.control"
    control.unlink(missing_ok=True)
    log = mountpoint.parent / f".{mountpoint.name}.log"
    command = [str(built()), str(source), str(mountpoint), "--control", str(control)]
    with open(log, "wb") as log_file:
        output = {"stdout": log_file, "stderr": subprocess.STDOUT}
        process = subprocess.Popen([*command, *settings.args()], cwd=REPO, preexec_fn=normal_priority, **output)
    try:
        _wait_mounted(mountpoint, control, process, log)
        yield Volume(mountpoint, control, process)
    finally:
        unmount(mountpoint, process)
        control.unlink(missing_ok=True)


def built() -> Path:
    """The volume's program, compiled again when its source is newer (to a temporary name, then renamed)."""
    if BUILT.exists() and BUILT.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BUILT
    BUILT.parent.mkdir(parents=True, exist_ok=True)
    partial = BUILT.with_name(f"netvol.partial-{os.getpid()}")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True)
    if flags.returncode != 0:
        raise RuntimeError("the emulated volume needs libfuse3's headers and pkg-config: run `make system-deps`")
    compiled = subprocess.run(
        ["gcc", "-O2", "-Wall", "-o", str(partial), str(SOURCE), *flags.stdout.split(), "-lpthread"],
        capture_output=True,
        text=True,
    )
    if compiled.returncode != 0:
        raise RuntimeError(f"the emulated volume did not build: {compiled.stderr[-2000:]}")
    partial.replace(BUILT)
    return BUILT


def normal_priority() -> None:
    """The volume is another machine: a benchmark run under `nice` must not slow the volume's answers too."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


def _wait_mounted(mountpoint: Path, control: Path, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while not (is_mounted(mountpoint) and control.exists()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the emulated volume did not mount at {mountpoint}: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def unmount(mountpoint: Path, process: subprocess.Popen) -> None:
    if is_mounted(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def drop_page_cache() -> bool:
    """Drop the machine's page cache (root only); False where it is not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True
