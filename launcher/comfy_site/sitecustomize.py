"""Run by ComfyUI's Python at start-up when the launcher puts this folder on its PYTHONPATH (launcher/memory.py).

It makes `psutil.virtual_memory()` describe the container rather than the machine: `total` is at
most the container's memory limit and `available` at most the limit less the cgroup's usage
(its working set: usage less inactive file cache, as the kernel reclaims that first). ComfyUI's
RAM-pressure cache and its RAM budgets read these figures, so they free memory before the
kernel's out-of-memory killer would. The cgroup folder is COMFY_WORKER_CGROUP_DIR; on any
error the machine's figures are returned unchanged. Only the standard library and psutil.
"""

import os

_DIRECTORY = os.environ.get("COMFY_WORKER_CGROUP_DIR", "")


def _number(name):
    try:
        with open(os.path.join(_DIRECTORY, name)) as file:
            raw = file.read().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


def _inactive_file(name):
    try:
        with open(os.path.join(_DIRECTORY, "memory.stat")) as file:
            for line in file:
                key, _, value = line.partition(" ")
                if key == name:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _container(memory):
    limit = _number("memory.max") or _number("memory.limit_in_bytes")
    if limit is None or limit >= memory.total:
        return memory
    current = _number("memory.current")
    if current is not None:
        usage = current - _inactive_file("inactive_file")
    else:
        usage = (_number("memory.usage_in_bytes") or 0) - _inactive_file("total_inactive_file")
    available = max(0, min(memory.available, limit - max(0, usage)))
    used = limit - available
    percent = round(used * 100 / limit, 1)
    return memory._replace(
        total=limit, available=available, used=used, free=min(memory.free, available), percent=percent
    )


def _install():
    try:
        import psutil
    except ImportError:  # ComfyUI's requirements have it; without it there is nothing to clamp
        return
    machine = psutil.virtual_memory

    def virtual_memory():
        memory = machine()
        try:
            return _container(memory)
        except Exception:  # never let the clamp break ComfyUI
            return memory

    psutil.virtual_memory = virtual_memory


if _DIRECTORY:
    _install()
