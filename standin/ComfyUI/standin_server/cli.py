"""ComfyUI's command line, the part the stand-in understands.

Flags the stand-in does not know are ignored with a warning (real ComfyUI would refuse them),
so a worker can pass its usual ComfyUI flags through unchanged.
"""

from __future__ import annotations

import argparse

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="ComfyUI stand-in")
    parser.add_argument("--listen", type=str, default="127.0.0.1", metavar="IP", nargs="?", const="0.0.0.0,::")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--disable-auto-launch", action="store_true")
    parser.add_argument("--auto-launch", action="store_true")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--verbose", default="INFO", const="DEBUG", nargs="?", choices=LOG_LEVELS)
    parser.add_argument("--log-stdout", action="store_true")
    parser.add_argument("--dont-print-server", action="store_true")
    parser.add_argument("--base-directory", type=str, default=None)
    parser.add_argument("--input-directory", type=str, default=None)
    parser.add_argument("--output-directory", type=str, default=None)
    parser.add_argument("--temp-directory", type=str, default=None)
    parser.add_argument("--user-directory", type=str, default=None)
    parser.add_argument("--extra-model-paths-config", type=str, default=None, nargs="+", action="append")
    parser.add_argument("--max-upload-size", type=float, default=100)
    parser.add_argument("--disable-metadata", action="store_true")
    parser.add_argument("--cache-none", action="store_true")
    parser.add_argument("--cache-classic", action="store_true")
    parser.add_argument("--cache-lru", type=int, default=0)
    parser.add_argument("--enable-cors-header", type=str, default=None, metavar="ORIGIN", nargs="?", const="*")
    parser.add_argument("--preview-method", type=str, default="none")
    parser.add_argument("--disable-all-custom-nodes", action="store_true")
    parser.add_argument("--multi-user", action="store_true")
    return parser


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse argv (without the program name); returns the namespace and the ignored flags."""
    return build_parser().parse_known_args(argv)
