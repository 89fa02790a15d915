"""Start ComfyUI: its code copied to the container's disk, the install checked, its flags chosen, its user, exec.

Run by services/comfyui on every start of the comfyui program (supervisord restarts it after a
crash). A configuration error is printed as "comfyui launch check failed: ..." and left for the
watchdog, which makes the container exit 78 with it once the program goes FATAL. Otherwise the
launcher execs ComfyUI in its own process, so supervisord signals ComfyUI itself.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from launcher import background, codecopy, prefetch, volume_flags
from launcher import config as launcher_config
from launcher.arguments import comfyui_args, release_checked
from launcher.install import LaunchError, check_install
from launcher.installed_flags import installed_flags
from launcher.memory import container_limit, memory_plan
from launcher.user import ComfyUser, become, comfyui_user
from worker_common import settings
from worker_common.contract import CODE_COPY_RECORD, PROGRAM_COMFYUI
from worker_common.layout import Layout, load
from worker_common.settings import ConfigError

# ComfyUI and its custom nodes are third-party code: they get none of the worker's credentials
# (the Comfy.org key reaches ComfyUI per prompt, in extra_data).
SECRETS = (
    "S3_BUCKET_CREDS_ACCESS_KEY_ID",
    "S3_BUCKET_CREDS_SECRET_ACCESS_KEY",
    "BUCKET_ACCESS_KEY_ID",
    "BUCKET_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "RUNPOD_AI_API_KEY",
    "RUNPOD_API_KEY",
    "COMFY_ORG_API_KEY",
    "PUSHGATEWAY_USERNAME",
    "PUSHGATEWAY_PASSWORD",
    "PUSHGATEWAY_BEARER_TOKEN",
)
_TCMALLOC = re.compile(r"/\S*libtcmalloc(?:_minimal)?\.so\.\d+")


def comfyui_environment(user: ComfyUser, layout: Layout) -> dict[str, str]:
    """ComfyUI's environment: the worker's without its secrets; a HOME of its own for a user of its own."""
    env = {name: value for name, value in os.environ.items() if name not in SECRETS}
    if not user.is_current:
        env.update(HOME=str(layout.home), USER=user.name, LOGNAME=user.name)
    tcmalloc = tcmalloc_library()
    if tcmalloc:
        env["LD_PRELOAD"] = f"{env['LD_PRELOAD']}:{tcmalloc}" if env.get("LD_PRELOAD") else tcmalloc
    return env


def tcmalloc_library() -> str | None:
    """tcmalloc, when the image has it: ComfyUI allocates less wastefully with it."""
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _TCMALLOC.search(listing)
    return match.group(0) if match else None


def check_folders(layout: Layout) -> None:
    missing = [str(folder) for folder in layout.comfyui_folders() if not folder.is_dir()]
    if missing:
        raise LaunchError(
            f"the worker's folders {', '.join(missing)} are missing: services/entrypoint makes them once per "
            "container start (python -m launcher prepare). Start the stack with services/entrypoint."
        )


def launch() -> int:
    """Check, then exec ComfyUI; returns only on a configuration error, with its exit code (78)."""
    try:
        layout = load()
        config = launcher_config.load()
        user = comfyui_user(config.comfyui_user)
        env = comfyui_environment(user, layout)
        copy_settings = launcher_config.code_copy(layout)
        code = codecopy.sync(layout, copy_settings)
        print(code.describe(), flush=True)
        code.record(settings.run_dir() / CODE_COPY_RECORD, settings.started_at())
        limit = container_limit(config.cgroup_dir)
        models = launcher_config.model_prefetch(limit, layout)
        slow_models = codecopy.call_ms(layout.models) >= copy_settings.min_call_ms
        # The likely models read while ComfyUI imports: after the code's check, which it would slow down.
        cache_flags = prefetch.start(layout, models) if models.enabled and slow_models else []
        if (code.copied or code.pack_from_volume) and copy_settings.pack_streams:
            background.detached("code pack", lambda: codecopy.keep_pack(layout, copy_settings))
        copied = dataclasses.replace(layout, comfyui_dir=code.comfyui_dir, venv=code.venv)
        install = check_install(copied, user, env, config)
        check_folders(layout)
        flags = installed_flags(install.comfyui_dir, install.version)
        table = flags.table
        args = comfyui_args(layout, config, table, install.version)
        args += volume_flags.model_storage_args(table, args, slow_models)
        args += cache_flags if table.has(prefetch.CONFIG_FLAG) else []
        memory = memory_plan(install.comfyui_dir, env, limit)
    except ConfigError as error:
        print(f"comfyui launch check failed: {error}", file=sys.stderr, flush=True)
        return settings.record_config_error(PROGRAM_COMFYUI, error)
    settings.config_error_file(PROGRAM_COMFYUI).unlink(missing_ok=True)
    print(flags.log_line, flush=True)
    print(memory.log_line, flush=True)
    env.update(memory.env)
    print(
        f"starting ComfyUI from {install.comfyui_dir}, {release_checked(install.version, table)}, with "
        f"{install.python} as {user.name}: {' '.join(args)} (pid {os.getpid()})",  # the sidecar splits the log here
        flush=True,
    )
    exec_comfyui(install.python, install.comfyui_dir, args, env, user)


def exec_comfyui(python: Path, comfyui_dir: Path, args: list[str], env: dict[str, str], user: ComfyUser) -> NoReturn:
    """Become ComfyUI: as its user, in its folder, in this very process (supervisord signals ComfyUI itself)."""
    become(user)
    os.chdir(comfyui_dir)
    os.execve(python, [str(python), "-u", *args], env)
