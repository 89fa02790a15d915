"""Which ComfyUI release is installed on the volume.

ComfyUI ships `comfyui_version.py` (`__version__ = "0.38.1"`); the launcher imports it with the
volume venv's Python in COMFYUI_DIR (see install.probe), as ComfyUI itself would, so a generated
or computed version reads right. An install without it falls back to `pyproject.toml`'s
`[project] version`; neither gives an unknown version, which flags.table_for maps.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from launcher.flags import Release

_RELEASE = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class ComfyVersion:
    text: str | None  # as the install states it ("0.38.1"); None when unknown
    source: str  # where it was read ("comfyui_version.py", "pyproject.toml"), or why it is unknown

    @property
    def release(self) -> Release | None:
        """(major, minor, patch), or None when unknown or not a version number."""
        match = _RELEASE.match(self.text or "")
        return tuple(int(part or 0) for part in match.groups()) if match else None

    def describe(self) -> str:
        if self.text is None:
            return f"ComfyUI of unknown version ({self.source})"
        return f"ComfyUI {self.text}"


def installed_version(comfyui_dir: Path, imported: str | None) -> ComfyVersion:
    """The version `comfyui_version.py` gave (`imported`), else the one in pyproject.toml."""
    if imported:
        return ComfyVersion(imported, "comfyui_version.py")
    from_pyproject = pyproject_version(comfyui_dir / "pyproject.toml")
    if from_pyproject:
        return ComfyVersion(from_pyproject, "pyproject.toml")
    return ComfyVersion(None, "no comfyui_version.py, no version in pyproject.toml")


def pyproject_version(path: Path) -> str | None:
    try:
        project = tomllib.loads(path.read_text()).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    version = project.get("version") if isinstance(project, dict) else None
    return str(version) if version else None
