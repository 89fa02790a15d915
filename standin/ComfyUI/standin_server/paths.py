"""ComfyUI's folder_paths, in small: where input, output, temp, user and models live.

The functions keep ComfyUI's names and checks (annotated names such as "x.png [output]",
the save-path counter, the containment guards), since clients depend on their exact effects,
including where the release played is lax: 0.3.64 joins an annotated name to its folder and
reads whatever that gives ("../x.png", "/abs/x.png"); 0.38.1 resolves symlinks and refuses
names that leave the folder (version.Release.realpath_containment).
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import shutil
import time
from dataclasses import dataclass, field

from . import version

log = logging.getLogger("standin")

SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

# The stand-in's MIME table; the system's table varies between machines, this one does not.
EXTRA_MIME_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".wav": "audio/x-wav",
    ".ogg": "audio/ogg",
    ".opus": "audio/opus",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".json": "application/json",
    ".glb": "model/gltf-binary",
    ".txt": "text/plain",
}


def guess_type(filename: str) -> str | None:
    ext = os.path.splitext(filename)[1].lower()
    if ext in EXTRA_MIME_TYPES:
        return EXTRA_MIME_TYPES[ext]
    if ext == ".latent":
        return None
    return mimetypes.guess_type(filename, strict=False)[0]


@dataclass
class Folders:
    install: str  # where main.py is (ComfyUI's install), whatever --base-directory says
    base: str
    input: str
    output: str
    temp: str
    user: str
    models_root: str
    models: dict[str, list[str]] = field(default_factory=dict)


_folders: Folders | None = None


def configure(
    install: str,
    base: str | None = None,
    input_dir: str | None = None,
    output_dir: str | None = None,
    temp_dir: str | None = None,
    user_dir: str | None = None,
    models_dir: str | None = None,
) -> Folders:
    """Set the folders (ComfyUI: folder_paths + --*-directory flags) and create input, output, temp.

    The user folder is not created (ComfyUI's --user-directory must exist; the asset database
    makes its own folder), so nothing is written beside the code unless a flag says so.
    """
    global _folders
    install = os.path.abspath(install)
    base = os.path.abspath(base or install)
    models_root = os.path.abspath(models_dir or os.path.join(base, "models"))
    folders = Folders(
        install=install,
        base=base,
        input=os.path.abspath(input_dir or os.path.join(base, "input")),
        output=os.path.abspath(output_dir or os.path.join(base, "output")),
        temp=os.path.abspath(os.path.join(temp_dir, "temp") if temp_dir else os.path.join(base, "temp")),
        user=os.path.abspath(user_dir or os.path.join(base, "user")),
        models_root=models_root,
        models={"checkpoints": [os.path.join(models_root, "checkpoints")]},
    )
    for path in (folders.input, folders.output, folders.temp):
        os.makedirs(path, exist_ok=True)
    _folders = folders
    return folders


def folders() -> Folders:
    if _folders is None:
        raise RuntimeError("paths.configure() was not called")
    return _folders


def add_model_folder_path(folder_name: str, full_path: str, is_default: bool = False) -> None:
    """ComfyUI's: appended, or put first when `is_default` (extra_model_paths.yaml's `is_default: true`)."""
    paths = folders().models.setdefault(folder_name, [])
    if full_path in paths and is_default:
        paths.remove(full_path)
    if full_path not in paths:
        paths.insert(0 if is_default else len(paths), full_path)


def load_extra_model_paths(config_path: str) -> None:
    """Read an extra_model_paths.yaml (ComfyUI's format: sections with base_path and folder keys)."""
    try:
        import yaml  # ComfyUI depends on PyYAML; the stand-in only needs it for this file.
    except ImportError:
        log.warning(f"Cannot read {config_path}: PyYAML is not installed")
        return
    with open(config_path, encoding="utf-8") as stream:
        config = yaml.safe_load(stream) or {}
    yaml_dir = os.path.dirname(os.path.abspath(config_path))
    for section in config.values():
        if not isinstance(section, dict):
            continue
        base_path = section.pop("base_path", None)
        if base_path:
            base_path = os.path.expandvars(os.path.expanduser(base_path))
            if not os.path.isabs(base_path):
                base_path = os.path.abspath(os.path.join(yaml_dir, base_path))
        is_default = bool(section.pop("is_default", False))
        for folder_name, value in section.items():
            for line in str(value).split("\n"):
                if not line.strip():
                    continue
                full_path = line.strip()
                if base_path:
                    full_path = os.path.join(base_path, full_path)
                elif not os.path.isabs(full_path):
                    full_path = os.path.abspath(os.path.join(yaml_dir, full_path))
                log.info(f"Adding extra search path {folder_name} {full_path}")
                add_model_folder_path(folder_name, os.path.normpath(full_path), is_default)


def get_filename_list(folder_name: str) -> list[str]:
    """Model files under every folder registered for folder_name, relative, sorted."""
    found: set[str] = set()
    for root in folders().models.get(folder_name, []):
        if not os.path.isdir(root):
            continue
        for dirpath, _dirnames, filenames in os.walk(root, followlinks=True):
            for name in filenames:
                if os.path.splitext(name)[1].lower() in SUPPORTED_PT_EXTENSIONS:
                    rel = os.path.relpath(os.path.join(dirpath, name), root)
                    found.add(rel.replace(os.sep, "/"))
    return sorted(found)


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    """ComfyUI's folder_paths.get_full_path_or_raise: the file under the first folder that has it."""
    for root in folders().models.get(folder_name, []):
        path = os.path.join(root, os.path.relpath(os.path.join("/", filename), "/"))
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")


def get_directory_by_type(type_name: str) -> str | None:
    if type_name == "output":
        return folders().output
    if type_name == "temp":
        return folders().temp
    if type_name == "input":
        return folders().input
    return None


def annotated_filepath(name: str) -> tuple[str, str | None]:
    if name.endswith("[output]"):
        return name[:-9], folders().output
    if name.endswith("[input]"):
        return name[:-8], folders().input
    if name.endswith("[temp]"):
        return name[:-7], folders().temp
    return name, None


def is_within_directory(directory: str, target: str) -> bool:
    """0.38.1's check: does `target` resolve (symlinks included) to a path inside `directory`?"""
    try:
        directory = os.path.realpath(directory)
        return os.path.commonpath((directory, os.path.realpath(target))) == directory
    except ValueError:
        return False


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """Where LoadImage reads `name`: 0.3.64 joins and returns (even "../x" or "/abs/x");
    0.38.1 raises ValueError for a name that leaves its folder."""
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = default_dir if default_dir is not None else folders().input
    if not version.current().realpath_containment:
        return os.path.join(base_dir, name)
    filepath = os.path.abspath(os.path.join(base_dir, name))
    if not is_within_directory(base_dir, filepath):
        raise ValueError(f"Invalid file path: {name!r}")
    return filepath


def exists_annotated_filepath(name: str) -> bool:
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = folders().input
    filepath = os.path.join(base_dir, name)
    if version.current().realpath_containment and not is_within_directory(base_dir, os.path.abspath(filepath)):
        return False
    return os.path.exists(filepath)


def filter_files_content_types(files: list[str], content_types: list[str]) -> list[str]:
    result = []
    for name in files:
        mime = guess_type(name)
        if mime and mime.split("/")[0] in content_types:
            result.append(name)
    return result


def get_save_image_path(
    filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0
) -> tuple[str, str, int, str, str]:
    """ComfyUI's counter rule: 1 + the highest `{prefix}_NNNNN_` already in the folder, rescanned
    on every call, with no lock (0.38.1 also reads `{prefix}_NNNNN.ext`)."""
    plain_names = version.current().counter_reads_plain_names

    def map_filename(filename: str) -> tuple[int, str]:
        prefix_len = len(os.path.basename(filename_prefix))
        prefix = filename[: prefix_len + 1]
        remainder = filename[prefix_len + 1 :]
        if plain_names:
            remainder = remainder.split(".")[0]
        try:
            digits = int(remainder.split("_")[0])
        except ValueError:
            digits = 0
        return digits, prefix

    def compute_vars(text: str, width: int, height: int) -> str:
        text = text.replace("%width%", str(width)).replace("%height%", str(height))
        now = time.localtime()
        text = text.replace("%year%", str(now.tm_year))
        text = text.replace("%month%", str(now.tm_mon).zfill(2))
        text = text.replace("%day%", str(now.tm_mday).zfill(2))
        text = text.replace("%hour%", str(now.tm_hour).zfill(2))
        text = text.replace("%minute%", str(now.tm_min).zfill(2))
        return text.replace("%second%", str(now.tm_sec).zfill(2))

    if "%" in filename_prefix:
        filename_prefix = compute_vars(filename_prefix, image_width, image_height)

    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)

    _check_inside_output(output_dir, full_output_folder)

    try:
        candidates = [
            entry
            for entry in map(map_filename, os.listdir(full_output_folder))
            if os.path.normcase(entry[1][:-1]) == os.path.normcase(filename) and entry[1][-1:] == "_"
        ]
        counter = max(candidates)[0] + 1
    except ValueError:
        counter = 1
    except FileNotFoundError:
        os.makedirs(full_output_folder, exist_ok=True)
        counter = 1
    return full_output_folder, filename, counter, subfolder, filename_prefix


