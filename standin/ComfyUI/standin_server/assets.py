"""0.38.1's asset system, as a worker meets it: the database, its lock, scans, asset ids.

- The database is `<user directory>/comfyui.db` (or `--database-url sqlite:///PATH`; `:memory:`
  needs no file and no lock), SQLite in WAL mode. Before opening it, start-up takes an
  exclusive flock on `<db>.lock` (ComfyUI's filelock.FileLock is flock on Linux, so a real
  ComfyUI and the stand-in exclude each other); the OS frees it when the process dies.
- A held lock: an INFO line, a 5 s wait, then one ERROR record starting
  `ASSETS_STARTUP_FAILED: in_use` and exit 1, before the HTTP port opens (main.stop_startup).
- `--disable-assets`: nothing is opened; a held lock only gets the start-up WARNING banner.
- Scans walk folders and broadcast `assets.seed.*` frames to every socket; outputs and
  uploads get asset ids. Hashes are "blake3:" + a SHA-256 hex digest: the stand-in has no
  blake3 package, so only the form is ComfyUI's.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import logs, paths

log = logging.getLogger("standin")

LOCK_WAIT_S = 5.0
WITHOUT_ASSETS = "Or start ComfyUI without the assets system: --disable-assets"
MEMORY_URLS = ("sqlite:///:memory:", "sqlite://")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}

Send = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class AssetSettings:
    """What the command line says about assets (cli.py's namespace, 0.38.1)."""

    disabled: bool
    database_url: str | None
    hashing: bool


@dataclass(frozen=True)
class Asset:
    id: str
    name: str
    asset_hash: str | None
    size: int
    mime_type: str | None
    tags: list[str]

    def view(self) -> dict[str, Any]:
        """The `asset` object of an upload reply."""
        return {
            "id": self.id,
            "name": self.name,
            "asset_hash": self.asset_hash,
            "size": self.size,
            "mime_type": self.mime_type,
            "tags": self.tags,
        }


class AssetStartupError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _content_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return "blake3:" + digest.hexdigest()


class AssetStore:
    """The catalogue: one row per file path; ids stay the same for the same file."""

    def __init__(self, connection: sqlite3.Connection | None, hashing: bool = False) -> None:
        self._db = connection
        self.hashing = hashing
        self._lock = threading.Lock()
        self._scan_running = threading.Lock()
        if connection is not None:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS assets (id TEXT PRIMARY KEY, path TEXT UNIQUE, name TEXT,"
                " hash TEXT, size INTEGER, mime_type TEXT, tags TEXT, job_id TEXT, created_at REAL)"
            )
            connection.commit()

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def _row(self, path: str) -> Asset | None:
        assert self._db is not None
        row = self._db.execute(
            "SELECT id, name, hash, size, mime_type, tags FROM assets WHERE path = ?", (path,)
        ).fetchone()
        return None if row is None else Asset(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))

    def register(self, path: str, tags: list[str], job_id: str | None = None, hashed: bool = False) -> Asset | None:
        """The asset for the file at `path`, created on first sight (None when assets are off)."""
        if self._db is None:
            return None
        path = os.path.abspath(path)
        with self._lock:
            known = self._row(path)
            content_hash = _content_hash(path) if hashed or self.hashing else None
            size = os.path.getsize(path)
            if known is not None:
                content_hash = content_hash or known.asset_hash
                if (content_hash, size) != (known.asset_hash, known.size):
                    self._db.execute("UPDATE assets SET hash = ?, size = ? WHERE path = ?", (content_hash, size, path))
                    self._db.commit()
                return Asset(known.id, known.name, content_hash, size, known.mime_type, known.tags)
            asset = Asset(str(uuid.uuid4()), os.path.basename(path), content_hash, size, paths.guess_type(path), tags)
            now = time.time()
            self._db.execute(
                "INSERT INTO assets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (asset.id, path, asset.name, content_hash, size, asset.mime_type, json.dumps(tags), job_id, now),
            )
            self._db.commit()
            return asset

    def path_of_hash(self, content_hash: str) -> str | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT path FROM assets WHERE hash = ?", (content_hash,)).fetchone()
        return None if row is None else row[0]

    def register_upload(self, path: str, upload_type: str, subfolder: str) -> dict[str, Any] | None:
        """The `asset` object an upload reply gains; uploads are always hashed."""
        tags = [upload_type, *[part for part in subfolder.replace("\\", "/").split("/") if part]]
        asset = self.register(path, tags, hashed=True)
        return None if asset is None else asset.view()

    def register_outputs(self, output_ui: dict[str, Any], job_id: str) -> dict[str, Any]:
        """asset_enrichment.register_executed_outputs: file entries gain "id" (and "preview_id"
        for images, which are their own preview). Returns a copy; the input stays as it was
        (and is returned as it is when assets are off)."""
        if self._db is None:
            return output_ui
        return {
            key: [self._with_id(entry, job_id) for entry in entries] if isinstance(entries, list) else entries
            for key, entries in output_ui.items()
        }

    def _with_id(self, entry: Any, job_id: str) -> Any:
        if not isinstance(entry, dict) or "filename" not in entry or "type" not in entry:
            return entry
        path = paths.output_entry_path(entry)
        if path is None:
            return entry
        asset = self.register(path, [entry["type"]], job_id)
        assert asset is not None
        entry = {**entry, "id": asset.id}
        if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
            entry["preview_id"] = asset.id
        return entry

    def scan(self, roots: tuple[str, ...], send: Send) -> bool:
        """Walk the roots, catalogue new files, broadcast assets.seed.* frames; False if a scan runs."""
        if self._db is None or not self._scan_running.acquire(blocking=False):
            return False
        try:
            started = time.perf_counter()
            files = [path for root in roots for path in _walk(_root_folders(root))]
            send("assets.seed.started", {"roots": list(roots), "total": len(files), "phase": "fast"})
            created = 0
            for path in files:
                with self._lock:
                    known = self._row(os.path.abspath(path)) is not None
                if not known and os.path.isfile(path):
                    self.register(path, [_root_of(path, roots)])
                    created += 1
            skipped = len(files) - created
            progress = {"phase": "fast", "scanned": len(files), "total": len(files), "created": created}
            send("assets.seed.progress", progress)
            counts = {"roots": list(roots), "created": created, "skipped": skipped, "total": len(files)}
            send("assets.seed.fast_complete", counts)
            elapsed = round(time.perf_counter() - started, 3)
            done = {"phase": "fast", "total": len(files), "created": created, "enriched": 0, "skipped": skipped}
            send("assets.seed.completed", {**done, "elapsed": elapsed})
            return True
        finally:
            self._scan_running.release()


