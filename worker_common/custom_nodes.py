"""Custom node packs ComfyUI could not import: read from its start-up log, kept in the run dir.

ComfyUI (nodes.py, the same in 0.3.64 and 0.38.1) reports a pack that fails to import twice
while it starts: first, as it loads the pack, a traceback and

    Cannot import /workspace/ComfyUI/custom_nodes/comfyui_controlnet_aux module for custom nodes: No module named 'cv2'

then, once every pack is loaded and before HTTP comes up, one line per pack in its summary:

    Import times for custom nodes:
       0.0 seconds: /workspace/ComfyUI/custom_nodes/websocket_image_save.py
       0.0 seconds (IMPORT FAILED): /workspace/ComfyUI/custom_nodes/comfyui_controlnet_aux

and carries on without the pack's nodes, so a job naming one fails with "node X does not exist".
The summary says which packs failed; the lines before it say why (a pack without
NODE_CLASS_MAPPINGS or whose V3 `comfy_entrypoint` fails is reported in its own words).

The sidecar parses the report of the running ComfyUI and writes the failures to
`$WORKER_RUN_DIR/custom-nodes.json` (`write_failures`); the handler reads them
(`read_failures`) to explain a missing node class.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from worker_common.files import write_atomically

FILE_NAME = "custom-nodes.json"
MAX_ERROR_CHARS = 300

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SUMMARY_HEADER = "Import times for custom nodes:"
# A summary line; `search`, not `match`: ComfyUI-Manager's log handler puts a timestamp in front.
_SUMMARY_LINE = re.compile(r"(?:^|\s)\d+\.\d+ seconds(?P<failed> \(IMPORT FAILED\))?: (?P<path>\S.*?)\s*$")
# ComfyUI's own words for a pack it gave up on (load_custom_node), path first.
_WHY = (
    re.compile(r"Cannot import (?P<path>.+?) module for custom nodes: (?P<error>.*)$"),
    re.compile(r"Skip (?P<path>.+?) module for custom nodes due to (?P<error>the lack of .*?)\.?$"),
    re.compile(r"Error while calling comfy_entrypoint in (?P<path>.+?): (?P<error>.*)$"),
    re.compile(r"comfy_entrypoint in (?P<path>.+?) (?P<error>is not callable|did not return .*?)(?:, skipping\.)?$"),
)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning|Failure)\b(: .*)?$")


@dataclass(frozen=True)
class FailedPack:
    """A custom node pack ComfyUI could not load; its nodes do not exist in this ComfyUI."""

    name: str  # its folder (or .py file, without the suffix) under custom_nodes/
    path: str
    error: str  # why, e.g. "ModuleNotFoundError: No module named 'cv2'"; "" when ComfyUI logged nothing


@dataclass(frozen=True)
class ImportReport:
    """ComfyUI's start-up summary of its custom node packs."""

    imported: tuple[str, ...]  # paths of the packs that loaded
    failed: tuple[FailedPack, ...]


def pack_name(path: str) -> str:
    name = PurePosixPath(path.rstrip("/")).name
    return name[:-3] if name.endswith(".py") else name


def _lines(log_text: str) -> list[str]:
    return _ANSI.sub("", log_text).replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _shorten(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _last_summary(lines: list[str]) -> tuple[int, list[tuple[str, bool]]] | None:
    """(index of the header, [(path, failed)]) of the last summary, or None without one."""
    headers = [index for index, line in enumerate(lines) if _SUMMARY_HEADER in line]
    if not headers:
        return None
    entries = []
    for line in lines[headers[-1] + 1 :]:
        match = _SUMMARY_LINE.search(line)
        if match is None:
            break
        entries.append((match.group("path"), match.group("failed") is not None))
    return headers[-1], entries


def _with_exception_type(lines: list[str], index: int, error: str) -> str:
    """`error` as the traceback above line `index` states it, type included ("ModuleNotFoundError: ...").

    ComfyUI's "Cannot import" line carries only `str(exception)`; the traceback it logs just
    before ends with the same message after the exception's type.
    """
    for line in reversed(lines[max(0, index - 3) : index]):
        if not line.strip():
            continue
        candidate = line.strip()
        if _EXCEPTION_LINE.match(candidate) and (candidate.endswith(": " + error) or not error):
            return candidate
        break
    return error


def _reasons(lines: list[str]) -> dict[str, str]:
    """path -> why, from ComfyUI's lines about packs it gave up on (the last one per path wins)."""
    reasons: dict[str, str] = {}
    for index, line in enumerate(lines):
        for pattern in _WHY:
            match = pattern.search(line)
            if match:
                error = match.group("error").strip()
                if pattern is _WHY[0]:
                    error = _with_exception_type(lines, index, error)
                reasons[match.group("path").strip()] = _shorten(error)
                break
    return reasons


def parse_import_report(log_text: str) -> ImportReport | None:
    """The custom node report of the last ComfyUI start in `log_text`; None when it holds none.

    `log_text` should be one ComfyUI process's log from its start: the summary is its last
    "Import times for custom nodes:" block, and the reasons come from the lines before it.
    """
    lines = _lines(log_text)
    summary = _last_summary(lines)
    if summary is None:
        return None
    header, entries = summary
    previous = _last_summary(lines[:header])
    reasons = _reasons(lines[previous[0] if previous else 0 : header])
    imported = tuple(path for path, failed in entries if not failed)
    failed = tuple(FailedPack(pack_name(path), path, reasons.get(path, "")) for path, failed in entries if failed)
    return ImportReport(imported, failed)


# -- the run dir's file ---------------------------------------------------------------------


def write_failures(run_dir: Path, failed: Iterable[FailedPack], comfyui_pid: int | None) -> Path:
    """Record the failed packs of the ComfyUI process `comfyui_pid` (atomically: readers never see half)."""
    path = run_dir / FILE_NAME
    body = {
        "comfyui_pid": comfyui_pid,
        "written_at": time.time(),
        "failed": [asdict(pack) for pack in failed],
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(body, indent=1) + "\n")
    return path


def read_failures(run_dir: Path) -> list[FailedPack]:
    """The packs the running ComfyUI could not import; [] when none failed or nothing was recorded."""
    try:
        body = json.loads((run_dir / FILE_NAME).read_text())
        return [FailedPack(str(p["name"]), str(p["path"]), str(p.get("error", ""))) for p in body["failed"]]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def remove_failures(run_dir: Path) -> None:
    """Forget what an earlier ComfyUI reported (the sidecar does so when it starts)."""
    with contextlib.suppress(FileNotFoundError):
        (run_dir / FILE_NAME).unlink()
