"""`probe` (Docker's HEALTHCHECK) and `status` (a table for a person inside the Pod).

Both find their own stack: the sidecar of this checkout or container records where it
listens in the run dir (run_record.py), so the calling shell's SIDECAR_PORT plays no part;
`--url` still wins. `status` asks the sidecar first (its `/status`: readiness, reason,
restarts, GPUs, queue, the state its /metrics renders, as JSON) and supervisord second (each
program's state and uptime, how its processes ended, the last error line each one logged in
its own life). When the sidecar does not answer it
says so and reads what it can itself: GPUs through NVML or ComfyUI's /system_stats, the
queue from ComfyUI, programs from supervisord. The log lines shown are a person's to read
in the Pod; the sidecar never serves them.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from worker_common import settings, startup
from worker_common.comfy_client import ComfyClient, ComfyError
from worker_common.comfy_protocol import QueueState
from worker_common.contract import (
    CODE_COPY_RECORD,
    COMFYUI_ANSWERED_RECORD,
    CRITICAL_PROGRAMS,
    EXIT_REASON_FILE,
    FIRST_JOB_RECORD,
    FIRST_MODEL_RECORD,
    MODEL_PREFETCH_RECORD,
    PROGRAM_COMFYUI,
    SidecarStatus,
)
from worker_common.settings import ConfigError

from . import run_record

LOG_TAIL_BYTES = 64 * 1024  # of a program's log, for its last error line


def find_sidecar(url: str | None) -> tuple[str | None, int | None, str]:
    """(the sidecar's URL, ComfyUI's port, why there is none): `url` if given, else this stack's record."""
    if url:
        return url, None, ""
    try:
        run_dir = settings.run_dir()
    except ConfigError as error:
        return None, None, str(error)
    record = run_record.read(run_dir)
    if record is None:
        why = f"no sidecar has recorded its address in {run_dir / run_record.FILE_NAME} (is this stack running?)"
        return None, None, why
    return record.url, record.comfy_port, ""


def get(url: str, path: str, timeout_s: float) -> tuple[int, bytes]:
    """One GET with the standard library: (status, body). Raises OSError when nobody answers."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as error:
        raise OSError(str(error)) from error
    finally:
        connection.close()


def probe(url: str | None, timeout_s: float) -> int:
    """Exit status for a HEALTHCHECK: 0 when /readyz answers 200, else 1 (with one line why)."""
    base, _comfy_port, why = find_sidecar(url)
    try:
        if base is None:
            raise OSError(why)
        status, body = get(base, "/readyz", timeout_s)
    except OSError as error:
        print(f"not ready: sidecar does not answer: {error}")
        return 1
    if status == 200:
        return 0
    try:
        detail = json.loads(body)
        print(f"not ready: {detail.get('state')}: {detail.get('reason')}")
    except ValueError:
        print(f"not ready: /readyz answered {status}")
    return 1


# -- status ----------------------------------------------------------------------------


@dataclass
class Report:
    url: str
    now: float
    sidecar_error: str = ""
    comfy_port: int | None = None
    sidecar: SidecarStatus | None = None  # its `/status`; None when it did not answer
    supervisor_error: str = ""
    programs: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    ends: dict[str, str] = field(default_factory=dict)  # program -> how its last process ended unasked
    gpus: list[dict[str, Any]] = field(default_factory=list)
    queue: tuple[int, int] | None = None
    version: str | None = None
    custom_nodes: list[Any] | None = None  # FailedPack; None: ComfyUI's report not recorded
    code_copy: dict[str, Any] | None = None  # the launcher's CODE_COPY_RECORD; None: none readable
    startup: dict[str, dict[str, Any]] = field(default_factory=dict)  # the later phases' records that exist
    exit_reason: str = ""


def _read_sidecar(report: Report, timeout_s: float) -> None:
    try:
        _status, body = get(report.url, "/status", timeout_s)
        report.sidecar = SidecarStatus.from_body(json.loads(body))
    except (OSError, ValueError) as error:
        report.sidecar_error = str(error) or type(error).__name__


def _read_supervisor(report: Report) -> None:
    from .lives import parse_lives
    from .probe import SupervisorReader

    try:
        reader = SupervisorReader(settings.supervisor_socket(), 3.0, announce=False)
    except ConfigError as error:
        report.supervisor_error = str(error)
        return
    infos = reader.all_process_info()
    if infos is None:
        report.supervisor_error = reader.last_error
        return
    report.programs = infos
    main_log = reader.main_log_tail()
    lives = parse_lives(main_log) if main_log else {}
    for info in infos:
        name = str(info.get("name", ""))
        history = lives.get(name, [])
        line = _last_error_of_life(info, history)
        if line:
            report.errors[name] = line
        ended = next((life for life in reversed(history) if life.ending and not life.ending.stopped), None)
        if ended is not None and ended.ending is not None:
            ago = _duration(report.now - ended.ending.at)
            report.ends[name] = f"pid {ended.pid} {ended.ending.describe()}, {ago} ago"


def _last_error_of_life(info: dict[str, Any], history: list) -> str | None:
    """The last error line the program's current (or, when down, last) process wrote in its own life."""
    from .program_logs import comfyui_life, read_end, stamped_since
    from .reasons import last_error_line

    if not info.get("stdout_logfile"):
        return None
    path = Path(info["stdout_logfile"])
    if info.get("name") == PROGRAM_COMFYUI:
        pid = int(info.get("pid") or 0) or (history[-1].pid if history else 0)
        life = comfyui_life(path, pid, info.get("statename") == "RUNNING") if pid else None
        if life is None:
            return None
        return last_error_line(life.text[-LOG_TAIL_BYTES:], overflow=len(life.text) > LOG_TAIL_BYTES)
    since = history[-1].spawned_at if history else float(info.get("start") or 0)
    text, _start = read_end(path, LOG_TAIL_BYTES)
    return last_error_line(stamped_since(text, since)) if since else None


