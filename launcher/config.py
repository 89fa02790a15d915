"""The launcher's configuration: every environment variable it reads, read and checked here only.

`load()` runs once at the start of `python -m launcher` (and of its `prepare` step); a bad
value is a ConfigError naming the variable, which makes the container exit 78 as any other
launch check does. The other modules take what they need from the `LauncherConfig` they are
given. Where the worker's programs share a setting (COMFY_PORT, the folders), worker_common
reads it, for all of them alike.

The code copy's settings (CODE_COPY_*) are read by `code_copy(layout)`, and the model read-ahead's
(MODEL_PREFETCH_*, MODEL_CACHE_DISK_MB, WARMUP_WORKFLOW) by `model_prefetch(...)`, when the comfyui program starts:
their defaults come from the worker's folders and the container's memory, and `prepare` has no
use for them.

COMFY_LOG_LEVEL's levels depend on the installed release's `--verbose`, so it is checked
against them when ComfyUI's flags are chosen (launcher/arguments.py), not here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

from launcher.codecopy import MB
from launcher.codecopy import Settings as CodeCopySettings
from launcher.memory import Limit
from launcher.prefetch import Settings as PrefetchSettings
from worker_common import settings
from worker_common.layout import Layout, inside
from worker_common.settings import ConfigError, env_bool, env_float, env_int, env_path, env_str


@dataclass(frozen=True)
class LauncherConfig:
    comfy_port: int  # COMFY_PORT
    comfyui_user: str  # COMFYUI_USER; empty: whoever runs the stack
    comfyui_dir_set: bool  # COMFYUI_DIR given: no network volume needed
    extra_args: tuple[str, ...]  # COMFY_EXTRA_ARGS, split on whitespace (ComfyUI flags, not shell words)
    log_level: str  # COMFY_LOG_LEVEL, as given
    enable_assets: bool  # COMFY_ENABLE_ASSETS
    required_modules: tuple[str, ...]  # COMFY_VENV_REQUIRED_MODULES
    cgroup_dir: str  # COMFY_CGROUP_DIR; empty: found through /proc/self/cgroup
    network_volume_debug: bool  # NETWORK_VOLUME_DEBUG


def load() -> LauncherConfig:
    """The launcher's settings from the environment; raises ConfigError naming a bad variable."""
    return LauncherConfig(
        comfy_port=settings.comfy_port(),
        comfyui_user=env_str("COMFYUI_USER"),
        comfyui_dir_set=bool(env_str("COMFYUI_DIR")),
        extra_args=tuple(env_str("COMFY_EXTRA_ARGS").split()),
        log_level=env_str("COMFY_LOG_LEVEL"),
        enable_assets=env_bool("COMFY_ENABLE_ASSETS", False),
        required_modules=tuple(env_str("COMFY_VENV_REQUIRED_MODULES", "torch").split()),
        cgroup_dir=env_str("COMFY_CGROUP_DIR"),
        network_volume_debug=env_bool("NETWORK_VOLUME_DEBUG", False),
    )


def code_copy(layout: Layout) -> CodeCopySettings:
    """The code copy's settings (launcher/codecopy.py); raises ConfigError naming a bad variable."""
    copy_dir = env_path("CODE_COPY_DIR", layout.data_dir / "code")
    if inside(layout.comfyui_dir, copy_dir.absolute()):
        raise ConfigError(f"CODE_COPY_DIR={copy_dir} is inside the ComfyUI install: put it on the container's disk")
    return CodeCopySettings(
        enabled=env_bool("CODE_COPY", True),
        copy_dir=copy_dir,
        disk_budget_bytes=env_int("CODE_COPY_DISK_BUDGET_MB", default_disk_budget_mb(copy_dir), minimum=0) * MB,
        threads=env_int("CODE_COPY_THREADS", 64, minimum=1, maximum=256),
        min_call_ms=env_float("CODE_COPY_MIN_CALL_MS", 0.5, minimum=0),
        check=check_mode(),
        pack_streams=env_int("CODE_COPY_PACK_STREAMS", 4, minimum=0, maximum=64),
        data_link_min_files=env_int("CODE_COPY_DATA_LINK_MIN_FILES", 256, minimum=0),
    )


def model_prefetch(limit: Limit | None, layout: Layout) -> PrefetchSettings:
    """The model read-ahead's settings (launcher/prefetch.py); raises ConfigError naming a bad variable."""
    warmup = env_str("WARMUP_WORKFLOW")
    return PrefetchSettings(
        cache_dir=layout.model_cache,
        disk_bytes=env_int("MODEL_CACHE_DISK_MB", default_disk_budget_mb(layout.model_cache) // 2, minimum=0) * MB,
        enabled=env_bool("MODEL_PREFETCH", True),
        memory_bytes=env_int("MODEL_PREFETCH_MEMORY_MB", default_prefetch_mb(limit), minimum=0) * MB,
        streams=env_int("MODEL_PREFETCH_STREAMS", 4, minimum=1, maximum=64),
        timeout_s=env_float("MODEL_PREFETCH_TIMEOUT_S", 600.0, minimum=0),
        warmup_workflow=Path(warmup) if warmup else None,
    )


def default_prefetch_mb(limit: Limit | None) -> int:
    """A quarter of the container's memory: its cgroup limit (`limit`) when it has one, else the machine's RAM."""
    machine = psutil.virtual_memory().total
    return min(limit.bytes if limit else machine, machine) // 4 // MB


def check_mode() -> str:
    value = env_str("CODE_COPY_CHECK", "files").lower()
    if value not in ("files", "folders"):
        raise ConfigError(f"CODE_COPY_CHECK={value!r}: use files (every entry checked) or folders (only folders)")
    return value


def default_disk_budget_mb(copy_dir: Path) -> int:
    """Half the free space of the disk the copy goes to (its nearest existing folder)."""
    folder = copy_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free // 2 // MB
