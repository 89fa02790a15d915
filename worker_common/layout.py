"""Where everything lives: the shared network volume, and the folders this worker owns.

An endpoint is many workers on one network volume, so the volume is shared and read-mostly:
ComfyUI's code, models, custom nodes and venv are read from it, and the files users placed in
its `input/` may be read by jobs but are never written. Everything ComfyUI writes goes to
folders of this worker alone, on the container's own disk under WORKER_DATA_DIR:

    WORKER_DATA_DIR/input    the jobs' input files (one subfolder per job)
    WORKER_DATA_DIR/output   ComfyUI's outputs (one subfolder per job)
    WORKER_DATA_DIR/temp/temp  ComfyUI's temp folder (previews). ComfyUI gets `--temp-directory
                             WORKER_DATA_DIR/temp` and removes and recreates temp/ in it at start
                             and exit, so that parent is ComfyUI's own too
    WORKER_DATA_DIR/user     ComfyUI's user directory (settings, the asset database of newer releases)
    WORKER_DATA_DIR/home     ComfyUI's HOME when it runs as a user of its own (custom nodes write ~/.cache)

With OUTPUTS_ON_VOLUME=true outputs go to the volume instead, but still to a folder of this
worker's own: `$COMFYUI_DIR/output/workers/<worker id>`.

The launcher passes these folders to ComfyUI; the handler, the sidecar's warm-up and every
clean-up take them from `load()`, so they cannot disagree.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker_common import settings
from worker_common.comfy_protocol import output_files
from worker_common.settings import ConfigError, env_bool, env_path, env_str

DEFAULT_VOLUME_MOUNTS = "/runpod-volume /workspace"
MODEL_CACHE_FOLDER = "model-cache"  # below WORKER_DATA_DIR, unless MODEL_CACHE_DIR says where
# The asset database of newer ComfyUI releases and the files beside it (never copied into a worker).
_DATABASE_FILES = re.compile(r"^comfyui\.db")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Layout:
    comfyui_dir: Path  # the ComfyUI install on the volume
    venv: Path  # ComfyUI's own venv on the volume
    data_dir: Path  # the root of this worker's own folders
    worker_id: str
    outputs_on_volume: bool = False
    workflows_dir: Path | None = None  # WORKFLOWS_DIR; None: the default below
    model_cache_dir: Path | None = None  # MODEL_CACHE_DIR; None: the default below

    # -- the volume's (read by jobs, never written) -------------------------------------

    @property
    def shared_input(self) -> Path:
        """Files users placed on the volume for workflows to load (masks, reference images)."""
        return self.comfyui_dir / "input"

    def shared_input_file(self, name: str) -> Path | None:
        """The real path of a file users placed in the volume's input folder (`name` relative), or None.

        None for an absolute name, `..`, a missing file, or a link leading out of the folder.
        """
        return _file_below(self.shared_input, name)

    @property
    def workflows(self) -> Path:
        """Named API-format workflows (`NAME.json`) the operator placed for jobs to name (handler/workflows.py)."""
        return self.workflows_dir or self.comfyui_dir / "workflows_api"

    @property
    def models(self) -> Path:
        return self.comfyui_dir / "models"

    def model_file(self, relative: str) -> Path | None:
        """The real path of a file below the volume's models folder (`checkpoints/x.safetensors`), or None."""
        return _file_below(self.models, relative)

    @property
    def shared_user(self) -> Path:
        """The volume's user directory: copied into the worker's at start, never used in place."""
        return self.comfyui_dir / "user"

    # -- the worker's own ---------------------------------------------------------------

    @property
    def input(self) -> Path:
        return self.data_dir / "input"

    @property
    def output(self) -> Path:
        if self.outputs_on_volume:
            return self.comfyui_dir / "output" / "workers" / self.worker_id
        return self.data_dir / "output"

    @property
    def temp_parent(self) -> Path:
        """ComfyUI's `--temp-directory`: it removes and recreates `temp/` inside, so this folder is ComfyUI's too."""
        return self.data_dir / "temp"

    @property
    def temp(self) -> Path:
        """ComfyUI's temp folder: `--temp-directory DIR` makes it DIR/temp."""
        return self.temp_parent / "temp"

    @property
    def user(self) -> Path:
        return self.data_dir / "user"

    @property
    def model_cache(self) -> Path:
        """Copies of the first jobs' model files (worker_common/model_cache.py), kept across restarts."""
        return self.model_cache_dir or self.data_dir / MODEL_CACHE_FOLDER

    @property
    def home(self) -> Path:
        """ComfyUI's HOME when it runs as a user of its own: kept across ComfyUI restarts (a cache, not job data)."""
        return self.data_dir / "home"

    def comfyui_folders(self) -> list[Path]:
        """Every folder ComfyUI writes to: the only ones its user owns."""
        return [self.input, self.output, self.temp_parent, self.temp, self.user, self.home]

    def folder(self, kind: str) -> Path | None:
        """The worker's folder for one of ComfyUI's folder types (input, output, temp)."""
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind)

    def real_path(self, kind: str, subfolder: str, filename: str) -> Path | None:
        """The real path of a file ComfyUI named in one of the worker's folders (input, output, temp), or None.

        A name ComfyUI reports comes from node code nobody here wrote, and a folder may hold a
        symbolic link a custom node placed: the path is resolved with its links and must stay
        inside the folder. None for an unknown folder type or a name that is not a plain one.
        For reading a file; to remove one, see `entry_path`.
        """
        root = self._real_root(kind, subfolder, filename)
        if root is None:
            return None
        path = _real_below(root, os.path.join(subfolder, filename))
        return Path(path) if _below(root, path) else None

    def entry_path(self, kind: str, subfolder: str, filename: str) -> Path | None:
        """The path of the entry itself (a file, or a link, not followed) in one of the worker's folders, or None.

        Its folder is resolved with its links and must be inside the worker's folder; the entry's
        own name is not resolved, so removing it removes a link, never what the link points to.
        """
        root = self._real_root(kind, subfolder, filename)
        if root is None:
            return None
        parent = _real_below(root, subfolder)
        return Path(parent, filename) if parent == root or _below(root, parent) else None

    def _real_root(self, kind: str, subfolder: str, filename: str) -> str | None:
        """The real path of the folder of `kind`, when the name is one a file in it may have."""
        folder = self.folder(kind)
        if folder is None or not filename or "/" in filename or filename in (".", "..") or "\0" in filename + subfolder:
            return None
        return _real_folder(str(folder))

    def output_paths(self, outputs: dict[str, Any]) -> list[Path]:
        """The entries (not followed) in the worker's folders that a prompt's outputs name (node id -> ui)."""
        refs = (ref for ui in outputs.values() for ref in output_files(ui) if ref.type in ("output", "temp"))
        paths = (self.entry_path(ref.type, ref.subfolder, ref.filename) for ref in refs)
        return [path for path in paths if path is not None]

    def comfy_args(self) -> list[str]:
        """ComfyUI's flags that put every folder it writes into the worker's own."""
        return [
            "--input-directory",
            str(self.input),
            "--output-directory",
            str(self.output),
            "--temp-directory",
            str(self.temp_parent),
            "--user-directory",
            str(self.user),
        ]

    def describe(self) -> list[str]:
        """Lines for the volume report: which folders are the volume's and which the worker's."""
        kept = " (OUTPUTS_ON_VOLUME: this worker's own folder on the volume)" if self.outputs_on_volume else ""
        return [
            f"volume (shared, read-only for jobs): ComfyUI {self.comfyui_dir}, venv {self.venv}, "
            f"models {self.comfyui_dir / 'models'}, custom nodes {self.comfyui_dir / 'custom_nodes'}, "
            f"shared inputs {self.shared_input}",
            f"worker {self.worker_id} (its own, on the container's disk): input {self.input}, "
            f"output {self.output}{kept}, temp {self.temp}, user {self.user}, home {self.home}",
        ]

    # -- lifecycle ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the worker's folders, empty except the user directory (seeded from the volume's).

        Called once per container start, before ComfyUI first starts: whatever an earlier run
        of this container left (a killed handler's inputs, a failed job's outputs) goes.
        """
        for path in self.comfyui_folders():
            path.mkdir(parents=True, exist_ok=True)
        self.clear()
        if not any(self.user.iterdir()) and self.shared_user.is_dir():
            seed_user_directory(self.shared_user, self.user)

    def clear(self) -> None:
        """Empty the worker's input, output (unless kept on the volume) and temp folders."""
        folders = [self.input, self.temp] + ([] if self.outputs_on_volume else [self.output])
        for folder in folders:
            empty_folder(folder)


