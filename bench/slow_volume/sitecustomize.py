"""A simulated slow network volume, for bench_layout.py; loaded by Python at start-up as `sitecustomize`.

bench_layout.py puts this folder first on PYTHONPATH of ComfyUI's and the handler's processes,
with SLOW_VOLUME_DIR (the volume's folders, separated by os.pathsep) and SLOW_VOLUME_MS. Every
file-system call on a path under them then waits SLOW_VOLUME_MS first: opening a file, stat/lstat (os.path.exists,
isfile, realpath...), listing a folder, creating, removing and renaming. It stands for a network
volume's per-operation round trip with no client-side caching, so it is a bound, not a model
of any one file system. Reads and writes of an open file are not slowed, nor calls made with a
relative path (shutil.rmtree's `dir_fd` calls). Without both variables nothing is changed.
"""

from __future__ import annotations

import builtins
import io
import os
import time
from collections.abc import Callable
from typing import Any

OS_CALLS = ("stat", "lstat", "listdir", "scandir", "open", "mkdir", "rmdir", "unlink", "remove", "rename", "replace")


def _slowed(call: Callable[..., Any], roots: list[str], delay_s: float) -> Callable[..., Any]:
    below = tuple(os.path.join(root, "") for root in roots)

    def slow(*args: Any, **kwargs: Any) -> Any:
        path = args[0] if args else kwargs.get("path", kwargs.get("file"))
        name = os.fspath(path) if isinstance(path, str | os.PathLike) else None
        if isinstance(name, str) and (name in roots or name.startswith(below)):
            time.sleep(delay_s)
        return call(*args, **kwargs)

    return slow


def _install() -> None:
    root, delay_ms = os.environ.get("SLOW_VOLUME_DIR"), os.environ.get("SLOW_VOLUME_MS")
    if not root or not delay_ms or float(delay_ms) <= 0:
        return
    roots, delay_s = [os.path.abspath(part) for part in root.split(os.pathsep)], float(delay_ms) / 1000
    builtins.open = io.open = _slowed(builtins.open, roots, delay_s)
    for name in OS_CALLS:
        setattr(os, name, _slowed(getattr(os, name), roots, delay_s))


_install()
