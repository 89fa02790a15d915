"""One look at the worker: supervisord's process table, ComfyUI's process, ComfyUI's HTTP.

Each reader is cheap enough to run every 50 ms while ComfyUI starts: one XML-RPC call for
all programs, a psutil liveness check and `GET /system_stats`. That is ComfyUI's only route
the probe asks: ComfyUI loads its custom nodes before it opens HTTP (0.3.64 and 0.38.1), so
an answer means they are loaded, and `/object_info` would start an asset scan on every call
in 0.38.1. Expected failures (ComfyUI down while it starts) are returned as values with a
short cause, never raised or logged as tracebacks.
"""

from __future__ import annotations

import logging
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from worker_common.comfy_client import ComfyClient, ComfyError
from worker_common.comfy_protocol import QueueState, SystemStats
from worker_common.supervisor_rpc import supervisor_proxy

log = logging.getLogger(__name__)

MAIN_LOG_BYTES = 64 * 1024  # of supervisord's log: the lives of a crash loop and more

# supervisord starts counting `startsecs` only once the process runs; ComfyUI can answer
# before that, so STARTING with a live pid is as good as RUNNING for readiness.
ALIVE_STATES = frozenset({"RUNNING", "STARTING"})
SUPERVISOR_STATES = ("STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN")


@dataclass(frozen=True)
class ProgramStatus:
    """One supervisor program as last seen, with the restarts this sidecar counted."""

    name: str
    statename: str
    pid: int
    start: float
    exitstatus: int
    spawnerr: str
    restarts: int
    description: str = ""
    logfile: str = ""  # its stdout log (stderr is redirected into it)

    @property
    def up(self) -> bool:
        return self.statename == "RUNNING"


class ProgramTracker:
    """Counts each program's restarts from what supervisord reports over time.

    supervisord has no restart counter, so a spawn is recognised when the start time
    changes (whole seconds) or a new pid appears for the same start time (two spawns in one
    second). The first spawn seen is the start, every later one a restart.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}
        self._spawns: dict[str, int] = {}
        self.new_spawns: dict[str, int] = {}

    def update(self, infos: list[dict[str, Any]]) -> tuple[ProgramStatus, ...]:
        self.new_spawns = {}
        programs = []
        for info in infos:
            name = str(info.get("name", ""))
            start, pid = int(info.get("start") or 0), int(info.get("pid") or 0)
            last_start, last_pid = self._last.get(name, (0, 0))
            spawned = (start != last_start and start > 0) or (pid != 0 and pid != last_pid)
            if spawned:
                self._spawns[name] = self._spawns.get(name, 0) + 1
                self.new_spawns[name] = 1
            # Remember the last pid of this spawn even after it exited, so that a respawn in
            # the same second is recognised by its new pid.
            self._last[name] = (start, pid or (last_pid if start == last_start else 0))
            programs.append(
                ProgramStatus(
                    name=name,
                    statename=str(info.get("statename", "UNKNOWN")),
                    pid=pid,
                    start=float(start),
                    exitstatus=int(info.get("exitstatus") or 0),
                    spawnerr=str(info.get("spawnerr") or ""),
                    restarts=max(0, self._spawns.get(name, 0) - 1),
                    description=str(info.get("description") or ""),
                    logfile=str(info.get("stdout_logfile") or ""),
                )
            )
        return tuple(programs)


class SupervisorReader:
    """supervisord's XML-RPC, tolerant of supervisord not (yet, or no longer) answering."""

    def __init__(self, socket_path: Path, timeout_s: float = 2.0, announce: bool = True) -> None:
        """`announce`: log when supervisord stops and starts answering (a one-shot command says it itself)."""
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.announce = announce
        self._proxy: Any = None
        self._failing = False
        self.shutting_down = False
        self.last_error = ""

    def _call(self, method: str, *args: Any) -> Any:
        if self._proxy is None:
            self._proxy = supervisor_proxy(self.socket_path, self.timeout_s)
        return getattr(self._proxy.supervisor, method)(*args)

    def all_process_info(self) -> list[dict[str, Any]] | None:
        """Every program's getProcessInfo, or None when supervisord does not answer."""
        try:
            infos = self._call("getAllProcessInfo")
        except xmlrpc.client.Fault as fault:
            if "SHUTDOWN_STATE" not in fault.faultString:
                return self._failed(fault)
            # An orderly stop: supervisord refuses questions while it stops the programs.
            self.last_error = "supervisord is stopping the worker"
            if not self.shutting_down and self.announce:
                log.info("supervisord is stopping the worker")
            self.shutting_down = True
            return None
        except (OSError, xmlrpc.client.Error) as error:
            return self._failed(error)
        if self._failing and self.announce:
            log.info("supervisord answers again")
        self._failing = False
        self.last_error = ""
        return list(infos)

    def _failed(self, error: Exception) -> None:
        self._proxy = None
        self.last_error = f"supervisord at {self.socket_path} does not answer: {error}"
        if not self._failing and self.announce:
            log.warning("%s; judging ComfyUI by HTTP alone", self.last_error)
        self._failing = True

    def main_log_tail(self, length: int = MAIN_LOG_BYTES) -> str | None:
        """The end of supervisord's own log (how each process ended, which its RPC forgets)."""
        try:
            return self._call("readLog", -length, 0)
        except (OSError, xmlrpc.client.Error):
            return None


