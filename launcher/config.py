"""The launcher's configuration: every environment variable it reads, read and checked here only.

`load()` runs once at the start of `python -m launcher` (and of its `prepare` step); a bad
value is a ConfigError naming the variable, which makes the container exit 78 as any other
launch check does. The other modules take what they need from the `LauncherConfig` they are
given. Where the worker's programs share a setting (COMFY_PORT, the folders), worker_common
reads it, for all of them alike.

COMFY_LOG_LEVEL's levels depend on the installed release's `--verbose`, so it is checked
against them when ComfyUI's flags are chosen (launcher/arguments.py), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker_common import settings
from worker_common.settings import env_bool, env_str


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
