"""Big folders of data (no code below them) stay on the volume: the copy holds a link to each.

A venv carries large trees that ComfyUI's start never imports: C headers (torch/include alone
is thousands), JSON schemas, a web front end's assets, workflow templates. Copying them costs
bytes, and checking them at every start costs a look-up per file; worse, a network volume's
kernel client answers first look-ups in one folder about one at a time, so one folder of 2,000
files is seconds of the start on its own. Such a tree is read where it lies instead: the copy
holds a link to the volume's folder, so whatever is read from it is the volume's own, never
stale, and nothing below it is copied or checked.

A folder is linked when no file below it is code (a Python module or bytecode, a native
library, an executable) and at least `min_files` entries lie below it; only the topmost such
folder. The choice is made from the manifest's entries alone, so every worker makes the same.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable

from launcher import codepack

Entry = codepack.Entry
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".pyi", ".pth", ".so", ".dll", ".dylib")


def is_code(rel: str, entry: Entry) -> bool:
    """Python imports or loads it, or it runs: modules, bytecode, native libraries (libx.so.1 too), executables."""
    name = rel.rpartition("/")[2]
    if name.endswith(CODE_SUFFIXES) or ".so." in name:
        return True
    return entry[0] == "f" and bool(entry[1] & 0o111)


def parent(rel: str) -> str | None:
    """The folder `rel` lies in ("" the install's own, "@venv" an outside venv's); None for those two."""
    if not rel or rel == "@venv":
        return None
    return rel.rpartition("/")[0]


def linked_folders(entries: dict[str, Entry], min_files: int, tops: Iterable[str]) -> set[str]:
    """The topmost folders with at least `min_files` entries below them and no code: the copy links them."""
    if min_files <= 0:
        return set()
    below = entries_below(entries)
    data = {rel for rel in data_only(entries, tops) if below.get(rel, 0) >= min_files}
    inside_data = below_any(data)
    return {rel for rel in data if not inside_data(rel)}


def data_only(entries: dict[str, Entry], tops: Iterable[str]) -> set[str]:
    """The folders with no code below them (the install's and an outside venv's own folders never)."""
    folders = {rel for rel, entry in entries.items() if entry[0] == "d"} - set(tops)
    with_code = set()
    for rel, entry in entries.items():
        if is_code(rel, entry):
            folder = parent(rel)
            while folder is not None and folder not in with_code:
                with_code.add(folder)
                folder = parent(folder)
    return folders - with_code


def entries_below(entries: dict[str, Entry]) -> dict[str, int]:
    """For each folder, how many entries lie below it (at any depth)."""
    below: dict[str, int] = {}
    for rel in entries:
        folder = parent(rel)
        if folder is not None:
            below[folder] = below.get(folder, 0) + 1
    for folder in sorted(below, key=lambda rel: rel.count("/"), reverse=True):  # the deepest first
        up = parent(folder)
        if up is not None:
            below[up] = below.get(up, 0) + below[folder]
    return below


def below_any(folders: Iterable[str]) -> Callable[[str], bool]:
    """A test of whether a path lies below one of `folders` (not the folder itself). The prefixes are made
    once: the test is asked of every entry of the manifest, tens of thousands at each start."""
    prefixes = tuple(f"{folder}/" for folder in folders)
    return lambda rel: rel.startswith(prefixes)


def as_placed(entries: dict[str, Entry], folders: set[str], volume_path: Callable[[str], str]) -> dict[str, Entry]:
    """What the copy holds for `entries`: each linked folder a link to the volume's, nothing below it."""
    inside = below_any(folders)
    placed = {rel: entry for rel, entry in entries.items() if not inside(rel)}
    for rel in folders:
        if rel in placed:
            placed[rel] = ("l", stat.S_IFLNK | 0o777, 0, 0, volume_path(rel))
    return placed
