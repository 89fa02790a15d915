"""Safe paths inside the worker's folders (worker_common.layout), checked with real paths.

The handler runs as root beside ComfyUI and reads ComfyUI's outputs straight from disk. A name
ComfyUI reports comes from node code nobody here wrote, and a folder may hold a symbolic link a
custom node placed: every path is resolved with its links and must stay inside its folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from worker_common.layout import Layout


def inside(root: Path, path: Path) -> bool:
    """Whether `path` is `root` or below it (both already real paths)."""
    return path == root or root in path.parents


def real_path_in(layout: Layout, kind: str, subfolder: str, filename: str) -> Path | None:
    """The real path of a file in one of ComfyUI's folders (input, output, temp), or None.

    None when the folder type is unknown, the name is not a plain file name, or the path,
    once its links are resolved, leaves the folder.
    """
    folder = layout.folder(kind)
    if folder is None or not filename or "/" in filename or filename in (".", "..") or "\0" in filename + subfolder:
        return None
    root = Path(os.path.realpath(folder))
    path = Path(os.path.realpath(root / subfolder / filename))
    return path if inside(root, path) and path != root else None
