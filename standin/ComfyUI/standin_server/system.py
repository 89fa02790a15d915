"""Host figures for /system_stats, without psutil: on a CPU device ComfyUI reports RAM as VRAM."""

from __future__ import annotations

import os


def memory() -> tuple[int, int]:
    """(total, available) RAM in bytes, from /proc/meminfo, else sysconf."""
    try:
        fields = {}
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                name, _, rest = line.partition(":")
                fields[name] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page


def deploy_environment(install_dir: str) -> str:
    """0.38.1's comfy/deploy_environment: the first line of <install>/.comfy_environment, else "local-git"."""
    try:
        with open(os.path.join(install_dir, ".comfy_environment"), encoding="utf-8") as stream:
            value = "".join(c for c in stream.readline(128).strip() if 32 <= ord(c) < 127)
    except OSError:
        return "local-git"
    return value or "local-git"
