"""comfy/cli_args.py files written for the tests, in ComfyUI's style, and argparse's own reading of them.

Each release's file is small: the flags the worker passes or refuses, the ones a release added,
removed or renamed (read from ComfyUI's history: 0.3.64's --normalvram and
--disable-ipex-optimize went by 0.38.1, which added --disable-assets, --cache-ram, --high-ram,
--offline and --list-feature-flags, the last making `--lis` ambiguous), in the forms ComfyUI
writes them. `argparse_parser` runs a file as ComfyUI's main.py would import it, with a stub
comfy.options, and returns the parser argparse built: the reference the reader is checked against.
"""

from __future__ import annotations

import contextlib
import sys
import types
from argparse import ArgumentParser
from pathlib import Path

HEAD = """import argparse
import enum
import os
import comfy.options


class EnumAction(argparse.Action):
    def __init__(self, **kwargs):
        enum_type = kwargs.pop("type", None)
        kwargs.setdefault("choices", tuple(e.value for e in enum_type))
        super().__init__(**kwargs)


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"


parser = argparse.ArgumentParser()

parser.add_argument("--listen", type=str, default="127.0.0.1", metavar="IP", nargs="?", const="0.0.0.0,::")
parser.add_argument("--port", type=int, default=8188)
parser.add_argument("--tls-keyfile", type=str)
parser.add_argument("--base-directory", type=str, default=None)
parser.add_argument("--output-directory", type=str, default=None)
parser.add_argument("--temp-directory", type=str, default=None)
parser.add_argument("--input-directory", type=str, default=None)
parser.add_argument("--auto-launch", action="store_true")
"""

DISABLE_AUTO_LAUNCH = 'parser.add_argument("--disable-auto-launch", action="store_true")\n'
USER_DIRECTORY = 'parser.add_argument("--user-directory", type=str, default=None)\n'
TAIL = """
if comfy.options.args_parsing:
    args = parser.parse_args()
else:
    args = parser.parse_args([])
"""

RELEASE_0_3_64 = (
    HEAD
    + DISABLE_AUTO_LAUNCH
    + USER_DIRECTORY
    + """
vram_group = parser.add_mutually_exclusive_group()
vram_group.add_argument("--highvram", action="store_true")
vram_group.add_argument("--normalvram", action="store_true")
vram_group.add_argument("--cpu", action="store_true")
parser.add_argument("--disable-ipex-optimize", action="store_true")
parser.add_argument("--preview-method", type=LatentPreviewMethod, default=LatentPreviewMethod.NoPreviews,
                    action=EnumAction)
cache_group = parser.add_mutually_exclusive_group()
cache_group.add_argument("--cache-classic", action="store_true")
cache_group.add_argument("--cache-lru", type=int, default=0)
cache_group.add_argument("--cache-none", action="store_true")
parser.add_argument("--verbose", default='INFO', const='DEBUG', nargs="?",
                    choices=['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'])
parser.add_argument("--database-url", type=str, default=f"sqlite:///{os.path.abspath('user/comfyui.db')}")
"""
    + TAIL
)

_0_38 = """
vram_group = parser.add_mutually_exclusive_group()
vram_group.add_argument("--highvram", action="store_true")
vram_group.add_argument("--cpu", action="store_true")
parser.add_argument("--preview-method", type=LatentPreviewMethod, default=LatentPreviewMethod.NoPreviews,
                    action=EnumAction)
cache_group = parser.add_mutually_exclusive_group()
cache_group.add_argument("--cache-ram", nargs='*', type=float, default=[], metavar="GB")
cache_group.add_argument("--cache-classic", action="store_true")
cache_group.add_argument("--cache-lru", type=int, default=0)
cache_group.add_argument("--cache-none", action="store_true")
cache_group.add_argument("--high-ram", action="store_true")
LOG_LEVELS = ('DEBUG', 'DETAIL', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')


class VerboseAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


parser.add_argument("--verbose", action=VerboseAction, nargs='*', default=[], metavar='LEVEL FILE')
parser.add_argument("--offline", action="store_true")
parser.add_argument("--database-url", type=str, default=None)
parser.add_argument("--disable-assets", action="store_true")
parser.add_argument("--enable-assets", action="store_true")
parser.add_argument("--list-feature-flags", action="store_true")
"""

RELEASE_0_38_1 = HEAD + DISABLE_AUTO_LAUNCH + USER_DIRECTORY + _0_38 + TAIL