def _root_folders(root: str) -> list[str]:
    folders = paths.folders()
    if root == "models":
        return [folders.models_root]
    return [{"input": folders.input, "output": folders.output, "temp": folders.temp}[root]]


def _root_of(path: str, roots: tuple[str, ...]) -> str:
    for root in roots:
        if any(os.path.abspath(path).startswith(folder + os.sep) for folder in _root_folders(root)):
            return root
    return roots[0]


def _walk(folders: list[str]) -> list[str]:
    found = []
    for folder in folders:
        for dirpath, _dirnames, filenames in os.walk(folder):
            found += [os.path.join(dirpath, name) for name in filenames if name != ".gitkeep"]
    return found


def disabled() -> AssetStore:
    return AssetStore(None)


def _database_path(settings: AssetSettings) -> tuple[str, str | None]:
    """(url, file path or None for an in-memory database)."""
    url = settings.database_url or "sqlite:///" + os.path.join(paths.folders().user, "comfyui.db")
    if url in MEMORY_URLS:
        return url, None
    if not url.startswith("sqlite:///"):
        message = (
            "--database-url must start with sqlite:///, like sqlite:///path/to/comfyui.db, "
            f"or be left out to use the default database.\n{WITHOUT_ASSETS}"
        )
        raise AssetStartupError("unsupported_url", message)
    return url, url[len("sqlite:///") :]