def _read_figures(report: Report) -> None:
    """GPUs and queue: from the sidecar's state, else straight from NVML and ComfyUI."""
    sidecar = report.sidecar
    if sidecar is not None:
        for gpu in sidecar.gpus:
            report.gpus.append(
                {
                    "gpu": gpu.gpu,
                    "name": gpu.name,
                    "source": gpu.source,
                    "used": gpu.used_bytes,
                    "total": gpu.total_bytes,
                    "util": gpu.utilization_ratio,
                    "temp": gpu.temperature_celsius,
                    "power": gpu.power_watts,
                }
            )
        if sidecar.queue_running is not None and sidecar.queue_pending is not None:
            report.queue = (sidecar.queue_running, sidecar.queue_pending)
        report.version = sidecar.comfyui_version
        return
    from .gpu import GpuReader
    from .probe import comfyui_version

    system_stats = None
    try:
        client = ComfyClient("127.0.0.1", report.comfy_port or settings.comfy_port(), timeout_s=2.0)
    except ConfigError:
        client = None
    try:
        if client is not None:
            system_stats = client.system_stats()
            queue = QueueState.from_body(client.queue())
            report.queue = (queue.running_count, queue.pending_count) if queue is not None else None
    except (ComfyError, ValueError):
        pass
    finally:
        if client is not None:
            client.close()
    report.version = comfyui_version(system_stats)
    reader = GpuReader()
    for gpu in reader.read(system_stats).gpus:
        report.gpus.append(
            {
                "gpu": gpu.gpu,
                "name": gpu.name,
                "source": gpu.source,
                "used": gpu.memory_used_bytes,
                "total": gpu.memory_total_bytes,
                "util": gpu.utilization_ratio,
                "temp": gpu.temperature_celsius,
                "power": gpu.power_watts,
            }
        )
    reader.close()


