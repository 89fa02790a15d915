"""Prometheus collectors that turn the latest snapshot into metrics at scrape time.

Custom collectors on the sidecar's own registry, not Gauge objects updated by the loop:
a scrape always shows one consistent snapshot, costs no lock on the probe path, and the
sidecar creates no metric objects that prometheus_client's multiprocess mode could back
with files. Names and labels are fixed by docs/design.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from worker_common.contract import (
    COMFYUI_ANSWERED_RECORD,
    FIRST_JOB_RECORD,
    FIRST_MODEL_RECORD,
    METRIC_PREFIX,
    MODEL_PREFETCH_RECORD,
)

from .probe import SUPERVISOR_STATES
from .server import ConnectionStats
from .snapshot import Snapshot
from .state import State

log = logging.getLogger(__name__)
P = METRIC_PREFIX


class SidecarCollector(Collector):
    """Readiness, supervisor programs, ComfyUI's process, GPUs and queue."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield from self._readiness(snap)
        yield from self._programs(snap)
        yield from self._comfyui(snap)
        yield from self._custom_nodes(snap)
        yield from self._gpus(snap)

    @staticmethod
    def _readiness(snap: Snapshot) -> Iterator[Metric]:
        yield GaugeMetricFamily(P + "ready", "1 when the worker is ready to take jobs.", value=int(snap.ready))
        state = GaugeMetricFamily(P + "state", "The readiness state (1 for the current one).", labels=["state"])
        for name in State:
            state.add_metric([str(name)], int(snap.state is name))
        yield state
        if snap.startup_duration_s is not None:
            yield GaugeMetricFamily(
                P + "startup_duration_seconds",
                "From container start to the first readiness (warm-up included).",
                value=snap.startup_duration_s,
            )
        yield GaugeMetricFamily(
            P + "state_change_timestamp_seconds", "When the readiness state last changed.", value=snap.since
        )
        yield GaugeMetricFamily(
            P + "startup_window_seconds",
            "How long ComfyUI may take to get ready (COMFY_READY_TIMEOUT_S).",
            value=snap.window_s,
        )

    @staticmethod
    def _programs(snap: Snapshot) -> Iterator[Metric]:
        if snap.programs is None:
            return
        up = GaugeMetricFamily(P + "program_up", "1 when supervisord reports the program RUNNING.", labels=["program"])
        state = GaugeMetricFamily(
            P + "program_state", "The program's supervisor state (1 for the current one).", labels=["program", "state"]
        )
        restarts = CounterMetricFamily(
            P + "program_restarts", "Restarts of the program seen by the sidecar.", labels=["program"]
        )
        start = GaugeMetricFamily(
            P + "program_start_time_seconds", "When supervisord last started the program.", labels=["program"]
        )
        for program in snap.programs:
            up.add_metric([program.name], int(program.up))
            for name in SUPERVISOR_STATES:
                state.add_metric([program.name, name], int(program.statename == name))
            restarts.add_metric([program.name], program.restarts)
            start.add_metric([program.name], program.start)
        yield from (up, state, restarts, start)

    @staticmethod
    def _comfyui(snap: Snapshot) -> Iterator[Metric]:
        if snap.comfyui_version is not None:
            info = GaugeMetricFamily(P + "comfyui_info", "ComfyUI's version (always 1).", labels=["version"])
            info.add_metric([snap.comfyui_version], 1)
            yield info
        if snap.comfyui_rss_bytes is not None:
            yield GaugeMetricFamily(
                P + "comfyui_resident_memory_bytes",
                "Resident memory of ComfyUI's process and its children.",
                value=snap.comfyui_rss_bytes,
            )
        if snap.comfyui_cpu_seconds is not None:
            yield CounterMetricFamily(
                P + "comfyui_cpu_seconds",
                "CPU time of ComfyUI's process and its children (resets when it restarts).",
                value=snap.comfyui_cpu_seconds,
            )
        if snap.queue_running is not None:
            yield GaugeMetricFamily(P + "queue_running", "Prompts ComfyUI is running.", value=snap.queue_running)
        if snap.queue_pending is not None:
            yield GaugeMetricFamily(
                P + "queue_pending", "Prompts waiting in ComfyUI's queue.", value=snap.queue_pending
            )
        if snap.last_answer_at is not None:
            yield GaugeMetricFamily(
                P + "comfyui_last_probe_timestamp_seconds",
                "When ComfyUI last answered a probe; old values mean the figures are stale.",
                value=snap.last_answer_at,
            )

    @staticmethod
    def _custom_nodes(snap: Snapshot) -> Iterator[Metric]:
        """Only once ComfyUI's start-up report was read: unknown is absent, not zero."""
        if snap.custom_node_failures is None:
            return
        yield GaugeMetricFamily(
            P + "custom_node_import_failures",
            "Custom node packs ComfyUI could not import at its last start.",
            value=len(snap.custom_node_failures),
        )
        failed = GaugeMetricFamily(
            P + "custom_node_import_failed_info", "A custom node pack that did not import (always 1).", labels=["pack"]
        )
        for pack in snap.custom_node_failures:
            failed.add_metric([pack.name], 1)
        yield failed

    @staticmethod
    def _gpus(snap: Snapshot) -> Iterator[Metric]:
        reading = snap.gpu
        yield GaugeMetricFamily(
            P + "nvml_available", "1 when GPU figures come from NVML.", value=int(reading.nvml_available)
        )
        info = GaugeMetricFamily(P + "gpu_info", "GPU identity (always 1).", labels=["gpu", "name", "uuid", "source"])
        families = {
            "memory_total_bytes": GaugeMetricFamily(
                P + "gpu_memory_total_bytes", "GPU memory in total.", labels=["gpu", "source"]
            ),
            "memory_used_bytes": GaugeMetricFamily(
                P + "gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu", "source"]
            ),
            "memory_free_bytes": GaugeMetricFamily(
                P + "gpu_memory_free_bytes", "GPU memory free.", labels=["gpu", "source"]
            ),
        }
        utilization = GaugeMetricFamily(P + "gpu_utilization_ratio", "GPU busy ratio (NVML).", labels=["gpu"])
        temperature = GaugeMetricFamily(P + "gpu_temperature_celsius", "GPU temperature (NVML).", labels=["gpu"])
        power = GaugeMetricFamily(P + "gpu_power_watts", "GPU power draw (NVML).", labels=["gpu"])
        for gpu in reading.gpus:
            info.add_metric([gpu.gpu, gpu.name, gpu.uuid, gpu.source], 1)
            for attribute, family in families.items():
                value = getattr(gpu, attribute)
                if value is not None:
                    family.add_metric([gpu.gpu, gpu.source], value)
            for value, family in (
                (gpu.utilization_ratio, utilization),
                (gpu.temperature_celsius, temperature),
                (gpu.power_watts, power),
            ):
                if value is not None:
                    family.add_metric([gpu.gpu], value)
        torch_total = GaugeMetricFamily(
            P + "gpu_torch_memory_total_bytes", "Memory torch in ComfyUI can use.", labels=["gpu", "source"]
        )
        torch_free = GaugeMetricFamily(
            P + "gpu_torch_memory_free_bytes", "Memory free in torch's view inside ComfyUI.", labels=["gpu", "source"]
        )
        for figures in reading.torch:
            torch_total.add_metric([figures.gpu, "comfyui"], figures.total_bytes)
            torch_free.add_metric([figures.gpu, "comfyui"], figures.free_bytes)
        for family in (info, *families.values(), torch_total, torch_free, utilization, temperature, power):
            if family.samples:
                yield family


