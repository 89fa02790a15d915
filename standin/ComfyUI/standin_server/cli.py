"""ComfyUI's command line, flag for flag, for the release played (comfy/cli_args.py).

The flag set of 0.3.64 (commit a125cd84) or of 0.38.1 (cli_args.py 03294572), in ComfyUI's
order and with its argparse defaults (allow_abbrev included, so `--lis` means `--listen`).
A flag the release does not have ends the process with argparse's usage error and exit 2,
as ComfyUI does. Most flags are accepted and change nothing here (there is no GPU, no
model); the README lists the ones that act.
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import os
import sys
from typing import Any

from .version import Release

LOG_LEVELS_0_3 = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS_0_38 = ("DEBUG", "DETAIL", "INFO", "WARNING", "ERROR", "CRITICAL")
DETAIL = 15  # 0.38.1's extra level, between DEBUG and INFO
# cli_args.py's database_default_path: <ComfyUI>/user/comfyui.db, beside this package as it is beside comfy/.
LEGACY_DATABASE_PATH = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "user", "comfyui.db"))


# 0.38.1's registry of --feature-flag keys (comfy_api/feature_flags.py; --list-feature-flags
# prints it). A registered bool is coerced from true/false; any other key stays a string.
CLI_FEATURE_FLAG_REGISTRY: dict[str, dict[str, Any]] = {
    "show_signin_button": {
        "type": "bool",
        "default": False,
        "description": "Show the sign-in button in the frontend even when not signed in",
    },
    "enable_telemetry": {
        "type": "bool",
        "default": False,
        "description": "Signal the frontend that telemetry collection is enabled",
    },
    "partner_run_gate_enabled": {
        "type": "bool",
        "default": True,
        "description": "Gate the local Run button behind sign-in when the graph contains partner nodes",
    },
}


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class PerformanceFeature(enum.Enum):
    Fp16Accumulation = "fp16_accumulation"
    Fp8MatrixMultiplication = "fp8_matrix_mult"
    CublasOps = "cublas_ops"
    AutoTune = "autotune"


class EnumAction(argparse.Action):
    """ComfyUI's EnumAction: the choices are the enum's values; the namespace gets the member."""

    def __init__(self, **kwargs: Any) -> None:
        enum_type = kwargs.pop("type")
        choices = tuple(e.value for e in enum_type)
        kwargs.setdefault("choices", choices)
        kwargs.setdefault("metavar", f"[{','.join(choices)}]")
        super().__init__(**kwargs)
        self._enum = enum_type

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, self._enum(values))


class VerboseAction(argparse.Action):
    """0.38.1's --verbose: no value, a console LEVEL, or LEVEL FILE; may be repeated."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        if len(values) == 0:
            output = ("DEBUG", None)
        elif len(values) == 1 and values[0] in LOG_LEVELS_0_38:
            output = (values[0], None)
        elif len(values) == 2 and values[0] in LOG_LEVELS_0_38:
            output = tuple(values)
        else:
            parser.error(f"{option_string} expects no values, a console LEVEL, or LEVEL FILE")
        setattr(namespace, self.dest, [*getattr(namespace, self.dest, []), output])


def is_valid_directory(path: str) -> str:
    """ComfyUI's check for --user-directory (and 0.38.1's --models-directory, --front-end-root)."""
    if not os.path.exists(path):
        raise argparse.ArgumentTypeError(f"The path '{path}' does not exist.")
    if not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"'{path}' is not a directory.")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"You do not have read permissions for '{path}'.")
    return path


def _flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """store_true flags that the stand-in accepts and ignores."""
    for name in names:
        parser.add_argument(name, action="store_true")


def _exclusive(parser: argparse.ArgumentParser, *names: str) -> None:
    group = parser.add_mutually_exclusive_group()
    for name in names:
        group.add_argument(name, action="store_true")