def _read_run_dir(report: Report) -> None:
    """What the programs left in the run dir: the watchdog's exit reason, ComfyUI's failed packs, the code copy."""
    from worker_common import custom_nodes

    try:
        run_dir = settings.run_dir()
        reason = run_dir / EXIT_REASON_FILE
        report.exit_reason = reason.read_text().strip() if reason.is_file() else ""
    except (OSError, ConfigError):
        return
    if (run_dir / custom_nodes.FILE_NAME).is_file():
        report.custom_nodes = custom_nodes.read_failures(run_dir)
    report.code_copy = startup.read(CODE_COPY_RECORD)
    phases = (COMFYUI_ANSWERED_RECORD, MODEL_PREFETCH_RECORD, FIRST_MODEL_RECORD, FIRST_JOB_RECORD)
    report.startup = {name: found for name in phases if (found := startup.read(name))}


def gather(url: str | None = None, timeout_s: float = 3.0) -> Report:
    base, comfy_port, why = find_sidecar(url)
    report = Report(url=base or "-", now=time.time(), comfy_port=comfy_port)
    if base is None:
        report.sidecar_error = why
    else:
        _read_sidecar(report, timeout_s)
    _read_supervisor(report)
    _read_figures(report)
    _read_run_dir(report)
    return report


# -- rendering ---------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def render(report: Report) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.now))
    lines = [f"comfy worker status, {stamp}"]
    if report.sidecar_error and report.url == "-":
        lines.append(f"sidecar     DOWN: {report.sidecar_error}")
        lines.append("readiness   unknown (the sidecar decides it); figures below are read directly")
    elif report.sidecar_error:
        lines.append(f"sidecar     DOWN: no answer at {report.url} ({report.sidecar_error})")
        lines.append("readiness   unknown (the sidecar decides it); figures below are read directly")
    elif report.sidecar is not None:
        lines.append(f"sidecar     answering at {report.url}, probe loop ticked {report.sidecar.loop_age_s:.1f}s ago")
        ready = report.sidecar.readiness
        since = ready.since or report.now
        lines.append(f"readiness   {ready.state.upper()} for {_duration(report.now - since)}: {ready.reason}")
        startup = report.sidecar.startup_duration_s
        if startup is not None:
            lines.append(f"start-up    ready {startup:.1f}s after the container started")
        elif ready.state == "starting":
            lines.append(f"start-up    {ready.startup_window_left_s:.0f}s left of the start-up window")
        lines += _code_lines(report)
    if report.version:
        lines.append(f"version     ComfyUI {report.version}")

    lines.append("")
    if report.supervisor_error:
        lines.append(f"supervisord does not answer: {report.supervisor_error}")
    else:
        rows = []
        order = {name: index for index, name in enumerate(CRITICAL_PROGRAMS)}
        for info in sorted(report.programs, key=lambda i: (order.get(i.get("name", ""), 9), i.get("name", ""))):
            name = info.get("name", "?")
            running = info.get("statename") in ("RUNNING", "STARTING") and info.get("start")
            uptime = _duration(info.get("now", report.now) - info["start"]) if running else "-"
            restarts = report.sidecar.restarts.get(name) if report.sidecar else None
            exit_text = str(info.get("exitstatus")) if info.get("statename") in ("EXITED", "BACKOFF", "FATAL") else ""
            if info.get("spawnerr"):
                exit_text = info["spawnerr"]
            rows.append(
                [
                    name,
                    info.get("statename", "?"),
                    str(info.get("pid") or "-"),
                    uptime,
                    "?" if restarts is None else str(restarts),
                    exit_text,
                ]
            )
        lines.extend(_table(["PROGRAM", "STATE", "PID", "UPTIME", "RESTARTS", "EXIT"], rows))

    lines.append("")
    if report.gpus:
        rows = [
            [
                gpu["gpu"],
                gpu["name"][:28],
                _bytes(gpu["used"]),
                _bytes(gpu["total"]),
                "-" if gpu["util"] is None else f"{gpu['util'] * 100:.0f}%",
                "-" if gpu["temp"] is None else f"{gpu['temp']:.0f}C",
                "-" if gpu["power"] is None else f"{gpu['power']:.0f}W",
                gpu["source"],
            ]
            for gpu in report.gpus
        ]
        lines.extend(_table(["GPU", "NAME", "VRAM USED", "VRAM TOTAL", "UTIL", "TEMP", "POWER", "SOURCE"], rows))
    else:
        lines.append("GPU         no figures (no NVML and ComfyUI does not answer)")
    queue = (
        f"running {report.queue[0]}, pending {report.queue[1]}" if report.queue else "unknown (ComfyUI does not answer)"
    )
    lines.append(f"queue       {queue}")
    lines.extend(_custom_node_lines(report))

    lines.append("")
    lines.append("last errors")
    if report.exit_reason:
        lines.append(f"  exit-reason  {report.exit_reason}")
    if not report.errors and not report.exit_reason and not report.ends:
        lines.append("  none in the programs' recent logs")
    width = max((len(name) for name in (*report.errors, *report.ends)), default=0)
    for name, text in report.ends.items():
        lines.append(f"  {name.ljust(width)}  {text}")
    for name, line in report.errors.items():
        lines.append(f"  {name.ljust(width)}  {line}")
    return "\n".join(lines)


