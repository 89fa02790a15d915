"""The probe loop: one background thread that looks, decides and publishes a snapshot.

Every pass reads supervisord's process table, probes ComfyUI, feeds the outcome to the
readiness state machine, phrases the reason, and publishes an immutable `Snapshot`. The
costlier figures (ComfyUI's RSS and CPU, GPUs, the queue, dead handlers' metric files) are
refreshed once per PROBE_INTERVAL_S, whatever the pace of the readiness probes. While
starting (or unready) the loop runs every STARTUP_PROBE_INTERVAL_S so the handler's gate
hears of readiness within one short interval of ComfyUI's first answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from worker_common import custom_nodes, layout, startup
from worker_common.comfy_client import ComfyClient
from worker_common.contract import (
    COMFYUI_ANSWERED_RECORD,
    PROGRAM_COMFYUI,
    ExitCode,
    config_error_file_name,
    stack_identity,
)
from worker_common.custom_nodes import FailedPack

from .config import SidecarConfig
from .gpu import GpuReader, GpuReading
from .handler_metrics import HandlerMetricsReaper
from .lives import Life, last_ended, life_of, parse_lives
from .probe import (
    ComfyProbe,
    ComfyProber,
    ProcessStats,
    ProgramStatus,
    ProgramTracker,
    SupervisorReader,
    comfyui_version,
)
from .program_logs import comfyui_life
from .reasons import MAX_LINE_CHARS, down_reason
from .snapshot import Snapshot, SnapshotStore
from .state import ReadinessMachine, State
from .warmup import Warmup, WarmupState

log = logging.getLogger(__name__)

LIVES_REFRESH_S = 1.0  # supervisord's log is re-read at most this often while ComfyUI is down
END_LOG_TRIES, END_LOG_PAUSE_S = 5, 0.02  # a dead process's end reaches supervisord's log within ms


class Monitor:
    """Owns the state machine and every reader; the only writer of the snapshot store."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        supervisor: SupervisorReader | None = None,
        prober: ComfyProber | None = None,
        gpu: GpuReader | None = None,
        warmup: Warmup | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._monotonic = monotonic
        self.supervisor = supervisor or SupervisorReader(config.supervisor_socket, config.probe_timeout_s)
        self.stats = ProcessStats()
        self.prober = prober or ComfyProber(
            ComfyClient(config.comfy_host, config.comfy_port, timeout_s=config.probe_timeout_s),
            config.probe_timeout_s,
            self.stats,
        )
        self.gpu = gpu or GpuReader()
        self.reaper = HandlerMetricsReaper(config.multiproc_dir)
        self.warmup = warmup or Warmup(
            config.warmup_workflow, config.comfy_host, config.comfy_port, config.warmup_timeout_s, layout.load()
        )
        self.machine = ReadinessMachine(config.started_at, config.ready_timeout_s, config.unready_after_failures, clock)
        self.tracker = ProgramTracker()
        self._stack = stack_identity(config.run_dir)  # fixed for the process: no per-tick realpath
        self.store = SnapshotStore(
            Snapshot(
                state=State.STARTING,
                since=config.started_at,
                reason="the sidecar has not probed ComfyUI yet",
                started_at=config.started_at,
                window_s=config.ready_timeout_s,
                window_left_s=self.machine.window_left_s(),
                tick_at=monotonic(),
                stack=self._stack,
            )
        )
        self._wake = threading.Event()
        self.warmup.on_finish = self.wake
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._extras_due = 0.0
        self._spawns_since_answer = 0
        self._answered_recorded = False  # the start-up phase "ComfyUI answered" (once per sidecar)
        self._lives: tuple[tuple[int, str, int | None], float, dict[str, list[Life]]] = ((0, "", None), -1e9, {})
        self._reported_ends: set[int] = set()
        self._started_at = clock()
        self._last_answer_at: float | None = None
        self._version: str | None = None
        self._last_end: tuple[int | None, str] = (None, "")  # (for which ComfyUI pid, how the one before ended)
        self._custom_nodes_pid: int | None = None
        self._custom_node_failures: tuple[FailedPack, ...] | None = None
        self._system_stats: dict | None = None
        self._usage: tuple[float, float] | None = None
        self._queue: tuple[int, int] | None = None
        self._gpu_reading = GpuReading(False)
        self._last_loop_error = ""
        custom_nodes.remove_failures(config.run_dir)  # an earlier ComfyUI's report

    # -- thread ----------------------------------------------------------------------

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="probe-loop", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                interval = self.tick()
            except Exception as error:  # a bug must not silently stop readiness updates
                if repr(error) != self._last_loop_error:
                    log.exception("probe loop pass failed")
                    self._last_loop_error = repr(error)
                interval = self.config.probe_interval_s
            self._wake.wait(interval)
            self._wake.clear()

    # -- one pass ----------------------------------------------------------------------

    def tick(self) -> float:
        """Probe, decide, publish; returns how long to wait before the next pass."""
        now = self._clock()
        infos = self.supervisor.all_process_info()
        programs = self.tracker.update(infos) if infos is not None else None
        comfy = next((p for p in programs or () if p.name == PROGRAM_COMFYUI), None)
        if self.tracker.new_spawns.get(PROGRAM_COMFYUI):
            self._spawns_since_answer += 1

        probe = self.prober.probe(comfy, programs is not None)
        if probe.ok:
            if not self._answered_recorded:  # its imports are done: a start-up phase (worker_common/startup.py)
                startup.record_once(COMFYUI_ANSWERED_RECORD, {})
                self._answered_recorded = True
            self._spawns_since_answer = 1 if comfy else 0
            self._last_answer_at = now
            self._system_stats = probe.system_stats
            self._version = comfyui_version(probe.system_stats) or self._version
            if comfy is not None and comfy.pid != self._custom_nodes_pid:
                self._read_custom_nodes(comfy)
            if comfy is not None and comfy.restarts and comfy.pid != self._last_end[0]:
                self._last_end = (comfy.pid, self._previous_end(comfy))
            if self.warmup.needed and self.machine.first_ready_at is None:
                self.warmup.start_if_due(comfy.pid if comfy else None)
                reason = self.warmup.describe()
                transition = self.machine.tick(reason)
            else:
                version = f" {self._version}" if self._version else ""
                pid = f" (pid {comfy.pid})" if comfy else ""
                reason = f"ComfyUI{version}{pid} answers on {self.config.comfy_host}:{self.config.comfy_port}"
                transition = self.machine.success(reason)
        else:
            reason = self._failure_reason(probe, comfy)
            transition = self.machine.failure(reason, probe.hard)
        if transition:
            log.info("%s", transition.log_line(self.config.started_at))
        if self.machine.state is State.FAILED:
            reason = f"not ready within the start-up window of {self.config.ready_timeout_s:g} s; now: {reason}"

        # Publish the decision first: a readiness change must not wait for the slower figures.
        self._publish(reason, programs, comfy)
        if self._monotonic() >= self._extras_due:
            self._extras_due = self._monotonic() + self.config.probe_interval_s
            self._refresh_extras(comfy, programs, probe)
            self._publish(reason, programs, comfy)
        return self._next_interval()

    def _publish(self, reason: str, programs: tuple[ProgramStatus, ...] | None, comfy: ProgramStatus | None) -> None:
        self.store.publish(
            Snapshot(
                state=self.machine.state,
                since=self.machine.since,
                stack=self._stack,
                reason=reason,
                started_at=self.config.started_at,
                window_s=self.config.ready_timeout_s,
                window_left_s=self.machine.window_left_s(),
                startup_duration_s=self.machine.startup_duration_s,
                programs=programs,
                comfyui_pid=comfy.pid if comfy and comfy.pid else None,
                comfyui_statename=comfy.statename if comfy else "UNKNOWN",
                comfyui_restarts=comfy.restarts if comfy else 0,
                comfyui_last_end=self._last_end[1],
                comfyui_rss_bytes=self._usage[0] if self._usage else None,
                comfyui_cpu_seconds=self._usage[1] if self._usage else None,
                gpu=self._gpu_reading,
                queue_running=self._queue[0] if self._queue else None,
                queue_pending=self._queue[1] if self._queue else None,
                last_answer_at=self._last_answer_at,
                comfyui_version=self._version,
                custom_node_failures=self._custom_node_failures,
                tick_at=self._monotonic(),
            )
        )

    def _next_interval(self) -> float:
        if self.warmup.state is WarmupState.RUNNING:
            return self.config.probe_interval_s  # the warm-up thread wakes the loop when it ends
        if self.machine.state in (State.STARTING, State.UNREADY):
            return self.config.startup_probe_interval_s
        return self.config.probe_interval_s

    def wake(self) -> None:
        """Run the next pass now (the warm-up calls this when it finishes)."""
        self._wake.set()

    def _refresh_extras(self, comfy: ProgramStatus | None, programs: tuple | None, probe: ComfyProbe) -> None:
        pid = comfy.pid if comfy and comfy.pid else None
        self._usage = self.stats.usage(pid) if pid else None
        self._queue = self.prober.queue() if probe.ok else None
        self._gpu_reading = self.gpu.read(self._system_stats)
        self.reaper.reap(programs)

    # -- custom nodes ------------------------------------------------------------------

    def _read_custom_nodes(self, comfy: ProgramStatus) -> None:
        """ComfyUI's start-up report of this process, read once it answers (its packs are loaded by then)."""
        self._custom_nodes_pid = comfy.pid
        life = comfyui_life(Path(comfy.logfile), comfy.pid, comfy.statename == "RUNNING") if comfy.logfile else None
        report = custom_nodes.parse_import_report(life.text) if life else None
        if report is None:
            self._custom_node_failures = None
            log.info("custom nodes: no start-up report of ComfyUI's pid %d in its log; failed packs unknown", comfy.pid)
            return
        self._custom_node_failures = report.failed
        custom_nodes.write_failures(self.config.run_dir, report.failed, comfy.pid)
        if report.failed:
            packs = "; ".join(f"{pack.name} ({pack.error or 'no error logged'})" for pack in report.failed)
            log.warning(
                "ComfyUI (pid %d) could not import %d custom node pack(s), so their nodes do not exist: %s",
                comfy.pid,
                len(report.failed),
                packs,
            )
        else:
            log.info("ComfyUI (pid %d) imported every custom node pack (%d)", comfy.pid, len(report.imported))

    # -- reasons -----------------------------------------------------------------------

    def _program_lives(self, comfy: ProgramStatus, ended_pid: int | None) -> dict[str, list[Life]]:
        """supervisord's account of every life, re-read at most once a second or when ComfyUI changes."""
        key = (comfy.pid, comfy.statename, ended_pid)
        cached_key, read_at, lives = self._lives
        mono = self._monotonic()
        if key != cached_key or mono - read_at >= LIVES_REFRESH_S:
            text = self.supervisor.main_log_tail()
            lives = parse_lives(text) if text else {}
            self._lives = (key, mono, lives)
            self._report_ends(lives)
        return lives

    def _previous_end(self, comfy: ProgramStatus) -> str:
        """How the ComfyUI process before `comfy` ended, in states and exit causes only ("" if unknown).

        The newest ended life, stopped or not: after a crash and then a requested restart, the
        process before `comfy` is the one that was stopped, not the one that crashed.
        """
        lives = self._program_lives(comfy, None).get(comfy.name, [])
        death = next((life for life in reversed(lives) if life.ending), None)
        if death is None or death.ending is None or death.pid == comfy.pid:
            return ""
        return f"comfyui (pid {death.pid}) {death.ending.describe()}"

    def _ended_life(self, comfy: ProgramStatus, pid: int, lives: dict[str, list[Life]]) -> Life | None:
        """The life of `pid`, waiting a moment for supervisord to log its end if it has not yet.

        The probe can see a process gone before supervisord has reaped it; the first unready
        reason (the one a failing job quotes) should already name the signal or exit code.
        """
        life = life_of(lives, comfy.name, pid)
        for _ in range(END_LOG_TRIES):
            if life is not None and life.ending is not None:
                break
            self._stopping.wait(END_LOG_PAUSE_S)
            self._lives = ((0, "", None), -1e9, {})  # force a fresh read
            life = life_of(self._program_lives(comfy, pid), comfy.name, pid)
        return life

    def _report_ends(self, lives: dict[str, list[Life]]) -> None:
        """One log line for each ComfyUI process that ended unasked since the sidecar started."""
        for life in lives.get(PROGRAM_COMFYUI, []):
            ending = life.ending
            if ending is None or ending.stopped or ending.at < self._started_at or life.pid in self._reported_ends:
                continue
            self._reported_ends.add(life.pid)
            log.warning("comfyui (pid %d) %s after %.1f s", life.pid, ending.describe(), ending.at - life.spawned_at)

    def _config_error(self) -> str | None:
        """The launch check's message for an exit with code 78 (services/comfyui writes it)."""
        try:
            text = (self.config.run_dir / config_error_file_name(PROGRAM_COMFYUI)).read_text().strip()
        except OSError:
            return None
        return f"launch check: {text[:MAX_LINE_CHARS]}" if text else None

    def _failure_reason(self, probe: ComfyProbe, comfy: ProgramStatus | None) -> str:
        """Why ComfyUI is not ready, in states and exit causes only: the reason is served publicly."""
        if comfy is None:
            if self.supervisor.shutting_down:
                return self.supervisor.last_error
            suffix = f" ({self.supervisor.last_error})" if self.supervisor.last_error else ""
            return f"ComfyUI does not answer: {probe.cause}{suffix}" if not probe.process_down else probe.cause
        lives = self._program_lives(comfy, probe.ended_pid)
        if probe.process_down:
            # The newest life that ended: supervisord may have spawned the next one since it answered.
            ended = next((life for life in reversed(lives.get(comfy.name, [])) if life.ending), None)
            ending = ended.ending if ended else None
            detail = self._config_error() if ending and ending.code == ExitCode.CONFIG else None
            return down_reason(
                comfy.name,
                comfy.statename,
                comfy.spawnerr,
                self._spawns_since_answer,
                ending,
                comfy.exitstatus,
                detail,
                ended.pid if ended else None,
            )
        if probe.ended_pid is not None:
            life = self._ended_life(comfy, probe.ended_pid, lives)
            if life is None or life.ending is None:
                return probe.cause
            text = f"comfyui (pid {life.pid}) {life.ending.describe()}"
            return text if comfy.pid == life.pid else f"{text}; supervisord restarted it as pid {comfy.pid}"
        uptime = max(0.0, self._clock() - comfy.start) if comfy.start else 0.0
        death = last_ended(lives, comfy.name, since=self._last_answer_at)
        if death is not None and death.ending is not None and death.pid != comfy.pid:
            return (
                f"comfyui (pid {death.pid}) {death.ending.describe()}; restarted as pid {comfy.pid} "
                f"(up {uptime:.1f} s), not answering yet: {probe.cause}"
            )
        return f"comfyui {comfy.statename} (pid {comfy.pid}, up {uptime:.1f} s) does not answer: {probe.cause}"
