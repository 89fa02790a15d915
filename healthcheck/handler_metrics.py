"""Housekeeping for the handler's multiprocess metric files.

prometheus_client keeps `livesum`/`liveall` gauges (jobs in progress) in one file per pid
and counts them until `mark_process_dead(pid)` removes that file. Nobody else calls it
when the handler crashes or is restarted, so the sidecar does: when the handler program's
pid changes or it stops, and, as a safety net, for any live-gauge file whose pid no longer
exists (a process the handler started itself, say). Counters and histograms of dead pids
stay: they are totals.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import psutil
from prometheus_client.multiprocess import mark_process_dead

from worker_common.contract import PROGRAM_HANDLER

from .probe import ProgramStatus

log = logging.getLogger(__name__)

_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


class HandlerMetricsReaper:
    def __init__(self, path: Path | None, programs: Iterable[str] = (PROGRAM_HANDLER,)) -> None:
        self.path = path
        self.programs = tuple(programs)
        self._pids: dict[str, int] = {}

    def reap(self, programs: tuple[ProgramStatus, ...] | None) -> list[int]:
        """Mark dead the pids that stopped writing metrics; returns the pids marked."""
        if self.path is None or not self.path.is_dir():
            return []
        marked: list[int] = []
        for program in programs or ():
            if program.name not in self.programs:
                continue
            old = self._pids.get(program.name)
            if old and old != program.pid:
                self._mark(old, f"{program.name} pid {old} is {program.statename if not program.pid else 'replaced'}")
                marked.append(old)
            self._pids[program.name] = program.pid
        for pid in self._orphaned_pids():
            if pid not in marked:
                self._mark(pid, f"pid {pid} no longer exists")
                marked.append(pid)
        return marked

    def _orphaned_pids(self) -> set[int]:
        pids = set()
        try:
            names = [entry.name for entry in self.path.iterdir()] if self.path else []
        except OSError:
            return pids
        for name in names:
            match = _LIVE_FILE.match(name)
            if match and not psutil.pid_exists(int(match.group(1))):
                pids.add(int(match.group(1)))
        return pids

    def _mark(self, pid: int, why: str) -> None:
        try:
            mark_process_dead(pid, str(self.path))
        except OSError as error:
            log.warning("could not drop live metrics of pid %s: %s", pid, error)
            return
        log.info("dropped live handler metrics of pid %s (%s)", pid, why)
