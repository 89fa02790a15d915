"""The stand-in's comfy/cli_args.py: the flags of the release it plays, in a file as a real install has.

A real install has one comfy/cli_args.py, and the worker's launcher reads it without running it
to learn which flags the installed release accepts. The stand-in plays several releases from one
folder (STANDIN_COMFYUI_VERSION), so each release's declaration lives in releases/ and the one
for the release played is written to comfy/cli_args.py when the stand-in is set up to play it:

    cd standin/ComfyUI && python -m standin_server.release_files 0.38.1

(tests/stack.py does this for every stack). The written file starts with a line naming the
release it was written for. main.py parses its command line with comfy/cli_args.py, as
ComfyUI's does, when that file is for the release played or is not one the stand-in wrote
(a test's own cli_args.py for a release nobody has seen); otherwise with the release's own file
from releases/, so a stale comfy/cli_args.py never changes what the stand-in accepts.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMFYUI_DIR = HERE.parent
RELEASES = HERE / "releases"
# The release each version's flags are declared for: no flag changes between 0.38.1 and 0.47.1
# can be read from ComfyUI's stored sources (docs/comfyui-versions.md), so 0.47.1 shares 0.38.1's.
FILES = {"0.3.64": "cli_args_0_3_64.py", "0.38.1": "cli_args_0_38_1.py", "0.47.1": "cli_args_0_38_1.py"}
MARKER = "# Written by the stand-in for ComfyUI "


def source(version: str) -> Path:
    """The declaration of `version`'s flags in releases/."""
    try:
        return RELEASES / FILES[version]
    except KeyError:
        raise ValueError(f"the stand-in declares no flags for ComfyUI {version} (known: {', '.join(FILES)})") from None


def written_for(path: Path) -> str | None:
    """The release a comfy/cli_args.py the stand-in wrote is for; None for any other file (or none)."""
    try:
        with path.open(encoding="utf-8") as file:
            first = file.readline()
    except OSError:
        return None
    return first[len(MARKER) :].split()[0] if first.startswith(MARKER) else None


def write(comfyui_dir: Path, version: str) -> Path:
    """Write `version`'s declaration as `comfyui_dir`/comfy/cli_args.py (atomically: readers see old or new),
    unless it is there already."""
    text = f"{MARKER}{version} from standin_server/releases/{source(version).name}\n{source(version).read_text()}"
    target = comfyui_dir / "comfy" / "cli_args.py"
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return target  # already declared: an install's file is not rewritten (its mtime is the volume's)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".cli_args.")
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, target)
    return target


def to_parse_with(version: str, comfyui_dir: Path = COMFYUI_DIR) -> Path:
    """The file main.py parses its command line with (see the module docstring)."""
    declared = comfyui_dir / "comfy" / "cli_args.py"
    if declared.is_file() and written_for(declared) in (version, None):
        return declared
    return source(version)


if __name__ == "__main__":
    from .version import requested

    # No VERSION: the release STANDIN_COMFYUI_VERSION asks the stand-in to play (scripts/run-local).
    wanted = sys.argv[1] if len(sys.argv) == 2 else requested()
    if len(sys.argv) > 2 or wanted not in FILES:
        sys.exit(f"usage: python -m standin_server.release_files [VERSION] (one of {', '.join(FILES)})")
    print(write(COMFYUI_DIR, wanted))
