"""ComfyUI's command line for the release played: parsed with its comfy/cli_args.py (release_files).

The flags are declared per release in releases/cli_args_<version>.py, in ComfyUI's layout, with
ComfyUI's argparse defaults (allow_abbrev included, so `--lis` means `--listen`). A flag the
release does not have ends the process with argparse's usage error and exit 2, as ComfyUI
does. This module holds what those files import (ComfyUI's Action classes and enums) and what
the stand-in reads from the result. Most flags change nothing here (there is no GPU, no model);
the README lists the ones that act.
"""

from __future__ import annotations

import argparse
import enum
import importlib.util
import json
import logging
import os
import sys
from typing import Any

from . import release_files
from .version import Release

LOG_LEVELS_0_38 = ("DEBUG", "DETAIL", "INFO", "WARNING", "ERROR", "CRITICAL")
DETAIL = 15  # 0.38.1's extra level, between DEBUG and INFO


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


# What the stand-in reads from a namespace that a release's cli_args.py may not set (0.3.64 has
# no models folder flag, no asset system, no RAM-pressure cache; a test's own file may lack more).
DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1",
    "port": 8188,
    "max_upload_size": 100,
    "base_directory": None,
    "extra_model_paths_config": None,
    "output_directory": None,
    "temp_directory": None,
    "input_directory": None,
    "user_directory": None,
    "models_directory": None,
    "cache_ram": None,
    "cache_classic": False,
    "cache_lru": 0,
    "cache_none": False,
    "high_ram": False,
    "fast": None,
    "dont_print_server": False,
    "quick_test_for_ci": False,
    "disable_metadata": False,
    "disable_all_custom_nodes": False,
    "whitelist_custom_nodes": [],
    "disable_api_nodes": False,
    "disable_partner_nodes": False,
    "offline": False,
    "verbose": "INFO",
    "database_url": None,
    "disable_assets": True,
    "enable_assets": False,
    "enable_asset_hashing": False,
    "feature_flag": [],
    "list_feature_flags": False,
}


def _settle(args: argparse.Namespace) -> None:
    """The stand-in's defaults for names the file does not declare, and --fast as a set (as cli_args.py)."""
    for name, value in DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    if args.fast is None:
        args.fast = set()
    elif args.fast == []:
        args.fast = set(PerformanceFeature)
    else:
        args.fast = set(args.fast)


def parse(release: Release) -> argparse.Namespace:
    """Parse sys.argv as ComfyUI's main.py does, by importing comfy.cli_args with parsing on: with the
    comfy/cli_args.py of the release played (release_files.to_parse_with). Bad flags exit 2,
    --list-feature-flags prints the registry and exits 0."""
    import comfy.options

    comfy.options.enable_args_parsing()
    path = release_files.to_parse_with(release.version)
    spec = importlib.util.spec_from_file_location("comfy.cli_args", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfy.cli_args"] = module
    spec.loader.exec_module(module)
    args = module.args
    _settle(args)
    if args.list_feature_flags:
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
