"""Where ComfyUI keeps its input, output and temp files, and safe paths inside them.

The handler runs in ComfyUI's container, so it reads outputs straight from disk instead of
fetching them over HTTP. The folders follow ComfyUI's own rules: `--output-directory`,
`--input-directory`, `--temp-directory` (ComfyUI appends "temp" to it) and
`--base-directory` from the command line ComfyUI reports in /system_stats, relative to
COMFYUI_DIR (its working directory), else COMFYUI_DIR's own input/, output/ and temp/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FOLDER_TYPES = ("input", "output", "temp")


@dataclass(frozen=True)
class Folders:
    input: Path
    output: Path
    temp: Path

    def root(self, kind: str) -> Path | None:
        return getattr(self, kind) if kind in FOLDER_TYPES else None

    def resolve(self, kind: str, subfolder: str, filename: str) -> Path | None:
        """The file's path, or None when `kind` is unknown or the path would leave its folder."""
        root = self.root(kind)
        if root is None or not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
            return None
        base = os.path.abspath(root)
        path = os.path.abspath(os.path.join(base, subfolder or "", filename))
        if os.path.commonpath([base, path]) != base:
            return None
        return Path(path)


def discover(comfyui_dir: Path, argv: list[str] | None) -> Folders:
    """ComfyUI's folders as its command line (from /system_stats) sets them."""
    flags = _flags(argv or [])
    base = _absolute(comfyui_dir, flags.get("--base-directory")) or comfyui_dir
    temp_parent = _absolute(comfyui_dir, flags.get("--temp-directory"))
    return Folders(
        input=_absolute(comfyui_dir, flags.get("--input-directory")) or base / "input",
        output=_absolute(comfyui_dir, flags.get("--output-directory")) or base / "output",
        temp=temp_parent / "temp" if temp_parent else base / "temp",
    )


def _flags(argv: list[str]) -> dict[str, str]:
    """`--name value` and `--name=value` pairs of a command line."""
    flags: dict[str, str] = {}
    for index, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, equals, value = arg.partition("=")
        if equals:
            flags[name] = value
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            flags[name] = argv[index + 1]
    return flags


def _absolute(cwd: Path, value: str | None) -> Path | None:
    return None if not value else Path(os.path.abspath(cwd / value))
