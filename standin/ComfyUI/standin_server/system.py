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
