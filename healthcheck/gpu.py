"""GPU figures: NVML when the driver is there, else what ComfyUI's /system_stats reports.

NVML (through nvidia-ml-py's `pynvml`) gives the whole device's view: memory of every
process, utilisation, temperature, power. Without it (no GPU, no driver in the container,
a CPU test machine) the sidecar still reports VRAM from ComfyUI's own /system_stats, with
`source="comfyui"`, so dashboards keep a memory figure. NVML's absence is logged once;
a field one device does not support (power on some boards) is simply left out.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from worker_common.comfy_protocol import SystemStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuFigures:
    gpu: str
    name: str
    uuid: str
    source: str  # "nvml" or "comfyui"
    memory_total_bytes: float | None = None
    memory_used_bytes: float | None = None
    memory_free_bytes: float | None = None
    utilization_ratio: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None


@dataclass(frozen=True)
class TorchFigures:
    """What torch inside ComfyUI reports (its allocator's view), always from /system_stats."""

    gpu: str
    total_bytes: float
    free_bytes: float


@dataclass(frozen=True)
class GpuReading:
    nvml_available: bool
    gpus: tuple[GpuFigures, ...] = ()
    torch: tuple[TorchFigures, ...] = ()


def from_system_stats(system_stats: dict[str, Any] | None) -> tuple[tuple[GpuFigures, ...], tuple[TorchFigures, ...]]:
    """Per-device figures from ComfyUI's /system_stats `devices` list."""
    gpus: list[GpuFigures] = []
    torch: list[TorchFigures] = []
    for device in SystemStats.from_body(system_stats).devices:
        total, free = device.vram_total, device.vram_free
        used = total - free if total is not None and free is not None else None
        gpus.append(
            GpuFigures(
                gpu=device.label,
                name=device.name,
                uuid="",
                source="comfyui",
                memory_total_bytes=total,
                memory_used_bytes=used,
                memory_free_bytes=free,
            )
        )
        if device.torch_vram_total is not None and device.torch_vram_free is not None:
            torch.append(TorchFigures(device.label, device.torch_vram_total, device.torch_vram_free))
    return tuple(gpus), tuple(torch)


class GpuReader:
    """Reads NVML if it can be initialised, once; falls back to /system_stats otherwise."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._tried = False

    def _init(self) -> None:
        self._tried = True
        try:
            import pynvml

            pynvml.nvmlInit()
        except ImportError as error:
            log.info("NVML unavailable (%s); GPU figures come from ComfyUI's /system_stats", error)
            return
        except Exception as error:  # pynvml.NVMLError and its per-cause subclasses
            log.info("NVML unavailable (%s); GPU figures come from ComfyUI's /system_stats", error or type(error))
            return
        self._nvml = pynvml

    @property
    def nvml_available(self) -> bool:
        if not self._tried:
            self._init()
        return self._nvml is not None

    def read(self, system_stats: dict[str, Any] | None) -> GpuReading:
        comfy_gpus, torch = from_system_stats(system_stats)
        if not self.nvml_available:
            return GpuReading(False, comfy_gpus, torch)
        try:
            gpus = self._read_nvml()
        except Exception as error:  # the driver went away: report it once, then fall back for good
            log.warning("NVML stopped answering (%s); GPU figures come from ComfyUI's /system_stats", error)
            self._shutdown()
            return GpuReading(False, comfy_gpus, torch)
        return GpuReading(True, gpus, torch)

    def _read_nvml(self) -> tuple[GpuFigures, ...]:
        nvml = self._nvml
        figures = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = self._field(lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h))
            utilization = self._field(lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0)
            temperature = self._field(lambda h=handle: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
            power = self._field(lambda h=handle: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)
            figures.append(
                GpuFigures(
                    gpu=str(index),
                    name=_text(self._field(lambda h=handle: nvml.nvmlDeviceGetName(h))),
                    uuid=_text(self._field(lambda h=handle: nvml.nvmlDeviceGetUUID(h))),
                    source="nvml",
                    memory_total_bytes=float(memory.total) if memory else None,
                    memory_used_bytes=float(memory.used) if memory else None,
                    memory_free_bytes=float(memory.free) if memory else None,
                    utilization_ratio=utilization,
                    temperature_celsius=None if temperature is None else float(temperature),
                    power_watts=power,
                )
            )
        return tuple(figures)

    def _field(self, read: Any) -> Any:
        """One NVML figure, or None when this device does not support it."""
        try:
            return read()
        except self._nvml.NVMLError:
            return None

    def _shutdown(self) -> None:
        nvml, self._nvml = self._nvml, None
        with contextlib.suppress(Exception):  # already gone; nothing to release
            nvml.nvmlShutdown()

    def close(self) -> None:
        if self._nvml is not None:
            self._shutdown()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