def _check_inside_output(output_dir: str, full_output_folder: str) -> None:
    """The "Saving image outside the output folder" guard: abspath in 0.3.64, realpath in 0.38.1."""
    err = (
        "**** ERROR: Saving image outside the output folder is not allowed."
        + "\n full_output_folder: "
        + os.path.abspath(full_output_folder)
        + "\n         output_dir: "
        + output_dir
    )
    if version.current().realpath_containment:
        if is_within_directory(output_dir, full_output_folder):
            return
    else:
        common = os.path.commonpath((output_dir, os.path.abspath(full_output_folder)))
        if common == output_dir:
            return
        err += "\n         commonpath: " + common
    log.error(err)
    raise Exception(err)


def output_entry_path(entry: dict) -> str | None:
    """The file an output entry ({filename, subfolder, type}) names, if it is inside its folder."""
    base = get_directory_by_type(entry.get("type", ""))
    filename, subfolder = entry.get("filename"), entry.get("subfolder") or ""
    if base is None or not isinstance(filename, str) or not isinstance(subfolder, str):
        return None
    path = os.path.realpath(os.path.join(base, subfolder, filename))
    if not is_within_directory(base, path) or not os.path.isfile(path):
        return None
    return path


def wipe_temp() -> None:
    """ComfyUI deletes temp/ at start-up and exit; the stand-in keeps a committed .gitkeep."""
    temp = folders().temp
    if not os.path.isdir(temp):
        os.makedirs(temp, exist_ok=True)
        return
    for entry in os.listdir(temp):
        if entry == ".gitkeep":
            continue
        path = os.path.join(temp, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
