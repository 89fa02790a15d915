"""A copy of ComfyUI's code on the container's own disk, so that its start costs bytes, not round trips.

ComfyUI's start imports thousands of modules from its venv, itself and its custom nodes; Python
stats and opens many paths for each (most of them missing), and on a network volume every one
of those calls is a round trip. Here, before ComfyUI starts, the code it imports (the ComfyUI
install without models/, input/, output/, user/, temp/ and .git, and its venv) is brought to
CODE_COPY_DIR on the container's disk, and ComfyUI runs from there:

- what is already there (the container's disk survived a restart) is checked against the
  volume, entry by entry in parallel (one lstat each), and only what changed is copied again:
  a changed volume is never served stale, and nothing is trusted that was not checked now;
- a fresh container reads the list of entries from a manifest some worker kept on the volume
  (VOLUME/.comfy-worker/code/<worker id>.json, each worker writing only its own, and only when
  its code differs from the list it started from) instead of walking the tree, checks it the
  same way, and copies every file in parallel;
- the copy's `models` is a link to the volume's models (models are read where they lie), and so
  is each big folder with no code below it (launcher/datafolders.py): neither copied nor checked;
- the venv's scripts name the copy's path, and Python bytecode is compiled into the copy once
  (ComfyUI's user cannot write there, nor to the volume).

The volume stays the source of truth: this only reads it, except for this worker's own
manifest file. A copy larger than CODE_COPY_DISK_BUDGET_MB, a volume as fast as local disk, a
volume whose client caches look-ups when this disk has no copy yet and the volume no pack of the
code (measured: ComfyUI's imports then cost far fewer calls than a first copy's walk), or
CODE_COPY=false runs ComfyUI from the volume.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import heapq
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from launcher import codepack, datafolders, lookup
from launcher.datafolders import as_placed, below_any
from worker_common.files import write_atomically
from worker_common.layout import Layout, inside

ROOT = Path(__file__).resolve().parent.parent  # where `python -m launcher...` runs
MB = 1_000_000
FOLDER_MODE = 0o755  # a new folder's, under the copy's umask (022)
# Never copied: the volume's data, and the worker's own manifests.
SKIPPED_TOP = frozenset({"models", "input", "output", "user", "temp", ".git", ".comfy-worker"})
LOCAL_MANIFEST = ".comfy-worker-copy.json"
MANIFEST_VERSION = 1
PROBE_CALLS = 5
CHUNK = 8 << 20
BATCH = 32  # entries of one folder per task
FOLDER_BATCHES = 4  # tasks of one folder at once in the check
T = TypeVar("T")

# One entry: kind ("f" file, "d" folder, "l" link), mode, size, mtime in ns, and a link's target.
Entry = tuple[str, int, int, int, str]


@dataclass(frozen=True)
class Settings:
    enabled: bool
    copy_dir: Path
    disk_budget_bytes: int
    threads: int
    min_call_ms: float
    check: str = "files"  # or "folders": only folders are looked at (their mtime changes when entries come or go)
    pack_streams: int = 4  # parallel range reads of a pack on the volume; 0: no pack
    data_link_min_files: int = 256  # a folder of data with this many entries below stays on the volume; 0: never


@dataclass
class Result:
    """What one sync did; `comfyui_dir`/`venv` are what ComfyUI runs from (the volume's when not copied)."""

    comfyui_dir: Path
    venv: Path
    copied: bool
    reason: str
    entries: int = 0
    files_copied: int = 0
    bytes_copied: int = 0
    removed: int = 0
    linked: int = 0  # data folders left on the volume (launcher/datafolders.py)
    files_unpacked: int = 0  # written from a pack on the volume (launcher/codepack.py)
    fast_volume: bool = False  # the volume answers as fast as a local disk
    pack_from_volume: bool = False  # run from a caching volume for want of a pack: keep one, for the next workers
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def record(self, path: Path, started_at: float) -> None:
        """Leave what this start did for the sidecar's metrics (best effort: never stops ComfyUI's start)."""
        data = {
            "code_ready_after_start_s": time.time() - started_at if started_at else None,
            "from_copy": self.copied,
            "reason": self.reason,
            "entries_checked": self.entries,
            "files_copied": self.files_copied,
            "bytes_copied": self.bytes_copied,
            "removed": self.removed,
            "data_folders_linked": self.linked,
            "files_unpacked": self.files_unpacked,
            "duration_s": self.seconds,
        }
        with contextlib.suppress(OSError):
            write_atomically(path, json.dumps(data))

    def describe(self) -> str:
        if not self.copied:
            return f"ComfyUI runs from the volume ({self.reason})"
        took = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.phases.items())
        return (
            f"ComfyUI's code copied to {self.comfyui_dir.parent} in {self.seconds:.2f} s ({self.reason}): "
            f"{self.entries} entries checked, {self.files_copied} files ({self.bytes_copied / MB:.1f} MB) copied, "
            f"{self.removed} removed, {self.files_unpacked} from a pack, {self.linked} data folders linked; "
            f"{took}"
        )


