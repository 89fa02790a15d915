"""Once per container start, as root, before supervisord starts anything: the worker's folders and the volume report.

The worker's folders are created and emptied here (whatever an earlier run of this container
left goes), the user directory seeded from the volume's, and all of them handed to ComfyUI's
user. Not on a ComfyUI restart: a job queued across a restart keeps its inputs. Then the volume
report is printed, once, by a detached process beside the start: it reads the volume (the
venv's Python runs from it, the model folders are listed), and on a network volume that is
seconds of round trips the start must not wait for. A problem with the folders or COMFYUI_USER
is a configuration error (the entrypoint exits 78 with it); a broken install is left to the
comfyui program's launch checks, which say how to fix it.
"""

from __future__ import annotations

import os

from launcher import background
from launcher import config as launcher_config
from launcher.config import LauncherConfig
from launcher.install import check_install
from launcher.launch import comfyui_environment
from launcher.user import ComfyUser, can, comfyui_user, hand_over, why_not
from worker_common import volume_report
from worker_common.layout import Layout, load
from worker_common.settings import ConfigError

# Every stdout line names its program: these are the entrypoint's.
LOG_PREFIX = "[entrypoint] "


def prepare() -> None:
    layout = load()
    config = launcher_config.load()
    user = comfyui_user(config.comfyui_user)
    try:
        layout.prepare()
        hand_over(user, layout.comfyui_folders())
    except OSError as error:
        raise ConfigError(
            f"cannot prepare the worker's folders under WORKER_DATA_DIR={layout.data_dir}: {error}"
        ) from None
    check_reachable(user, layout)
    background.in_background(lambda: "\n".join(f"{LOG_PREFIX}{line}" for line in report(user, layout, config)))


def check_reachable(user: ComfyUser, layout: Layout) -> None:
    for folder in layout.comfyui_folders():
        if not can(user, folder, os.W_OK | os.X_OK):
            raise ConfigError(
                f"COMFYUI_USER={user.name} cannot write to {folder}{why_not(user, folder)}. Set WORKER_DATA_DIR "
                "to a folder every user can traverse (the image uses /var/lib/comfy-worker)."
            )


def report(user: ComfyUser, layout: Layout, config: LauncherConfig) -> list[str]:
    """The volume report; a report that fails is one line, and never stops the worker."""
    try:
        install = check_install(layout, user, comfyui_environment(user, layout), config)
        version = install.version
        source = f" (from {version.source})" if version.text else ""
        comfyui = f"{version.describe()}{source}, venv Python {install.python_version}"
    except ConfigError:
        comfyui = "ComfyUI not checked yet (the comfyui program's launch check says what is wrong)"
    try:
        return volume_report.report(layout, comfyui, config.network_volume_debug)
    except OSError as error:
        return [f"volume report failed: {error}"]
