"""The ComfyUI install on the volume, checked for what usually goes wrong on a fresh endpoint.

Each check says what is wrong and how to fix it (a LaunchError, which the launcher turns into
exit 78): no volume, no ComfyUI, no main.py, no venv, a venv whose Python is a dangling link
(made in a Pod with another Python), files ComfyUI's user may not read, a venv without the
modules ComfyUI needs. The last is asked of the venv's own Python, run as ComfyUI's user in
COMFYUI_DIR, which also reads ComfyUI's version there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.config import LauncherConfig
from launcher.user import ComfyUser, can, why_not
from launcher.version import ComfyVersion, installed_version
from worker_common.layout import Layout, volume_mounts
from worker_common.settings import ConfigError

PROBE_TIMEOUT_S = 120  # a cold network volume can take long to list a venv's site-packages
# Run by the volume venv's Python (any Python 3): find_spec locates a module without importing it
# (torch takes seconds to import); comfyui_version is imported as ComfyUI's main.py would.
PROBE = """
import importlib.util, json, sys
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
try:
    from comfyui_version import __version__ as version
except ImportError:
    version = None
print(json.dumps({"missing": [m for m in sys.argv[1:] if not found(m)], "version": version,
                  "python": sys.version.split()[0]}))
"""


class LaunchError(ConfigError):
    """The install cannot run: the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Install:
    comfyui_dir: Path
    venv: Path
    python: Path  # the venv's interpreter
    python_version: str  # "3.11.9", as that interpreter reports it
    version: ComfyVersion


def check_install(layout: Layout, user: ComfyUser, env: Mapping[str, str], config: LauncherConfig) -> Install:
    """Every launch check in order; `env` is ComfyUI's environment, which the probe runs with."""
    comfyui_dir = layout.comfyui_dir
    if not config.comfyui_dir_set:
        _check_volume()
    if not comfyui_dir.is_dir():
        raise LaunchError(
            f"no ComfyUI at {comfyui_dir}. Install ComfyUI there on the network volume (git clone "
            f"https://github.com/comfyanonymous/ComfyUI {comfyui_dir} in a Pod), or set COMFYUI_DIR."
        )
    if not (comfyui_dir / "main.py").is_file():
        raise LaunchError(
            f"{comfyui_dir} has no main.py: it is not a ComfyUI install (or the clone is incomplete). "
            "Point COMFYUI_DIR at the folder that holds ComfyUI's main.py."
        )
    python = _check_venv(layout)
    _check_access(user, comfyui_dir, python)
    found = probe(python, layout, user, env, config.required_modules)
    return Install(comfyui_dir, layout.venv, python, found["python"], installed_version(comfyui_dir, found["version"]))


def _check_volume() -> None:
    """COMFYUI_DIR unset: the volume must be mounted at one of VOLUME_MOUNTS."""
    mounts = volume_mounts()
    if not any(mount.is_dir() for mount in mounts):
        raise LaunchError(
            f"no network volume: none of {' '.join(map(str, mounts))} is mounted. Attach the network volume "
            "that holds ComfyUI to this endpoint, or set COMFYUI_DIR to a ComfyUI install."
        )


def _check_venv(layout: Layout) -> Path:
    venv, python = layout.venv, layout.venv / "bin" / "python"
    if not venv.is_dir():
        raise LaunchError(
            f"no virtual environment at {venv}. Create it on the volume (for example in a Pod: python3.11 -m venv "
            f"{venv} && {venv}/bin/pip install -r {layout.comfyui_dir}/requirements.txt), or set COMFYUI_VENV."
        )
    if python.is_symlink() and not python.exists():
        here = os.path.realpath(sys.executable)  # the worker's venv is made with the image's Python
        raise LaunchError(
            f"{python} is a dangling link to {os.readlink(python)}: the venv was made with {venv_wants(venv)}, "
            f"which this image does not have. Recreate the venv with this image's Python ({here}) or point "
            "COMFYUI_VENV at a venv made with it."
        )
    if not os.access(python, os.X_OK):
        raise LaunchError(
            f"{python} is missing or not executable: {venv} is not a complete virtual environment. Recreate it."
        )
    return python


def _check_access(user: ComfyUser, comfyui_dir: Path, python: Path) -> None:
    """ComfyUI's user must be able to read the install and run the venv's Python."""
    fix = (
        f"ComfyUI runs as {user.name} and needs read access to the volume: make it readable by every user "
        f"(in a Pod: chmod -R o+rX {comfyui_dir} and the venv), or set COMFYUI_USER=root (see the README "
        "for what that costs)."
    )
    main_py = comfyui_dir / "main.py"
    if not can(user, main_py, os.R_OK):
        raise LaunchError(f"COMFYUI_USER={user.name} cannot read {main_py}{why_not(user, main_py)}. {fix}")
    if not can(user, python, os.X_OK):
        raise LaunchError(f"COMFYUI_USER={user.name} cannot run {python}{why_not(user, python.resolve())}. {fix}")


def probe(python: Path, layout: Layout, user: ComfyUser, env: Mapping[str, str], modules: tuple[str, ...]) -> dict:
    """Ask the venv's Python, as ComfyUI's user in COMFYUI_DIR: missing modules, ComfyUI's version."""
    cannot_run = f"{python} cannot run ({venv_wants(layout.venv)} expected by its pyvenv.cfg)."
    try:
        done = subprocess.run(
            [str(python), "-c", PROBE, *modules],
            cwd=layout.comfyui_dir,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            **user.subprocess_ids(),
        )
    except subprocess.TimeoutExpired:
        raise LaunchError(
            f"{python} did not answer within {PROBE_TIMEOUT_S} s while its modules were checked: "
            "is the network volume responding?"
        ) from None
    except OSError as error:
        raise LaunchError(f"{cannot_run} {error}") from None
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise LaunchError(f"{cannot_run} {done.stderr.strip()[-500:]}".strip()) from None
    if found["missing"]:
        raise LaunchError(
            f"{python} (Python {found['python']}) cannot import: {' '.join(found['missing'])}. Install ComfyUI's "
            f"requirements into the venv: {python} -m pip install -r {layout.comfyui_dir}/requirements.txt"
        )
    return found


def venv_wants(venv: Path) -> str:
    """The interpreter pyvenv.cfg says made the venv: "Python 3.11.9 from /usr/bin"."""
    fields: dict[str, str] = {}
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            fields.setdefault(key.strip(), value.strip())
    except (OSError, UnicodeDecodeError):
        pass
    version = fields.get("version") or fields.get("version_info") or "unknown version"
    return f"Python {version} from {fields.get('home') or 'an unknown place'}"