def load() -> Layout:
    """The layout from the environment (COMFYUI_DIR, VOLUME_MOUNTS, COMFYUI_VENV, WORKER_DATA_DIR...).

    Raises ConfigError when WORKER_DATA_DIR and the ComfyUI install overlap: the worker empties
    its folders, so they must never be the volume's (its users' input files, other workers' data).
    """
    comfyui_dir = find_comfyui_dir()
    data_dir = Path(os.path.abspath(env_path("WORKER_DATA_DIR", settings.run_dir() / "comfyui")))
    if inside(comfyui_dir, data_dir) or inside(data_dir, comfyui_dir):
        raise ConfigError(
            f"WORKER_DATA_DIR={str(data_dir)!r} overlaps the ComfyUI install {str(comfyui_dir)!r} on the volume: "
            "the worker empties its own folders, so they must be apart from the volume's (the container's own "
            "disk, e.g. /var/lib/comfy-worker)"
        )
    return Layout(
        comfyui_dir=comfyui_dir,
        venv=env_path("COMFYUI_VENV", comfyui_dir / "com_venv"),
        data_dir=data_dir,
        worker_id=worker_id(),
        outputs_on_volume=env_bool("OUTPUTS_ON_VOLUME", False),
        workflows_dir=env_path("WORKFLOWS_DIR", comfyui_dir / "workflows_api"),
        model_cache_dir=_model_cache_dir(comfyui_dir, data_dir),
    )


