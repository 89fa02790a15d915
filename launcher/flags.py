"""The fallback tables of ComfyUI's command-line flags, for an install whose cli_args.py cannot be read.

A flag a release does not have makes its argparse stop ComfyUI with exit 2 before anything
starts, so the launcher checks COMFY_EXTRA_ARGS against the flags of the installed release and
passes only flags it has. It reads them from the install's own comfy/cli_args.py
(launcher/installed_flags.py); these tables are used only when that file cannot be read or
followed, and the start-up log says so. Sources (flags in ComfyUI's order; argparse adds -h/--help):

- 0.3.64: Comfy-Org/ComfyUI a125cd84 (the 0.3.64 release commit), comfy/cli_args.py.
- 0.38.1: Comfy-Org/ComfyUI comfy/cli_args.py 03294572, the version read for 0.38.1 (20ca544) in
  ../shared/comfyui-protocol.md section 8. Against 0.3.64 it drops --normalvram and
  --disable-ipex-optimize and adds 32 flags, --disable-assets among them.

Which table a release gets (`table_for`):
- a release with a table of its own: that table;
- older than the oldest table, or of unknown version: the oldest (0.3.64);
- newer than the newest: the newest (0.38.1), so flags added since are refused;
- between two tables: the flags both know, so no flag that one of them lacks can reach it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Release = tuple[int, ...]
ARGPARSE_FLAGS = frozenset({"-h", "--help"})


@dataclass(frozen=True)
class FlagTable:
    """The flags one ComfyUI release (or a range of releases) accepts, as argparse resolves them."""

    name: str  # "the flags of 0.3.64", "the flags both 0.3.64 and 0.38.1 know", "the flags its cli_args.py declares"
    flags: frozenset[str]  # every flag argparse may know: what COMFY_EXTRA_ARGS tokens resolve against
    release: str | None = None  # the release it was read from; None when derived from two
    certain: frozenset[str] | None = None  # the flags it always has (None: all of `flags`)
    allow_abbrev: bool = True  # argparse's allow_abbrev: a unique prefix of a long flag is that flag
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # flag -> its choices, where declared

    def has(self, flag: str) -> bool:
        """Whether the launcher may pass `flag` of its own accord: the release surely has it."""
        return flag in (self.flags if self.certain is None else self.certain)


def _table(release: str, flags: str) -> tuple[Release, FlagTable]:
    number = tuple(int(part) for part in release.split("."))
    return number, FlagTable(f"the flags of {release}", frozenset(flags.split()) | ARGPARSE_FLAGS, release)


FLAGS_0_3_64 = """
    --listen --port --tls-keyfile --tls-certfile --enable-cors-header --max-upload-size --base-directory
    --extra-model-paths-config --output-directory --temp-directory --input-directory --auto-launch
    --disable-auto-launch --cuda-device --default-device --cuda-malloc --disable-cuda-malloc
    --force-fp32 --force-fp16 --fp32-unet --fp64-unet --bf16-unet --fp16-unet --fp8_e4m3fn-unet
    --fp8_e5m2-unet --fp8_e8m0fnu-unet --fp16-vae --fp32-vae --bf16-vae --cpu-vae --fp8_e4m3fn-text-enc
    --fp8_e5m2-text-enc --fp16-text-enc --fp32-text-enc --bf16-text-enc --force-channels-last --directml
    --oneapi-device-selector --disable-ipex-optimize --supports-fp8-compute --preview-method
    --preview-size --cache-classic --cache-lru --cache-none --use-split-cross-attention
    --use-quad-cross-attention --use-pytorch-cross-attention --use-sage-attention --use-flash-attention
    --disable-xformers --force-upcast-attention --dont-upcast-attention --gpu-only --highvram
    --normalvram --lowvram --novram --cpu --reserve-vram --async-offload --force-non-blocking
    --default-hashing-function --disable-smart-memory --deterministic --fast --mmap-torch-files
    --disable-mmap --dont-print-server --quick-test-for-ci --windows-standalone-build --disable-metadata
    --disable-all-custom-nodes --whitelist-custom-nodes --disable-api-nodes --multi-user --verbose
    --log-stdout --front-end-version --front-end-root --user-directory --enable-compress-response-body
    --comfy-api-base --database-url
"""

FLAGS_0_38_1 = """
    --listen --port --tls-keyfile --tls-certfile --enable-cors-header --max-upload-size --base-directory
    --extra-model-paths-config --output-directory --date-based-output --date-output-format
    --temp-directory --input-directory --auto-launch --disable-auto-launch --cuda-device
    --default-device --cuda-malloc --disable-cuda-malloc --force-fp32 --force-fp16 --fp32-unet
    --fp64-unet --bf16-unet --fp16-unet --fp8_e4m3fn-unet --fp8_e5m2-unet --fp8_e8m0fnu-unet --fp16-vae
    --fp32-vae --bf16-vae --cpu-vae --fp8_e4m3fn-text-enc --fp8_e5m2-text-enc --fp16-text-enc
    --fp32-text-enc --bf16-text-enc --fp16-intermediates --force-channels-last --directml
    --oneapi-device-selector --supports-fp8-compute --enable-triton-backend --disable-triton-backend
    --preview-method --preview-size --cache-ram --cache-classic --cache-lru --cache-none --high-ram
    --use-split-cross-attention --use-quad-cross-attention --use-pytorch-cross-attention
    --use-sage-attention --use-flash-attention --use-ck-attention --disable-xformers
    --force-upcast-attention --dont-upcast-attention --enable-manager --disable-manager-ui
    --enable-manager-legacy-ui --gpu-only --highvram --lowvram --novram --cpu --reserve-vram
    --vram-headroom --disable-nvml-pressure --async-offload --disable-async-offload
    --disable-dynamic-vram --enable-dynamic-vram --fast-disk --disable-fast-disk --disable-cuda-graphs
    --disable-comfy-compiler --assert-graph-breaks --force-non-blocking --default-hashing-function
    --disable-smart-memory --deterministic --fast --debug-hang --disable-pinned-memory
    --mmap-torch-files --disable-mmap --dont-print-server --quick-test-for-ci --windows-standalone-build
    --disable-metadata --disable-all-custom-nodes --whitelist-custom-nodes --disabled-nodes-config
    --disable-partner-nodes --offline --disable-api-nodes --multi-user --verbose --log-stdout
    --front-end-version --front-end-root --user-directory --models-directory
    --enable-compress-response-body --comfy-api-base --database-url --disable-assets --enable-assets
    --enable-asset-hashing --feature-flag --list-feature-flags
"""

TABLES = dict((_table("0.3.64", FLAGS_0_3_64), _table("0.38.1", FLAGS_0_38_1)))


def table_for(release: Release | None) -> FlagTable:
    """The flag table for an installed release (None: unknown version); see the module docstring."""
    known = sorted(TABLES)
    if release is None or release <= known[0]:
        return TABLES[known[0]]
    if release >= known[-1]:
        return TABLES[known[-1]]
    if release in TABLES:
        return TABLES[release]
    older = TABLES[max(r for r in known if r < release)]
    newer = TABLES[min(r for r in known if r > release)]
    return FlagTable(f"the flags both {older.release} and {newer.release} know", older.flags & newer.flags)