class ProcessStats:
    """Liveness and resource use of one pid (and its children), via psutil.

    Listing children scans every process's /proc entry, so the list is refreshed only every
    CHILDREN_REFRESH_S (ComfyUI rarely starts helpers); their figures are read each time.
    """

    CHILDREN_REFRESH_S = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._process: psutil.Process | None = None
        self._children: list[psutil.Process] = []
        self._children_at = -1e9

    def _get(self, pid: int) -> psutil.Process | None:
        if self._process is None or self._process.pid != pid:
            self._children, self._children_at = [], -1e9
            try:
                self._process = psutil.Process(pid)
            except psutil.Error:
                self._process = None
        return self._process

    def alive(self, pid: int) -> bool:
        process = self._get(pid)
        try:
            return process is not None and process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def usage(self, pid: int) -> tuple[float, float] | None:
        """(resident bytes, CPU seconds) of the process and all its descendants."""
        process = self._get(pid)
        if process is None:
            return None
        try:
            with process.oneshot():
                rss = float(process.memory_info().rss)
                times = process.cpu_times()
                cpu = times.user + times.system + times.children_user + times.children_system
                if self._clock() - self._children_at >= self.CHILDREN_REFRESH_S:
                    self._children = process.children(recursive=True)
                    self._children_at = self._clock()
        except psutil.Error:
            return None
        for child in self._children:
            try:
                with child.oneshot():
                    rss += child.memory_info().rss
                    child_times = child.cpu_times()
                    cpu += child_times.user + child_times.system
            except psutil.Error:
                continue  # exited since it was listed
        return rss, cpu


@dataclass(frozen=True)
class ComfyProbe:
    ok: bool
    hard: bool  # the process is gone or was replaced: unready at once
    process_down: bool  # supervisord says it is not running (the reason comes from its log)
    cause: str
    system_stats: dict[str, Any] | None = None
    ended_pid: int | None = None  # the process whose end this probe noticed


def comfyui_version(system_stats: dict[str, Any] | None) -> str | None:
    """ComfyUI's version from `/system_stats` (`system.comfyui_version`), when it says."""
    return SystemStats.from_body(system_stats).version


class ComfyProber:
    """Decides whether ComfyUI is up: process running and alive, `/system_stats` answering."""

    def __init__(self, client: ComfyClient, timeout_s: float, stats: ProcessStats | None = None) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.stats = stats or ProcessStats()
        self._answered_pid: int | None = None  # pid of the last successful probe

    def probe(self, comfy: ProgramStatus | None, supervisor_known: bool) -> ComfyProbe:
        pid: int | None = None
        if supervisor_known:
            if comfy is None:
                return ComfyProbe(False, True, True, "supervisord has no program named comfyui")
            if comfy.statename not in ALIVE_STATES or not comfy.pid:
                self._answered_pid = None
                return ComfyProbe(False, True, True, f"comfyui is {comfy.statename}")
            pid = comfy.pid
            if not self.stats.alive(pid):
                self._answered_pid = None
                return ComfyProbe(False, True, False, f"comfyui's process {pid} is gone", ended_pid=pid)
            if self._answered_pid is not None and pid != self._answered_pid:
                old, self._answered_pid = self._answered_pid, None
                return ComfyProbe(False, True, False, f"comfyui restarted (pid {old} -> {pid})", ended_pid=old)
        try:
            system_stats = self.client.system_stats(self.timeout_s)
        except ComfyError as error:
            return ComfyProbe(False, False, False, f"GET /system_stats: {error.reason}")
        if not isinstance(system_stats, dict):
            return ComfyProbe(False, False, False, "GET /system_stats: not a JSON object")
        self._answered_pid = pid
        return ComfyProbe(True, False, False, "", system_stats)

    def queue(self) -> tuple[int, int] | None:
        """(running, pending) from /queue, or None when ComfyUI does not answer."""
        try:
            queue = self.client.queue(self.timeout_s)
        except ComfyError:
            return None
        state = QueueState.from_body(queue)
        return (state.running_count, state.pending_count) if state is not None else None
