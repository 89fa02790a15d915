"""Which flags the installed ComfyUI accepts: its own comfy/cli_args.py, else the fallback tables.

Read once per start of ComfyUI (launch.py), statically (cli_args_reader), so a release the worker
has never seen starts with exactly the flags it declares. The tables of flags.py are used only
when the file is missing, cannot be followed, or lacks a flag the worker cannot start ComfyUI
without (--listen, --port and the folder flags: then it is more likely the reader missed them
than that ComfyUI dropped them); the line returned for the start-up log says which was used and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from launcher.cli_args_reader import DeclaredFlags, UnreadableFlags, read_declared_flags
from launcher.flags import FlagTable, table_for
from launcher.version import ComfyVersion

CLI_ARGS = Path("comfy") / "cli_args.py"
# Flags the worker passes on every start: without them ComfyUI would listen on its default port
# or write into the volume's folders, shared by every worker.
REQUIRED = ("--listen", "--port", "--input-directory", "--output-directory", "--temp-directory", "--user-directory")


@dataclass(frozen=True)
class InstalledFlags:
    table: FlagTable
    log_line: str  # for the start-up log: where the flags came from


def from_declared(declared: DeclaredFlags, version: ComfyVersion) -> FlagTable:
    choices = {flag: option.choices for option in declared.options if option.choices for flag in option.strings}
    return FlagTable(
        name=f"the flags its {CLI_ARGS} declares",
        flags=declared.flags,
        release=version.text,
        certain=declared.certain,
        allow_abbrev=declared.allow_abbrev,
        choices=choices,
    )


def installed_flags(comfyui_dir: Path, version: ComfyVersion) -> InstalledFlags:
    """The installed release's flags, and the start-up log line that says where they came from."""
    path = comfyui_dir / CLI_ARGS
    try:
        declared = read_declared_flags(path)
    except UnreadableFlags as error:
        return _fallback(version, f"{path} could not be read ({error})")
    missing = [flag for flag in REQUIRED if flag not in declared.certain]
    if missing:
        return _fallback(version, f"{path} declares no {', '.join(missing)} that the reader could find")
    return InstalledFlags(from_declared(declared, version), _describe(declared))


def _describe(declared: DeclaredFlags) -> str:
    conditional = sorted(declared.flags - declared.certain)
    notes = [f"{len(declared.flags)} flags"]
    notes.append("abbreviations allowed" if declared.allow_abbrev else "no abbreviations (allow_abbrev=False)")
    if conditional:
        notes.append(f"declared only under a condition, never passed by the worker: {' '.join(conditional)}")
    if declared.tolerates_unknown:
        notes.append("parse_known_args: unknown flags are ignored by ComfyUI, and still refused here")
    return f"ComfyUI's flags: read from {declared.path} ({'; '.join(notes)})"


def _fallback(version: ComfyVersion, why: str) -> InstalledFlags:
    table = table_for(version.release)
    return InstalledFlags(table, f"ComfyUI's flags: {why}; using the worker's table, {table.name}")