class HandlerMetricsCollector(Collector):
    """The handler's metrics from PROMETHEUS_MULTIPROC_DIR, merged as prometheus_client does.

    The directory may appear after the sidecar starts (the entrypoint wipes and recreates it),
    so it is looked up at every scrape instead of once.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._warned = False

    def collect(self) -> Iterable[Metric]:
        if self.path is None or not self.path.is_dir():
            return []
        try:
            return MultiProcessCollector(None, str(self.path)).collect()
        except Exception as error:  # a torn or foreign file must not break the whole scrape
            if not self._warned:
                log.warning("cannot read handler metrics in %s: %s", self.path, error)
                self._warned = True
            return []


class CodeCopyCollector(Collector):
    """Where ComfyUI's last start took its code from, and what copying it to the container's disk cost.

    Read from the launcher's record (contract.CODE_COPY_RECORD) at every scrape: the comfyui
    program writes it before each start of ComfyUI.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        try:
            record = json.loads(self.path.read_text()) if self.path else None
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict):
            return
        if record.get("code_ready_after_start_s") is not None:
            yield GaugeMetricFamily(
                P + "startup_code_ready_seconds",
                "From container start until ComfyUI's code was ready to import (copied or checked).",
                value=record["code_ready_after_start_s"],
            )
        yield GaugeMetricFamily(
            P + "code_from_copy",
            "1 when ComfyUI runs from the copy on the container's disk.",
            value=int(record["from_copy"]),
        )
        figures = (
            ("code_copy_duration_seconds", "duration_s", "How long checking and copying ComfyUI's code took."),
            ("code_copy_entries_checked", "entries_checked", "Files, folders and links checked against the volume."),
            ("code_copy_files_copied", "files_copied", "Files copied from the volume at the last start."),
            ("code_copy_bytes_copied", "bytes_copied", "Bytes copied from the volume at the last start."),
            ("code_copy_files_unpacked", "files_unpacked", "Files written from a pack of the code on the volume."),
            ("code_copy_data_folders_linked", "data_folders_linked", "Data folders read from the volume, not copied."),
        )
        for name, key, help_text in figures:
            yield GaugeMetricFamily(P + name, help_text, value=record.get(key) or 0)


