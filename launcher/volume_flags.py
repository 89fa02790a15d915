"""ComfyUI's model-storage flags for models on a network volume (docs/coldstart.md, "Dynamic VRAM").

Newer ComfyUI's dynamic VRAM can keep a model's weights "disk-backed": offloaded weights are not
kept in RAM but read again from the model file when next needed (--fast-disk; by default only
for files on a local NVMe disk it recognises). On a network volume each such reuse reads the
weights again at the volume's bandwidth (bench/bench_model_access.py: a reuse after the pages
were dropped costs the whole file again, ~150 MB/s from one stream, against memory speed when
kept), so for models on a slow volume the launcher passes --disable-fast-disk when the installed
ComfyUI declares it, unless COMFY_EXTRA_ARGS chooses either way. mmap against one large read
measured the same there: --disable-mmap is not passed.
"""

from __future__ import annotations

from launcher.flags import FlagTable

DISABLE_FAST_DISK = "--disable-fast-disk"
CHOSEN_BY_USER = frozenset({"--fast-disk", DISABLE_FAST_DISK})


def model_storage_args(table: FlagTable, args: list[str], models_on_slow_volume: bool) -> list[str]:
    """What to add to ComfyUI's command line `args` (already holding COMFY_EXTRA_ARGS, full names)."""
    if not models_on_slow_volume or not table.has(DISABLE_FAST_DISK) or CHOSEN_BY_USER & set(args):
        return []
    return [DISABLE_FAST_DISK]