def build_parser(release: Release) -> argparse.ArgumentParser:
    new = release.flag_set == "0.38"
    p = argparse.ArgumentParser()
    add = p.add_argument
    add("--listen", type=str, default="127.0.0.1", metavar="IP", nargs="?", const="0.0.0.0,::")
    add("--port", type=int, default=8188)
    add("--tls-keyfile", type=str)
    add("--tls-certfile", type=str)
    add("--enable-cors-header", type=str, default=None, metavar="ORIGIN", nargs="?", const="*")
    add("--max-upload-size", type=float, default=100)
    add("--base-directory", type=str, default=None)
    add("--extra-model-paths-config", type=str, default=None, metavar="PATH", nargs="+", action="append")
    add("--output-directory", type=str, default=None)
    if new:
        add("--date-based-output", action="store_true")
        add("--date-output-format", type=str, default="%Y-%m-%d")
    add("--temp-directory", type=str, default=None)
    add("--input-directory", type=str, default=None)
    _flags(p, "--auto-launch", "--disable-auto-launch")
    add("--cuda-device", type=str if new else int, default=None, metavar="DEVICE_ID")
    add("--default-device", type=int, default=None, metavar="DEFAULT_DEVICE_ID")
    _exclusive(p, "--cuda-malloc", "--disable-cuda-malloc")
    _exclusive(p, "--force-fp32", "--force-fp16")
    unet = ["--fp32-unet", "--fp64-unet", "--bf16-unet", "--fp16-unet"]
    _exclusive(p, *unet, "--fp8_e4m3fn-unet", "--fp8_e5m2-unet", "--fp8_e8m0fnu-unet")
    _exclusive(p, "--fp16-vae", "--fp32-vae", "--bf16-vae")
    _flags(p, "--cpu-vae")
    text_encoder = ["--fp8_e4m3fn-text-enc", "--fp8_e5m2-text-enc", "--fp16-text-enc", "--fp32-text-enc"]
    _exclusive(p, *text_encoder, "--bf16-text-enc")
    if new:
        _flags(p, "--fp16-intermediates")
    _flags(p, "--force-channels-last")
    add("--directml", type=int, nargs="?", metavar="DIRECTML_DEVICE", const=-1)
    add("--oneapi-device-selector", type=str, default=None, metavar="SELECTOR_STRING")
    if not new:
        _flags(p, "--disable-ipex-optimize")
    _flags(p, "--supports-fp8-compute")
    if new:
        _flags(p, "--enable-triton-backend", "--disable-triton-backend")
    add("--preview-method", type=LatentPreviewMethod, default=LatentPreviewMethod.NoPreviews, action=EnumAction)
    add("--preview-size", type=int, default=512)
    cache = p.add_mutually_exclusive_group()
    if new:
        cache.add_argument("--cache-ram", nargs="*", type=float, default=[], metavar="GB")
    cache.add_argument("--cache-classic", action="store_true")
    cache.add_argument("--cache-lru", type=int, default=0)
    cache.add_argument("--cache-none", action="store_true")
    if new:
        cache.add_argument("--high-ram", action="store_true")
    attention = ["--use-split-cross-attention", "--use-quad-cross-attention", "--use-pytorch-cross-attention"]
    attention += ["--use-sage-attention", "--use-flash-attention"] + (["--use-ck-attention"] if new else [])
    _exclusive(p, *attention)
    _flags(p, "--disable-xformers")
    _exclusive(p, "--force-upcast-attention", "--dont-upcast-attention")
    if new:
        _flags(p, "--enable-manager")
        _exclusive(p, "--disable-manager-ui", "--enable-manager-legacy-ui")
    vram = ["--gpu-only", "--highvram"] + ([] if new else ["--normalvram"]) + ["--lowvram", "--novram", "--cpu"]
    _exclusive(p, *vram)
    add("--reserve-vram", type=float, default=None)
    if new:
        add("--vram-headroom", type=float, default=0)
        _flags(p, "--disable-nvml-pressure")
        add("--async-offload", nargs="?", const=2, type=int, default=None, metavar="NUM_STREAMS")
        _flags(p, "--disable-async-offload", "--disable-dynamic-vram", "--enable-dynamic-vram", "--fast-disk")
        _flags(p, "--disable-fast-disk", "--disable-cuda-graphs", "--disable-comfy-compiler", "--assert-graph-breaks")
    else:
        _flags(p, "--async-offload")
    _flags(p, "--force-non-blocking")
    add("--default-hashing-function", type=str, choices=["md5", "sha1", "sha256", "sha512"], default="sha256")
    _flags(p, "--disable-smart-memory", "--deterministic")
    add("--fast", nargs="*", type=PerformanceFeature)
    if new:
        _flags(p, "--debug-hang", "--disable-pinned-memory")
    _flags(p, "--mmap-torch-files", "--disable-mmap", "--dont-print-server", "--quick-test-for-ci")
    _flags(p, "--windows-standalone-build", "--disable-metadata", "--disable-all-custom-nodes")
    add("--whitelist-custom-nodes", type=str, nargs="+", default=[])
    if new:
        add("--disabled-nodes-config", type=str, default=None, metavar="PATH")
        _flags(p, "--disable-partner-nodes", "--offline")
    _flags(p, "--disable-api-nodes", "--multi-user")
    if new:
        add("--verbose", action=VerboseAction, nargs="*", default=[], metavar="LEVEL FILE")
    else:
        add("--verbose", default="INFO", const="DEBUG", nargs="?", choices=LOG_LEVELS_0_3)
    _flags(p, "--log-stdout")
    add("--front-end-version", type=str, default="comfyanonymous/ComfyUI@latest")
    add("--front-end-root", type=is_valid_directory, default=None)
    add("--user-directory", type=is_valid_directory, default=None)
    if new:
        add("--models-directory", type=is_valid_directory, default=None)
    _flags(p, "--enable-compress-response-body")
    add("--comfy-api-base", type=str, default="https://api.comfy.org")
    if new:
        add("--database-url", type=str, default=None)
        _flags(p, "--disable-assets", "--enable-assets", "--enable-asset-hashing")
        add("--feature-flag", type=str, action="append", default=[], metavar="KEY[=VALUE]")
        _flags(p, "--list-feature-flags")
    else:
        add("--database-url", type=str, default=f"sqlite:///{LEGACY_DATABASE_PATH}")
    return p