# 0.46.0 and 0.47.1: the same flags as far as ComfyUI's stored sources show (no flag added or
# removed after 0.38.1 can be read there), written with the forms a later file may use: the
# parse under a condition, path-flag redaction after it (which must not count as flags).
RELEASE_0_46_0 = RELEASE_0_38_1.replace(
    'parser.add_argument("--user-directory", type=str, default=None)\n',
    'parser.add_argument(\n    "--user-directory",\n    type=str,\n    default=None,\n)\n',
)
RELEASE_0_47_1 = (
    RELEASE_0_46_0
    + """
SENSITIVE_ARGV_FLAGS = {"--tls-keyfile", "--base-directory", "--output-directory", "--user-directory"}


def redact_sensitive_argv(argv):
    return ["*" if previous in SENSITIVE_ARGV_FLAGS else token for previous, token in zip([""] + argv, argv)]
"""
)

RELEASES = {"0.3.64": RELEASE_0_3_64, "0.38.1": RELEASE_0_38_1, "0.46.0": RELEASE_0_46_0, "0.47.1": RELEASE_0_47_1}

# A release nobody has seen: it dropped --disable-auto-launch and renamed --disable-assets to
# --assets {on,off}, and added --gpu-budget.
RELEASE_9_0_0 = (
    HEAD
    + USER_DIRECTORY
    + """
parser.add_argument("--assets", choices=["on", "off"], default="on")
parser.add_argument("--gpu-budget", type=float, default=None, metavar="GB")
parser.add_argument("--verbose", nargs="?", const="DEBUG", default="INFO", choices=["DEBUG", "INFO", "WARNING",
                    "ERROR"])
"""
    + TAIL
)

# Odd but legal argparse: every form the reader follows, and one it must know it cannot tell.
ODD_FORMS = """import argparse
import sys
import comfy.options

LOGS = ["quiet", "loud"]
PREFIX = "--odd"
base = argparse.ArgumentParser(add_help=False)
base.add_argument("--from-parent", action="store_true")
parser = argparse.ArgumentParser(parents=[base], prefix_chars="-+")
add = parser.add_argument
add("--listen", nargs="?", const="0.0.0.0")
add("-p", "--port", "--port-number", type=int, dest="port")
parser.add_mutually_exclusive_group().add_argument("--chained", action="store_const", const=1)
outer = parser.add_argument_group("outer")
inner = outer.add_mutually_exclusive_group(required=False)
inner.add_argument("--inner-a", action="count")
inner.add_argument("--inner-b", action="append_const", const=2)
for name in ["--loop-a", "--loop-b"]:
    parser.add_argument(name, action="store_true")
for flag, values in (("--pair-a", 2), ("--pair-b", "+")):
    parser.add_argument(flag, nargs=values)
names = ("--star-a", "--star-b")
parser.add_argument(*names, action="append")
parser.add_argument(f"{PREFIX}-fstring", choices=LOGS)
parser.add_argument("--" + "joined", action="store_const", const=3)
parser.add_argument("--toggle", action=argparse.BooleanOptionalAction)
parser.add_argument("++plus", action="store_true")
parser.add_argument("positional_thing", nargs="?")


def folders(target, *flags):
    for flag in flags:
        target.add_argument(flag, type=str)


folders(parser, "--input-directory", "--output-directory", "--temp-directory", "--user-directory")
if sys.platform == "win32":
    parser.add_argument("--windows-only", action="store_true")
try:
    parser.add_argument("--in-try", action="store_true")
except argparse.ArgumentError:
    parser.add_argument("--in-handler", action="store_true")
args = parser.parse_args() if comfy.options.args_parsing else parser.parse_args([])
"""


def write_install(root: Path, version: str, cli_args: str) -> Path:
    """A ComfyUI install with its version and its comfy/cli_args.py (nothing else the launcher reads here)."""
    (root / "comfy").mkdir(parents=True, exist_ok=True)
    (root / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    (root / "comfy" / "cli_args.py").write_text(cli_args)
    return root


def argparse_parser(path: Path) -> ArgumentParser:
    """Run the file as ComfyUI's main.py imports it (comfy.options stubbed, parsing off): argparse's parser."""
    options = types.ModuleType("comfy.options")
    options.args_parsing = False
    package = types.ModuleType("comfy")
    package.options = options
    saved = {name: sys.modules.get(name) for name in ("comfy", "comfy.options")}
    sys.modules.update({"comfy": package, "comfy.options": options})
    try:
        namespace: dict = {"__file__": str(path), "__name__": "comfy.cli_args"}
        exec(compile(path.read_text(), str(path), "exec"), namespace)  # the tests' own file, never ComfyUI's
        return namespace["parser"]
    finally:
        for name, module in saved.items():
            with contextlib.suppress(KeyError):
                del sys.modules[name]
            if module is not None:
                sys.modules[name] = module