def _model_cache_dir(comfyui_dir: Path, data_dir: Path) -> Path:
    folder = Path(os.path.abspath(env_path("MODEL_CACHE_DIR", data_dir / MODEL_CACHE_FOLDER)))
    if inside(comfyui_dir, folder):
        raise ConfigError(f"MODEL_CACHE_DIR={folder} is inside the ComfyUI install: put it on the container's disk")
    return folder


def volume_mounts() -> list[Path]:
    return [Path(mount) for mount in env_str("VOLUME_MOUNTS", DEFAULT_VOLUME_MOUNTS).split()]


def find_comfyui_dir() -> Path:
    """COMFYUI_DIR, else `ComfyUI` on the first mounted volume of VOLUME_MOUNTS, else on the first one.

    A missing volume is not an error here: the launcher's checks say what is wrong and how to
    fix it; the other programs only need to know where ComfyUI would be.
    """
    value = env_str("COMFYUI_DIR")
    if value:
        return Path(os.path.abspath(value))
    mounts = volume_mounts()
    mounted = next((mount for mount in mounts if mount.is_dir()), mounts[0] if mounts else Path("/runpod-volume"))
    return mounted / "ComfyUI"


def worker_id() -> str:
    """This worker's name: RunPod's pod id, else the host name (a Pod, a checkout)."""
    raw = env_str("RUNPOD_POD_ID") or socket.gethostname() or "worker"
    return _UNSAFE_ID_CHARS.sub("_", raw)[:64]


def inside(root: Path, path: Path) -> bool:
    """Whether `path` is `root` or below it (both already real paths)."""
    return path == root or _below(str(root), str(path))


@functools.lru_cache(maxsize=32)
def _real_folder(folder: str) -> str:
    """The real path of one of the worker's folders; asked once per process (they are root's, fixed)."""
    return os.path.realpath(folder)


def _file_below(folder: Path, name: str) -> Path | None:
    """The real path of the file `name` (relative) below the volume's `folder`, or None.

    None for an absolute name, `..`, a missing file, or a link leading out of the folder.
    """
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or "\0" in name:
        return None
    root = _real_folder(str(folder))
    target = _real_below(root, name)
    return Path(target) if _below(root, target) and os.path.isfile(target) else None


def _real_below(root: str, relative: str) -> str:
    """realpath(root/relative) for a real `root`: only the parts below it are looked at (one lstat each).

    Outputs sit one or two folders below the worker's folder, models one or two below the models
    folder, so this costs a few lstat calls instead of one per component of the whole path (each a
    round trip on a network volume); any link or `..` falls back to realpath.
    """
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    path = root
    for part in parts:
        path = os.path.join(path, part)
        if part == ".." or os.path.islink(path):
            return os.path.realpath(os.path.join(root, relative))
    return path


def _below(root: str, path: str) -> bool:
    """Whether the real path `path` is strictly below the real path `root`."""
    return path.startswith(root.rstrip(os.sep) + os.sep)


def empty_folder(folder: Path) -> None:
    """Remove everything inside `folder` without following symbolic links out of it."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue


def seed_user_directory(source: Path, destination: Path) -> None:
    """Copy the volume's user directory (settings, custom nodes' configs), without the asset database."""

    def skipped(_folder: str, names: list[str]) -> list[str]:
        return [name for name in names if _DATABASE_FILES.match(name)]

    shutil.copytree(source, destination, ignore=skipped, symlinks=True, dirs_exist_ok=True)