def _settle(parser: argparse.ArgumentParser, args: argparse.Namespace, release: Release) -> None:
    """The fix-ups cli_args.py applies after parsing; 0.3.64's namespace also gets the 0.38.1-only
    names the rest of the stand-in reads (no models folder flag, no asset system)."""
    if release.flag_set == "0.38":
        if args.cache_ram is not None and len(args.cache_ram) > 2:
            parser.error("--cache-ram accepts at most two values: active GB and inactive GB")
        if args.high_ram:
            args.cache_classic = True
        if args.disable_api_nodes:
            args.offline = True
        if args.offline:
            args.disable_partner_nodes = True
    else:
        args.models_directory = None
        args.disable_assets = True
        args.enable_asset_hashing = False
        args.feature_flag = []
    if args.fast is None:
        args.fast = set()
    elif args.fast == []:
        args.fast = set(PerformanceFeature)
    else:
        args.fast = set(args.fast)


def parse(argv: list[str], release: Release) -> argparse.Namespace:
    """Parse argv (without the program name) as the release's main.py does: bad flags exit 2,
    0.38.1's --list-feature-flags prints the registry and exits 0."""
    parser = build_parser(release)
    args = parser.parse_args(argv)
    _settle(parser, args, release)
    if getattr(args, "list_feature_flags", False):
        print(json.dumps(CLI_FEATURE_FLAG_REGISTRY, indent=2))
        sys.exit(0)
    return args


def file_log_outputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """0.38.1's `--verbose LEVEL FILE` outputs (none on 0.3.64)."""
    if isinstance(args.verbose, str):
        return []
    return [(level, path) for level, path in args.verbose if path is not None]


def level_number(name: str) -> int:
    return DETAIL if name == "DETAIL" else logging.getLevelName(name)


def console_level(args: argparse.Namespace) -> int:
    """The console log level: 0.3.64's --verbose LEVEL, or the lowest console level of 0.38.1's."""
    if isinstance(args.verbose, str):
        return level_number(args.verbose)
    console = [level for level, path in args.verbose if path is None]
    return level_number(min(console, key=LOG_LEVELS_0_38.index, default="INFO"))