def _try_lock(stream: Any) -> bool:
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


# The lock file stays open (and so locked) for the life of the process.
_held_lock: Any = None


def _acquire_lock(db_path: str) -> None:
    global _held_lock
    stream = open(db_path + ".lock", "a")  # noqa: SIM115 - held until the process ends
    if not _try_lock(stream):
        log.info(f"Database lock is held; waiting up to {LOCK_WAIT_S:g}s for it to be released")
        deadline = time.monotonic() + LOCK_WAIT_S
        while not _try_lock(stream):
            if time.monotonic() >= deadline:
                stream.close()
                raise RuntimeError(f"Could not acquire lock on database '{db_path}'.")
            time.sleep(0.1)
    _held_lock = stream


def lock_holder(settings: AssetSettings) -> str | None:
    """db.lock_holder_db_path: the database path if another process holds its lock, else None."""
    try:
        _url, db_path = _database_path(settings)
    except AssetStartupError:
        return None
    if db_path is None or not os.path.exists(db_path + ".lock"):
        return None
    with open(db_path + ".lock", "a") as probe:
        if _try_lock(probe):
            fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
            return None
    return db_path


def _failure(error: Exception, location: str, settings: AssetSettings) -> AssetStartupError:
    """main.database_failure_message, for the failures the stand-in can meet."""
    if "Could not acquire lock on database" in str(error):
        kind = "in_use"
        lines = [
            f"Another ComfyUI is already using this database: '{location}'.",
            "Close the other ComfyUI and start this one again.",
        ]
        if settings.database_url is None:
            lines.append("Or give this ComfyUI its own database: --database-url sqlite:///path/to/another.db")
    elif isinstance(error, (FileExistsError, NotADirectoryError)):
        kind = "path_blocked"
        lines = [
            f"A file is in the way of the folder for the asset database '{location}' ({error}).",
            "Move that file, or choose another folder.",
        ]
    elif isinstance(error, (OSError, sqlite3.OperationalError)):
        kind = "not_writable"
        lines = [
            f"ComfyUI can't create, open or write the asset database '{location}' ({error}).",
            "Make sure its folder is a writable directory, the database path is a writable file (or doesn't exist"
            " yet), and no other program has it open.",
        ]
    else:
        kind = "other"
        lines = [f"Could not open or upgrade the asset database '{location}': {error}"]
    return AssetStartupError(kind, "\n".join([*lines, WITHOUT_ASSETS]))


def _open(settings: AssetSettings) -> AssetStore:
    _url, db_path = _database_path(settings)
    if db_path is None:
        return AssetStore(sqlite3.connect(":memory:", check_same_thread=False), settings.hashing)
    try:
        if os.path.dirname(db_path):
            os.makedirs(os.path.dirname(db_path), exist_ok=True)
        _acquire_lock(db_path)
        connection = sqlite3.connect(db_path, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return AssetStore(connection, settings.hashing)
    except (OSError, RuntimeError, sqlite3.Error) as error:
        raise _failure(error, db_path, settings) from error


def start(settings: AssetSettings) -> AssetStore:
    """main.setup_database: open the database (or not), or end start-up with exit 1."""
    if settings.disabled:
        holder = lock_holder(settings)
        if holder is not None:
            banner = [
                "_" * 72,
                "WARNING WARNING WARNING WARNING WARNING",
                "",
                "Another ComfyUI is already using this install's asset database:",
                f"  {holder}",
                "This ComfyUI was started with --disable-assets, so it doesn't use that database and will start"
                " anyway.",
                "_" * 72,
            ]
            logs.startup_warning("\n".join(banner))
        return disabled()
    try:
        store = _open(settings)
    except AssetStartupError as failure:
        log.error(f"ASSETS_STARTUP_FAILED: {failure.kind}\n{failure}")
        sys.stdout.flush()
        sys.exit(1)
    log.info("Background asset scan initiated for models, input")
    return store
