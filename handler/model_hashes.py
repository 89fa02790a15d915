"""SHA-256 of the model files prompts load, computed once per file per worker.

Model files are gigabytes on a network volume: reading one again for every job would cost
seconds of disk and network each time. A hash is kept per real path with the file's size and
mtime, and computed again only when either changed (the operator replaced the file). One file
is hashed at a time, so two jobs loading one new model read it once. A file the read-ahead copied
to the container's disk and unchanged since is read from that copy (worker_common/model_cache.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from worker_common.model_cache import Source

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20


class ModelHashes:
    def __init__(self, copy_of: Callable[[Source], Path | None] = lambda _source: None) -> None:
        self._copy_of = copy_of  # a local copy of a volume's file as it is now, if there is one
        self._known: dict[str, tuple[int, int, str]] = {}  # real path -> (size, mtime_ns, sha256)
        self._hashing = threading.Lock()

    def sha256(self, path: Path) -> tuple[int, str]:
        """(size, sha256 hex) of the file at the real path `path`; read only when not known in this version."""
        stat = path.stat()
        version = (stat.st_size, stat.st_mtime_ns)
        known = self._known.get(str(path))
        if known is not None and known[:2] == version:  # a known file never waits for another's hashing
            return known[0], known[2]
        with self._hashing:
            known = self._known.get(str(path))
            if known is not None and known[:2] == version:
                return known[0], known[2]
            started = time.monotonic()
            digest = _digest(self._copy_of(Source(str(path), stat.st_size, stat.st_mtime_ns)) or path)
            self._known[str(path)] = (stat.st_size, stat.st_mtime_ns, digest)
        log.info("hashed model file %s (%.1f MB) in %.2f s", path, stat.st_size / 1e6, time.monotonic() - started)
        return stat.st_size, digest

    def warm(self, paths: list[Path]) -> None:
        """Hash files not known yet in the background (while the prompt runs); `sha256` then waits for it."""
        if paths:
            threading.Thread(target=self._warm, args=(paths,), name="model-hashes", daemon=True).start()

    def _warm(self, paths: list[Path]) -> None:
        for path in paths:
            try:
                self.sha256(path)
            except OSError as error:  # the job's own call reports it
                log.warning("could not hash model file %s: %s", path, error)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