class Tree:
    """The code on the volume: the ComfyUI install and its venv, named relative to the install."""

    def __init__(self, layout: Layout) -> None:
        self.root = layout.comfyui_dir
        self.venv_inside = inside(layout.comfyui_dir, layout.venv)
        # A venv outside the install is copied beside it, as "<copy>/venv".
        self.venv_rel = os.path.relpath(layout.venv, layout.comfyui_dir) if self.venv_inside else None
        self.venv = layout.venv

    def volume_path(self, rel: str) -> str:
        if not self.venv_inside and (rel == "@venv" or rel.startswith("@venv/")):
            return str(self.venv) + rel[len("@venv") :]
        return os.path.join(self.root, rel) if rel else str(self.root)

    def source(self) -> list[str]:
        """What a manifest or pack is of: this install and venv."""
        return [str(self.root), str(self.venv)]

    def tops(self) -> list[str]:
        return [""] if self.venv_inside else ["", "@venv"]

    def skipped(self, rel: str) -> bool:
        return "/" not in rel and rel in SKIPPED_TOP


class Syncer:
    def __init__(
        self, tree: Tree, settings: Settings, pool: concurrent.futures.ThreadPoolExecutor | None = None
    ) -> None:
        self.tree = tree
        self.settings = settings
        self.pool = pool
        self.dest = settings.copy_dir / "ComfyUI"
        self.from_look_up = lookup.looked_up_attributes_are_fresh(tree.root)  # one statfs

    def local_path(self, rel: str) -> str:
        return copy_path(self.settings.copy_dir, rel)

    def linked(self, entries: dict[str, Entry]) -> set[str]:
        """The data folders the copy links to the volume's instead of copying (launcher/datafolders.py)."""
        return datafolders.linked_folders(entries, self.settings.data_link_min_files, self.tree.tops())

    def placed(self, entries: dict[str, Entry]) -> dict[str, Entry]:
        """What the copy holds for `entries`: the linked folders as links, nothing below them."""
        return as_placed(entries, self.linked(entries), self.tree.volume_path)

    # -- reading the volume -------------------------------------------------------------

    def lstat(self, rel: str) -> Entry | None:
        try:
            st = os.lstat(self.tree.volume_path(rel))
        except FileNotFoundError:
            return None
        return entry_of(st, lambda: os.readlink(self.tree.volume_path(rel)))

    def in_folder(self, parent: str, names: list[str], work: Callable[[int, str], T]) -> list[T | None]:
        """`work(folder fd, name)` for names in one folder: the folder's path is resolved once, each
        name alone after (a network volume's client resolves every component of a path, each a
        round trip). None for a name that is gone, or all of them when the folder is."""
        try:
            fd = os.open(self.tree.volume_path(parent), os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return [None] * len(names)
        try:
            return [_or_none(work, fd, name) for name in names]
        finally:
            os.close(fd)

    def scan(self, rel: str) -> dict[str, Entry]:
        """One folder's children, with their attributes (one look-up each, relative to the folder)."""
        try:
            fd = os.open(self.tree.volume_path(rel), os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        children: dict[str, Entry] = {}
        try:
            with os.scandir(fd) as listing:
                for item in listing:
                    child = f"{rel}/{item.name}" if rel else item.name
                    if not self.tree.skipped(child):
                        name = item.name
                        link = functools.partial(os.readlink, name, dir_fd=fd)
                        children[child] = entry_of(item.stat(follow_symlinks=False), link)
        finally:
            os.close(fd)
        return children

    def walk(self, folders: Iterable[str]) -> dict[str, Entry]:
        """Every entry below `folders`, each folder listed in parallel."""
        found: dict[str, Entry] = {}
        pending = {self.pool.submit(self.scan, rel) for rel in folders}
        while pending:
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                children = future.result()
                found.update(children)
                pending |= {self.pool.submit(self.scan, rel) for rel, entry in children.items() if entry[0] == "d"}
        return found

    def walk_all(self) -> dict[str, Entry]:
        """Every entry of the code, every folder listed (no manifest to start from)."""
        tops = {top: self.lstat(top) for top in self.tree.tops()}
        missing = [self.tree.volume_path(top) for top, entry in tops.items() if entry is None or entry[0] != "d"]
        if missing:
            raise FileNotFoundError(f"no folder {' '.join(missing)}")
        return tops | self.walk(tops)  # type: ignore[operator]

    def check(self, known: dict[str, Entry]) -> dict[str, Entry]:
        """The volume now: every known entry looked at again in parallel; changed folders listed again.
        Below a linked data folder nothing is looked at: the copy reads it from the volume."""
        folders_only = self.settings.check == "folders"
        linked = self.linked(known)
        in_linked = below_any(linked)
        tops, current = self.open_tops(known)
        asked = by_folder(
            rel
            for rel, entry in known.items()
            if rel not in current and not in_linked(rel) and (entry[0] == "d" or not folders_only)
        )
        current |= self.look_up(known, tops, asked)
        changed = [rel for rel, entry in current.items() if entry[0] == "d" and entry != known.get(rel)]
        for children in self.pool.map(self.scan, [rel for rel in changed if rel not in linked]):
            current.update(children)
        current |= self.below_linked(known, current, linked)
        if folders_only:  # a folder's files stand as they were while the folder is unchanged
            same = {rel for rel, entry in current.items() if entry[0] == "d" and entry == known.get(rel)}
            current |= {
                rel: entry for rel, entry in known.items() if entry[0] != "d" and rel.rpartition("/")[0] in same
            }
        new_folders = [
            rel for rel, entry in current.items() if entry[0] == "d" and rel not in known and not in_linked(rel)
        ]
        return current | self.walk(new_folders)

    def below_linked(self, known: dict[str, Entry], current: dict[str, Entry], linked: set[str]) -> dict[str, Entry]:
        """What lies below the linked folders: as known while a folder is unchanged, else listed again in full
        (it may hold code now). Nothing below a folder that is gone or no longer a folder."""
        unchanged = {rel for rel in linked if current.get(rel) == known[rel]}
        relisted = [rel for rel in linked if rel not in unchanged and current.get(rel, ("",))[0] == "d"]
        in_unchanged = below_any(unchanged)
        kept = {rel: entry for rel, entry in known.items() if in_unchanged(rel)}
        return kept | self.walk(relisted)

    def look_up(
        self, known: dict[str, Entry], tops: dict[str, int], asked: list[tuple[str, list[str]]]
    ) -> dict[str, Entry]:
        """The `asked` names (batches per folder) as they are now, each looked up relative to its open folder.

        A network client resolves every component of a path with round trips of its own, so no path
        is resolved twice: a folder is opened relative to its parent (in the parent's batch) and its
        own batches start as soon as it is open, those with the most names below them first (a big
        folder's look-ups are the start's longest chain); it is closed when its last batch is done.
        At most FOLDER_BATCHES of one folder run at once: first look-ups in one folder are answered
        about one at a time (measured on the emulated volume), so more would only keep threads from
        the other folders. `tops` (open folders) are closed too, by the pool's threads: closing a
        volume's folder takes a while, and this loop is what keeps the threads busy."""
        batches: dict[str, list[list[str]]] = {}
        for parent, names in asked:
            batches.setdefault(parent, []).append(names)
        below = names_below(asked)
        waiting: list[tuple[int, str, list[str]]] = []  # a heap: the most names below first
        open_folders: dict[str, int] = {}
        left: dict[str, int] = {}
        running: dict[concurrent.futures.Future, str] = {}
        found: dict[str, Entry] = {}

        def opened(rel: str, fd: int) -> None:
            if rel not in batches:
                self.pool.submit(os.close, fd)
                return
            open_folders[rel], left[rel] = fd, len(batches[rel])
            for _ in range(FOLDER_BATCHES):
                next_batch(rel)

        def next_batch(rel: str) -> None:
            if batches[rel]:
                heapq.heappush(waiting, (-below[rel], rel, batches[rel].pop()))

        try:
            for rel, fd in tops.items():
                opened(rel, fd)
            while waiting or running:
                while waiting and len(running) < 2 * self.settings.threads:
                    _, rel, names = heapq.heappop(waiting)
                    running[self.pool.submit(self.look_at, known, rel, open_folders[rel], names)] = rel
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    rel = running.pop(future)
                    entries, folders = future.result()
                    found.update(entries)
                    for child, fd in folders.items():
                        opened(child, fd)
                    left[rel] -= 1
                    next_batch(rel)
                    if left[rel] == 0:
                        self.pool.submit(os.close, open_folders.pop(rel))
        finally:  # on an error: the batches still running use their folders, then every folder is closed
            for future in concurrent.futures.as_completed(running):
                with contextlib.suppress(OSError):
                    close_all(future.result()[1])
            close_all(open_folders)
        return found

    def open_tops(self, known: dict[str, Entry]) -> tuple[dict[str, int], dict[str, Entry]]:
        """The install's (and an outside venv's) folder, opened: ({rel: fd}, {rel: entry})."""
        folders: dict[str, int] = {}
        current: dict[str, Entry] = {}
        for top in self.tree.tops():
            if top not in known:
                continue
            try:
                fd = os.open(self.tree.volume_path(top), os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                if entry := self.lstat(top):
                    current[top] = entry
                continue
            folders[top], current[top] = fd, entry_of(os.fstat(fd), str)
        return folders, current

    def look_at(
        self, known: dict[str, Entry], parent: str, fd: int, names: list[str]
    ) -> tuple[dict[str, Entry], dict[str, int]]:
        """Names of one open folder as they are now, and the folders among them, opened ({rel: fd})."""
        found: dict[str, Entry] = {}
        opened: dict[str, int] = {}
        try:
            for name in names:
                rel = join(parent, name)
                folder = _or_none(self.open_at, fd, name) if known[rel][0] == "d" else None
                if folder:
                    opened[rel], found[rel] = folder
                elif entry := _or_none(self.stat_at, fd, name):
                    found[rel] = entry
        except BaseException:
            close_all(opened)
            raise
        return found, opened

    def stat_at(self, fd: int, name: str) -> Entry:
        attributes = lookup.lstat_at(fd, name, self.from_look_up)
        return entry_of(attributes, functools.partial(os.readlink, name, dir_fd=fd))

    def open_at(self, fd: int, name: str) -> tuple[int, Entry] | None:
        """A folder opened relative to its parent, with its entry; None when it is no longer a folder."""
        try:
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except NotADirectoryError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:  # a link now
                return None
            raise
        try:
            return child, entry_of(lookup.fstat_known(child, self.from_look_up), str)
        except BaseException:
            os.close(child)
            raise

    # -- writing the copy ---------------------------------------------------------------

    def copy_files(self, parent: str, names: list[str], entries: list[Entry]) -> int:
        """Copy files of one folder in large reads, atomically, mode and mtime kept (bytecode checks the mtime)."""
        by_name = dict(zip(names, entries, strict=True))

        def copy(fd: int, name: str) -> int:
            entry, target = by_name[name], self.local_path(join(parent, name))
            partial = f"{target}.partial-{os.getpid()}"
            copied = 0
            with os.fdopen(os.open(name, os.O_RDONLY, dir_fd=fd), "rb") as reader, open(partial, "wb") as writer:
                while chunk := reader.read(CHUNK):
                    writer.write(chunk)
                    copied += len(chunk)
            os.chmod(partial, stat.S_IMODE(entry[1]))
            os.utime(partial, ns=(entry[3], entry[3]))
            os.replace(partial, target)
            return copied

        copied = self.in_folder(parent, names, copy)
        if None in copied:  # changed under us: the next start checks it again (no manifest is written)
            raise FileNotFoundError(f"a file of {self.tree.volume_path(parent)} went away while it was copied")
        return sum(size or 0 for size in copied)

    def place(self, current: dict[str, Entry], have: dict[str, Entry]) -> tuple[list[str], int, int]:
        """Make the copy match `current`: (the files copied, bytes copied, entries removed)."""
        removed = [rel for rel in have if rel not in current or current[rel][0] != have[rel][0]]
        for rel in sorted(removed, reverse=True):  # children before their folders
            remove(self.local_path(rel))
        for top in self.tree.tops():
            Path(self.local_path(top)).mkdir(parents=True, exist_ok=True)
        folders = [rel for rel, entry in current.items() if entry[0] == "d" and have.get(rel) != entry]
        for rel in sorted(folders):
            Path(self.local_path(rel)).mkdir(exist_ok=True)
        for rel, entry in current.items():
            if entry[0] == "l" and have.get(rel) != entry:
                remove(self.local_path(rel))
                os.symlink(entry[4], self.local_path(rel))
        stale = [(rel, entry) for rel, entry in current.items() if entry[0] == "f" and have.get(rel) != entry]
        batches = by_folder(rel for rel, _ in stale)

        def copy_batch(batch: tuple[str, list[str]]) -> int:
            parent, names = batch
            return self.copy_files(parent, names, [current[join(parent, name)] for name in names])

        sizes = list(self.pool.map(copy_batch, batches))
        for rel in folders:
            os.chmod(self.local_path(rel), stat.S_IMODE(current[rel][1]))
        return [rel for rel, _ in stale], sum(sizes), len(removed)


def copy_path(copy_dir: Path, rel: str) -> str:
    """Where the copy in `copy_dir` holds the volume's `rel` (an outside venv's "@venv/..." as "venv/...")."""
    if rel == "@venv" or rel.startswith("@venv/"):
        return str(copy_dir / "venv") + rel[len("@venv") :]
    return os.path.join(copy_dir, "ComfyUI", rel) if rel else str(copy_dir / "ComfyUI")


def unpack_in_process(pack: codepack.Pack, copy_dir: Path, streams: int) -> dict[str, Entry]:
    """codepack.unpack into the copy, by `python -m launcher.unpacker` (it says why); raises OSError with its error."""
    job = {"index": pack.as_index(), "folder": str(pack.path.parent), "copy_dir": str(copy_dir), "streams": streams}
    command = [sys.executable, "-m", "launcher.unpacker"]
    done = subprocess.run(command, input=json.dumps(job), capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise OSError(f"unpacking failed: {lines[-1]}")
    return {rel: pack.entries[rel] for rel in json.loads(done.stdout)}


def entry_of(st: os.stat_result | lookup.Attributes, link: Callable[[], str]) -> Entry:
    if stat.S_ISLNK(st.st_mode):
        return ("l", st.st_mode, 0, st.st_mtime_ns, link())
    kind = "d" if stat.S_ISDIR(st.st_mode) else "f"
    return (kind, st.st_mode, st.st_size if kind == "f" else 0, st.st_mtime_ns, "")


def close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        os.close(fd)
    fds.clear()


def _or_none(work: Callable[[int, str], T], fd: int, name: str) -> T | None:
    try:
        return work(fd, name)
    except FileNotFoundError:
        return None


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def by_folder(rels: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Entries grouped by folder, in batches of at most BATCH names (each batch one task)."""
    folders: dict[str, list[str]] = {}
    for rel in rels:
        parent, _, name = rel.rpartition("/")
        folders.setdefault(parent, []).append(name)
    return [(parent, names[i : i + BATCH]) for parent, names in folders.items() for i in range(0, len(names), BATCH)]


def names_below(asked: list[tuple[str, list[str]]]) -> dict[str, int]:
    """For each folder of `asked`, how many names are asked in it and in the folders below it."""
    below: dict[str, int] = {}
    for parent, names in asked:
        folder = parent
        while True:
            below[folder] = below.get(folder, 0) + len(names)
            if not folder or folder == "@venv":
                break
            folder = folder.rpartition("/")[0]
    return below


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# -- the manifests ----------------------------------------------------------------------


def read_manifest(path: Path, tree: Tree, links: int | None = None) -> dict[str, Entry]:
    """The entries a manifest lists, if it is one for this install and venv (else none). For the copy's own,
    `links` is CODE_COPY_DATA_LINK_MIN_FILES: a copy that linked its data folders by another is not used."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != MANIFEST_VERSION or data.get("source") != tree.source():
        return {}
    if links is not None and data.get("links") != links:
        return {}
    return {rel: tuple(entry) for rel, entry in data["entries"].items()}  # type: ignore[misc]


def write_manifest(path: Path, tree: Tree, entries: dict[str, Entry], links: int | None = None) -> None:
    """Write atomically (a reader sees the old file or the new one, never a part)."""
    data: dict[str, object] = {"version": MANIFEST_VERSION, "source": tree.source(), "entries": entries}
    if links is not None:
        data["links"] = links
    write_atomically(path, json.dumps(data, separators=(",", ":")))


def volume_manifests(tree: Tree) -> Path:
    return tree.root / ".comfy-worker" / "code"


def newest_volume_manifest(tree: Tree) -> dict[str, Entry]:
    """The newest manifest any worker kept on the volume (one listing and a stat per worker's file)."""
    try:
        paths = [path for path in volume_manifests(tree).glob("*.json") if not path.name.endswith(codepack.INDEX)]
        paths.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    except OSError:
        return {}
    return next((entries for entries in map(lambda path: read_manifest(path, tree), paths) if entries), {})


# -- one sync ---------------------------------------------------------------------------


def call_ms(root: Path, repeated: bool = False) -> float:
    """The volume's time per look-up, the median of a few: of names never asked before (a round trip
    each), or with `repeated` of the install's own folder again and again (none when the client caches).
    One after another: a volume's client answers first look-ups in one folder one at a time anyway."""
    times = []
    os.path.lexists(root)
    for index in range(PROBE_CALLS):
        path = root if repeated else root / f".comfy-worker-probe-{os.getpid()}-{index}"
        started = time.perf_counter()
        os.path.lexists(path)
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def sync(layout: Layout, settings: Settings) -> Result:
    """Bring the copy up to date with the volume; says what ComfyUI runs from."""
    started = time.monotonic()
    on_volume = Result(layout.comfyui_dir, layout.venv, copied=False, reason="")
    if not settings.enabled:
        on_volume.reason = "CODE_COPY=false"
        return on_volume
    probe_ms = call_ms(layout.comfyui_dir)
    if probe_ms < settings.min_call_ms:
        on_volume.reason = f"the volume answers in {probe_ms:.2f} ms per call, below CODE_COPY_MIN_CALL_MS"
        on_volume.fast_volume = True
        return on_volume
    tree = Tree(layout)
    has_copy = (settings.copy_dir / LOCAL_MANIFEST).is_file()
    pack = None if has_copy else usable_pack(tree, settings)
    repeat_ms = call_ms(layout.comfyui_dir, repeated=True)
    if repeat_ms < settings.min_call_ms and not has_copy and pack is None:
        on_volume.reason = (
            f"the volume's client caches look-ups ({repeat_ms:.2f} ms for a repeated one), this disk has no copy "
            "yet and the volume no pack of the code: ComfyUI's imports cost fewer calls than a first copy"
        )
        on_volume.pack_from_volume = True
        return on_volume
    # The launcher runs as root under the entrypoint's umask 077; ComfyUI runs as COMFYUI_USER and must read
    # the copy (its folders, and the bytecode the compile step writes), as it reads the volume.
    umask = os.umask(0o022)
    try:
        settings.copy_dir.mkdir(parents=True, exist_ok=True)
        settings.copy_dir.chmod(0o755)
        with open_files_allowed(), concurrent.futures.ThreadPoolExecutor(settings.threads, "codecopy") as pool:
            return Copier(tree, settings, pool, started).run(layout.worker_id, probe_ms, pack)
    except OSError as error:  # no install yet, an unreadable file: the launch checks say what is wrong
        on_volume.reason = f"the copy failed: {error}"
        return on_volume
    finally:
        os.umask(umask)


def usable_pack(tree: Tree, settings: Settings) -> codepack.Pack | None:
    """The newest pack on the volume, if its files fit the disk budget."""
    if settings.pack_streams == 0:
        return None
    pack = codepack.newest_pack(volume_manifests(tree), tree.source())
    return pack if pack and pack.data_bytes <= settings.disk_budget_bytes else None


@contextlib.contextmanager
def open_files_allowed() -> Iterator[None]:
    """The check keeps many folders open at once (hundreds, in a venv's deep trees): the soft limit
    on open files is raised to the hard one meanwhile, and put back before ComfyUI starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def keep_pack(layout: Layout, settings: Settings) -> str:
    """Keep a pack of the code on the volume for fresh workers (launcher/codepack.py): of this worker's copy, or
    of the volume's own files when this worker runs from the volume (Result.pack_from_volume); says what it did."""
    tree = Tree(layout)
    entries = read_manifest(settings.copy_dir / LOCAL_MANIFEST, tree, settings.data_link_min_files)
    with concurrent.futures.ThreadPoolExecutor(settings.threads, "codepack-walk") as pool:
        syncer = Syncer(tree, settings, pool)
        source = syncer.local_path if entries else tree.volume_path
        entries = entries or syncer.walk_all()
    scripts = f"{tree.venv_rel or '@venv'}/bin/"  # rewritten for this copy's path: each worker copies its own
    packed = {rel: entry for rel, entry in syncer.placed(entries).items() if not rel.startswith(scripts)}
    return codepack.publish(volume_manifests(tree), layout.worker_id, tree.source(), entries, packed, source)


class Copier(Syncer):
    def __init__(self, tree: Tree, settings: Settings, pool: concurrent.futures.ThreadPoolExecutor, started: float):
        super().__init__(tree, settings, pool)
        self.started = started
        self.phases: dict[str, float] = {}
        self.mark = started

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = now - self.mark
        self.mark = now

    def run(self, worker_id: str, probe_ms: float, pack: codepack.Pack | None) -> Result:
        """`pack`: the newest usable pack, if sync() looked (else it is looked for here when needed)."""
        local_manifest = self.settings.copy_dir / LOCAL_MANIFEST
        have = read_manifest(local_manifest, self.tree, self.settings.data_link_min_files)
        pack = None if have else pack or usable_pack(self.tree, self.settings)
        known = have or (pack.entries if pack else newest_volume_manifest(self.tree))
        self.phase("manifest")
        if pack:  # the pack is read while the volume is checked; what the check finds changed is copied again
            local_manifest.unlink(missing_ok=True)
            for top in self.tree.tops():
                remove(self.local_path(top))
            in_pack = self.placed(pack.entries)  # an older pack may hold what is now a linked folder's
            pack = replace(pack, offsets={rel: at for rel, at in pack.offsets.items() if rel in in_pack})
            with concurrent.futures.ThreadPoolExecutor(1) as waiter:
                unpacked = waiter.submit(self.unpack, pack, in_pack)
                current = self.check(known)
                have = self.unpacked(unpacked, pack, in_pack)
            self.phase("pack+check")
        else:
            current = self.check(known) if known else self.walk_all()
            self.phase("check" if known else "walk")
        linked = self.linked(current)
        placed = as_placed(current, linked, self.tree.volume_path)
        size = sum(entry[2] for entry in placed.values())
        venv_copy = Path(self.local_path(self.tree.venv_rel or "@venv"))
        result = Result(self.dest, venv_copy, copied=True, reason=f"{probe_ms:.2f} ms per call", entries=len(current))
        result.linked = len(linked)
        if size > self.settings.disk_budget_bytes:
            budget = self.settings.disk_budget_bytes // MB
            for top in self.tree.tops() if pack else ():  # what the pack wrote goes too
                remove(self.local_path(top))
            return Result(
                self.tree.root,
                self.tree.venv,
                False,
                f"the code is {size // MB} MB, over CODE_COPY_DISK_BUDGET_MB={budget}",
            )
        if not have and not pack:  # whatever a copy cut short left goes: only what was checked now is served
            for top in self.tree.tops():
                remove(self.local_path(top))
        local_manifest.unlink(missing_ok=True)
        have = self.placed(have)
        copied, result.bytes_copied, result.removed = self.place(placed, have)
        result.files_copied = len(copied)
        result.files_unpacked = sum(1 for rel, entry in have.items() if entry[0] == "f" and placed.get(rel) == entry)
        self.phase("copy")
        self.fix_up(copied, venv_copy)
        fresh = copied + (without_bytecode(placed) if pack else [])  # the pack holds the bytecode made before
        compile_bytecode(venv_copy / "bin" / "python", [self.local_path(rel) for rel in fresh if rel.endswith(".py")])
        self.phase("compile")
        if current != known:  # else the manifest it started from (this copy's, a pack's, a worker's) is kept already
            self.keep_on_volume(worker_id, current)
        write_manifest(local_manifest, self.tree, current, self.settings.data_link_min_files)
        result.seconds, result.phases = time.monotonic() - self.started, self.phases
        return result

    def unpack(self, pack: codepack.Pack, in_pack: dict[str, Entry]) -> dict[str, Entry]:
        """The pack's folders made, then its files written by a process of its own (unpack_in_process): both
        beside the check, which needs neither."""
        self.make_folders(in_pack)
        return unpack_in_process(pack, self.settings.copy_dir, self.settings.pack_streams)

    def make_folders(self, entries: dict[str, Entry]) -> None:
        for top in self.tree.tops():
            Path(self.local_path(top)).mkdir(parents=True, exist_ok=True)
        for rel in sorted(rel for rel, entry in entries.items() if entry[0] == "d"):
            Path(self.local_path(rel)).mkdir(exist_ok=True)
            if stat.S_IMODE(entries[rel][1]) != FOLDER_MODE:  # the copy's place() trusts these as made
                os.chmod(self.local_path(rel), stat.S_IMODE(entries[rel][1]))

    def unpacked(
        self, future: concurrent.futures.Future[dict[str, Entry]], pack: codepack.Pack, in_pack: dict[str, Entry]
    ) -> dict[str, Entry]:
        """What the copy holds after the pack: its folders and the files written (all copied again if it failed)."""
        folders = {rel: entry for rel, entry in in_pack.items() if entry[0] == "d"}
        try:
            return folders | future.result()
        except OSError as error:
            print(f"code pack {pack.path} not used: {error}", flush=True)
            for top in self.tree.tops():
                remove(self.local_path(top))
            return {}

    def fix_up(self, copied: list[str], venv_copy: Path) -> None:
        """The copy's models are the volume's; the venv's scripts name the copy's venv."""
        models = self.dest / "models"
        if not models.is_symlink() and (self.tree.root / "models").is_dir():
            remove(str(models))
            models.symlink_to(self.tree.root / "models")
        bin_prefix = f"{self.tree.venv_rel or '@venv'}/bin/"
        old, new = str(self.tree.venv).encode(), str(venv_copy).encode()
        for rel in copied:
            if rel.startswith(bin_prefix):
                rewrite_script(Path(self.local_path(rel)), old, new)

    def keep_on_volume(self, worker_id: str, current: dict[str, Entry]) -> None:
        """This worker's own manifest on the volume, for the next fresh worker (best effort)."""
        folder = volume_manifests(self.tree)
        try:
            if not folder.is_dir():
                folder.mkdir(parents=True)
                current[""] = self.lstat("") or current[""]  # the install's own folder changed: not the code
            write_manifest(folder / f"{worker_id}.json", self.tree, current)
        except OSError:
            pass  # a read-only volume: the next worker walks the tree


def rewrite_script(path: Path, old: bytes, new: bytes) -> None:
    """A script whose #! line names the volume's venv gets the copy's (its mtime kept)."""
    with open(path, "rb") as reader:
        head = reader.read(2)
    if head != b"#!":
        return
    text = path.read_bytes()
    if old in text:
        st = path.stat()
        path.write_bytes(text.replace(old, new))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def without_bytecode(entries: dict[str, Entry]) -> list[str]:
    """The modules in `entries` with no bytecode of theirs in a __pycache__ beside them."""
    compiled = set()
    for rel in entries:
        folder, _, name = rel.rpartition("/")
        if name.endswith(".pyc") and folder.endswith("__pycache__"):
            compiled.add(folder[: -len("__pycache__")] + name.split(".", 1)[0])
    return [rel for rel in entries if rel.endswith(".py") and rel[:-3] not in compiled]


def compile_bytecode(python: Path, files: list[str]) -> None:
    """Bytecode for the copied modules, by the venv's own Python (its version's tag); what is current is kept."""
    if not files or not os.access(python, os.X_OK):
        return
    subprocess.run(
        [str(python), "-m", "compileall", "-q", "-j", "0", "-i", "-"],
        input="\n".join(files),
        text=True,
        capture_output=True,
        timeout=600,
        check=False,
    )