def _code_lines(report: Report) -> list[str]:
    """Where ComfyUI's code came from at its last start: the launcher's record (launcher/codecopy.py)."""
    record = report.code_copy
    if record is None or "from_copy" not in record:
        return []
    from_copy = bool(record["from_copy"])
    where = "a copy on the container's disk" if from_copy else "the network volume"
    ready = record.get("code_ready_after_start_s")
    when = f", ready {ready:.1f}s after the container started" if ready is not None else ""
    files, copied = record.get("files_copied") or 0, record.get("bytes_copied") or 0
    linked = int(record.get("data_folders_linked") or 0)
    what = f"; {int(files)} files ({_bytes(copied)}) copied from the volume" if from_copy else ""
    what += f", {linked} data folders read from it in place" if from_copy and linked else ""
    return [f"code        ComfyUI's code from {where}{when}{what}", *_phase_lines(report)]


def _phase_lines(report: Report) -> list[str]:
    """The start-up's phases, seconds after the container started: the records in the run directory
    (worker_common/startup.py; /metrics has them too, with supervisord's start)."""
    prefetch = report.startup.get(MODEL_PREFETCH_RECORD, {})
    reached = {
        "code": (report.code_copy or {}).get("code_ready_after_start_s"),
        "ComfyUI answered": report.startup.get(COMFYUI_ANSWERED_RECORD, {}).get("after_start_s"),
        "ready": report.sidecar.startup_duration_s if report.sidecar else None,
        "models read ahead": prefetch.get("after_start_s"),
        "first model loaded": report.startup.get(FIRST_MODEL_RECORD, {}).get("after_start_s"),
        "first job done": report.startup.get(FIRST_JOB_RECORD, {}).get("after_start_s"),
    }
    cells = [f"{phase} {seconds:.1f}s" for phase, seconds in reached.items() if isinstance(seconds, int | float)]
    if prefetch:
        cells.append(
            f"{int(prefetch.get('files') or 0)} model file(s) ({_bytes(prefetch.get('bytes') or 0)}) read ahead"
        )
    if prefetch.get("kept_files"):
        cells.append(f"{int(prefetch['kept_files'])} kept on the disk from the last start")
    return [f"phases      after the container started: {', '.join(cells)}"] if cells else []


def _custom_node_lines(report: Report) -> list[str]:
    if report.custom_nodes is None:
        return ["custom nodes  not read yet (the sidecar reads ComfyUI's start-up report once ComfyUI answers)"]
    if not report.custom_nodes:
        return ["custom nodes  every pack imported"]
    lines = [f"custom nodes  {len(report.custom_nodes)} pack(s) failed to import; their nodes do not exist:"]
    width = max(len(pack.name) for pack in report.custom_nodes)
    for pack in report.custom_nodes:
        lines.append(f"  {pack.name.ljust(width)}  {pack.error or 'no error logged'}  ({pack.path})")
    return lines


def print_status(url: str | None, timeout_s: float) -> int:
    """Print the table; exit 0 when ready, 1 otherwise (handy in scripts)."""
    report = gather(url, timeout_s)
    print(render(report))
    return 0 if report.sidecar and report.sidecar.readiness.ready else 1