class StartupPhasesCollector(Collector):
    """When a fresh worker reached each start-up phase, in seconds after the container started (with
    comfy_worker_startup_code_ready_seconds and comfy_worker_startup_duration_seconds, ready).

    supervisord's start is the sidecar's parent's (supervisord runs the sidecar); the others are
    the records the sidecar (ComfyUI's first answer), the launcher's prefetch and the handler (the
    first model loaded, the first job done) leave in the run directory (read at every scrape: they
    appear once reached).
    """

    def __init__(self, run_dir: Path | None, supervisord_up_s: float | None) -> None:
        self.run_dir = run_dir
        self.supervisord_up_s = supervisord_up_s

    def collect(self) -> Iterator[Metric]:
        phases = GaugeMetricFamily(
            P + "startup_phase_seconds",
            "Seconds after the container started when a start-up phase was reached: supervisord_up, "
            "comfyui_answered (its imports done), models_prefetched (the first job's likely models read ahead), "
            "first_model_loaded (a model loader node of a job done), first_job_done.",
            labels=["phase"],
        )
        prefetch = self._read(MODEL_PREFETCH_RECORD)
        reached = {
            "supervisord_up": self.supervisord_up_s,
            "comfyui_answered": self._read(COMFYUI_ANSWERED_RECORD).get("after_start_s"),
            "models_prefetched": prefetch.get("after_start_s"),
            "first_model_loaded": self._read(FIRST_MODEL_RECORD).get("after_start_s"),
            "first_job_done": self._read(FIRST_JOB_RECORD).get("after_start_s"),
        }
        for phase, seconds in reached.items():
            if isinstance(seconds, int | float):
                phases.add_metric([phase], seconds)
        yield phases
        for key, help_text in (
            ("bytes", "Model bytes read ahead."),
            ("files", "Model files read ahead."),
            ("kept_files", "Model files whose copy on the container's disk was kept from its last start."),
        ):
            if prefetch:
                yield GaugeMetricFamily(P + f"startup_prefetch_{key}", help_text, value=prefetch.get(key) or 0)

    def _read(self, name: str) -> dict:
        try:
            record = json.loads((self.run_dir / name).read_text()) if self.run_dir else {}
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}


class ConnectionCollector(Collector):
    """The HTTP server's connections: open now, and those it closed on clients."""

    def __init__(self, stats: ConnectionStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(P + "sidecar_connections", "Open connections to the sidecar.", value=self._stats.open)
        dropped = CounterMetricFamily(
            P + "sidecar_connections_dropped",
            "Connections the sidecar closed: timeout (no whole request in time), evicted (at the limit), refused.",
            labels=["reason"],
        )
        for reason, count in sorted(self._stats.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped


def build_registry(
    snapshot: Callable[[], Snapshot],
    multiproc_dir: Path | None,
    connections: ConnectionStats | None = None,
    code_copy_record: Path | None = None,
    supervisord_up_s: float | None = None,
) -> CollectorRegistry:
    """The sidecar's own registry: its collectors and the handler's files, nothing global."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidecarCollector(snapshot))
    registry.register(CodeCopyCollector(code_copy_record))
    registry.register(StartupPhasesCollector(code_copy_record.parent if code_copy_record else None, supervisord_up_s))
    if connections is not None:
        registry.register(ConnectionCollector(connections))
    registry.register(HandlerMetricsCollector(multiproc_dir))
    return registry
