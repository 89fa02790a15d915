"""ComfyUI's memory inside a container: the container's limit, and ComfyUI started to stay within it.

Since 0.38 ComfyUI caches node outputs under "RAM pressure" by default: its RAMPressureCache
(comfy_execution/caching.py) frees results only while `psutil.virtual_memory().available` is
below a headroom (--cache-ram GB; by default 10% of psutil's total RAM, 2 to 10 GB), and
comfy/model_management.py sizes its RAM budgets from the same psutil figures. psutil reads
/proc/meminfo, which containers do not namespace: in a container whose memory limit is below
the machine's RAM, ComfyUI sees the machine's free memory, never frees anything, and the
kernel's out-of-memory killer ends it in the middle of a job.

No flag of ComfyUI changes what it measures (--cache-ram sets the headroom, not the measure),
so when the limit is below the machine's RAM and the installed ComfyUI does not clamp its
figures itself (later sources have comfy/system_memory.py for that), ComfyUI is started with
launcher/comfy_site on its PYTHONPATH: its sitecustomize clamps `psutil.virtual_memory()` to
the container (total: the limit; available: the limit less the cgroup's usage), so the cache,
with ComfyUI's own headroom or the --cache-ram a user sets, frees results before the limit.

The limit is the smallest one of the process's cgroup and its ancestors (/proc/self/cgroup;
cgroup v2 memory.max, v1 memory.limit_in_bytes), or the one of COMFY_CGROUP_DIR when set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
SITE = Path(__file__).resolve().parent / "comfy_site"
CGROUP_DIR_VARIABLE = "COMFY_WORKER_CGROUP_DIR"  # tells ComfyUI's sitecustomize where to read
_V1_UNLIMITED = 1 << 62
GB = 1024**3


@dataclass(frozen=True)
class Limit:
    bytes: int
    directory: Path
    file: str  # "memory.max" (v2) or "memory.limit_in_bytes" (v1)


@dataclass(frozen=True)
class MemoryPlan:
    env: dict[str, str]  # added to ComfyUI's environment
    log_line: str  # for the start-up log: what was detected, what was done


def limit_in(directory: Path) -> Limit | None:
    """The memory limit set on one cgroup directory, if it sets one."""
    for name in ("memory.max", "memory.limit_in_bytes"):
        try:
            raw = (directory / name).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < _V1_UNLIMITED:
            return Limit(int(raw), directory, name)
    return None


def own_cgroup_dirs(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> list[Path]:
    """This process's memory cgroup directories, nearest first, then their ancestors up to the mount."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return [root, root / "memory"]
    dirs: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            mount = root / "unified" if (root / "unified").is_dir() else root  # v2, or v2 beside v1 ("hybrid")
        elif "memory" in controllers.split(","):
            mount = root / "memory"
        else:
            continue
        directory = mount / path.strip("/")
        dirs += [d for d in [directory, *directory.parents] if d.is_relative_to(mount) and d not in dirs]
    return dirs


def container_limit(configured: str, proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> Limit | None:
    """The limit that binds: COMFY_CGROUP_DIR's (`configured`), else the smallest of this process's cgroups."""
    if configured:
        return limit_in(Path(configured))
    limits = [limit for d in own_cgroup_dirs(proc_cgroup, root) if (limit := limit_in(d)) is not None]
    return min(limits, key=lambda limit: limit.bytes, default=None)


def clamps_itself(comfyui_dir: Path) -> bool:
    """Whether the install measures memory within its container itself (comfy/system_memory.py)."""
    try:
        return "def virtual_memory_available" in (comfyui_dir / "comfy" / "system_memory.py").read_text()
    except (OSError, UnicodeDecodeError):
        return False


def memory_plan(comfyui_dir: Path, env: dict[str, str], limit: Limit | None) -> MemoryPlan:
    """How ComfyUI is started so its caches stay within `limit`; `env` is ComfyUI's environment."""
    machine = psutil.virtual_memory().total
    if limit is None or limit.bytes >= machine:
        found = "no container memory limit" if limit is None else f"a container limit of {_gb(limit.bytes)}"
        return MemoryPlan({}, f"ComfyUI's memory: {found} below the machine's {_gb(machine)}; nothing to do")
    detected = (
        f"ComfyUI's memory: the container's limit is {_gb(limit.bytes)} ({limit.directory / limit.file}), "
        f"the machine has {_gb(machine)}"
    )
    if clamps_itself(comfyui_dir):
        return MemoryPlan({}, f"{detected}; the installed ComfyUI measures within its container itself")
    path = env.get("PYTHONPATH")
    added = {"PYTHONPATH": f"{SITE}:{path}" if path else str(SITE), CGROUP_DIR_VARIABLE: str(limit.directory)}
    return MemoryPlan(
        added,
        f"{detected}: ComfyUI's psutil.virtual_memory() is clamped to the container ({SITE}/sitecustomize.py), "
        "so its RAM-pressure cache frees results before the limit",
    )


def _gb(size: int) -> str:
    return f"{size / GB:.1f} GB"
