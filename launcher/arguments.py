"""ComfyUI's command line: the launcher's own flags, and COMFY_EXTRA_ARGS checked as argparse reads them.

argparse accepts any unambiguous prefix of a long flag (`--liste 127.0.0.2` is `--listen`) and
`--flag=value`, so a check on the literal text lets `--lis 0.0.0.0` expose ComfyUI. Each token
of COMFY_EXTRA_ARGS is resolved here the way argparse resolves it against the installed
release's flags (flags.FlagTable) and passed on under its full name, so ComfyUI reads exactly
what was checked. Refused: flags that resolve to the address, the port or a folder flag (the
worker sets those), flags that make ComfyUI exit at once, flags the release does not know (it
would stop with exit 2: a crash loop), and ambiguous prefixes (argparse refuses them too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from launcher.config import LauncherConfig
from launcher.flags import FlagTable
from launcher.version import ComfyVersion
from worker_common.contract import COMFY_HOST
from worker_common.layout import Layout
from worker_common.settings import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # --verbose levels every supported release takes
FOLDER_FLAGS = ("--input-directory", "--output-directory", "--temp-directory", "--user-directory", "--base-directory")
ADDRESS_FLAGS = ("--listen", "--port")
EXITING_FLAGS = ("-h", "--help", "--list-feature-flags", "--quick-test-for-ci")
TLS_FLAGS = ("--tls-keyfile", "--tls-certfile")
# argparse reads these as values, not flags, when no flag looks like a negative number.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


@dataclass(frozen=True)
class Refusal:
    flags: tuple[str, ...]
    reason: str


def refusals(layout: Layout) -> list[Refusal]:
    return [
        Refusal(ADDRESS_FLAGS, f"ComfyUI always listens on {COMFY_HOST} only; set COMFY_PORT to change its port"),
        Refusal(
            FOLDER_FLAGS,
            f"the worker gives ComfyUI folders of its own under WORKER_DATA_DIR ({layout.data_dir}); "
            "set WORKER_DATA_DIR to move them",
        ),
        Refusal(EXITING_FLAGS, "it makes ComfyUI exit instead of serving"),
        Refusal(TLS_FLAGS, f"the worker talks plain HTTP to ComfyUI on {COMFY_HOST}"),
    ]


class UnknownFlag(ConfigError):
    pass


class AmbiguousFlag(ConfigError):
    def __init__(self, token: str, candidates: list[str]) -> None:
        super().__init__(token)
        self.candidates = candidates


def resolve(token: str, flags: frozenset[str], abbreviations: bool = True) -> str | None:
    """The flag argparse reads `token` as, or None for a value; UnknownFlag or AmbiguousFlag otherwise.

    `abbreviations`: argparse's allow_abbrev (False: a long flag must be written in full)."""
    if not token.startswith("-") or _NEGATIVE_NUMBER.match(token):
        return None
    if token in flags:
        return token
    name = token.partition("=")[0]
    if name in flags:
        return name
    if not name.startswith("--") or name == "--" or not abbreviations:
        raise UnknownFlag(token)  # argparse's prefixes are for long flags; "--" ends the flags: no positionals
    candidates = sorted(flag for flag in flags if flag.startswith(name))
    if len(candidates) > 1:
        raise AmbiguousFlag(token, candidates)
    if not candidates:
        raise UnknownFlag(token)
    return candidates[0]


def checked_extra_args(tokens: list[str], table: FlagTable, version: ComfyVersion, layout: Layout) -> list[str]:
    """COMFY_EXTRA_ARGS with every flag under its full name; ConfigError for a flag that may not pass."""
    refused = {flag: refusal.reason for refusal in refusals(layout) for flag in refusal.flags}
    checked = []
    for token in tokens:
        flag = _resolve_or_explain(token, table, version)
        if flag is None:
            checked.append(token)
            continue
        name, equals, value = token.partition("=")
        shown = token if name == flag else f"{token} (ComfyUI reads it as {flag})"
        if flag in refused:
            raise ConfigError(f"COMFY_EXTRA_ARGS may not contain {shown}: {refused[flag]}.")
        checked.append(flag + equals + value)
    return checked


def release_checked(version: ComfyVersion, table: FlagTable) -> str:
    """ "ComfyUI 0.38.1", or "ComfyUI 0.39.0 (checked against the flags of 0.38.1)" when the table is another's."""
    if version.text is None:
        return f"ComfyUI of unknown version ({version.source}; checked against {table.name})"
    against = "" if version.text == table.release else f" (checked against {table.name})"
    return f"{version.describe()}{against}"


def _resolve_or_explain(token: str, table: FlagTable, version: ComfyVersion) -> str | None:
    release = release_checked(version, table)
    try:
        return resolve(token, table.flags, table.allow_abbrev)
    except AmbiguousFlag as error:
        raise ConfigError(
            f"COMFY_EXTRA_ARGS has {token}, which {release} could read as any of {', '.join(error.candidates)}; "
            "argparse refuses it: write the flag in full."
        ) from None
    except UnknownFlag:
        raise ConfigError(
            f"COMFY_EXTRA_ARGS has {token}, a flag {release} does not know: ComfyUI would stop at once with a "
            "usage error. Remove it, or fix its spelling."
        ) from None


def comfyui_args(layout: Layout, config: LauncherConfig, table: FlagTable, version: ComfyVersion) -> list[str]:
    """ComfyUI's command line after `python`: the worker's own flags, then COMFY_EXTRA_ARGS, checked."""
    args = ["main.py", "--listen", COMFY_HOST, "--port", str(config.comfy_port)]
    if table.has("--disable-auto-launch"):
        args.append("--disable-auto-launch")  # there is no browser to open
    args += layout.comfy_args()
    if table.has("--disable-assets") and not config.enable_assets:
        args.append("--disable-assets")  # a worker has no use for the asset database, and it scans the volume
    args += log_level_args(config.log_level, table, version)
    return args + checked_extra_args(list(config.extra_args), table, version, layout)


def log_level_args(given: str, table: FlagTable, version: ComfyVersion) -> list[str]:
    """`--verbose LEVEL` for COMFY_LOG_LEVEL (`given`), checked against the levels the release's --verbose takes."""
    level = given.upper()
    levels = table.choices.get("--verbose") or LOG_LEVELS
    if level and level not in levels:
        raise ConfigError(f"COMFY_LOG_LEVEL={given!r} is not one of {', '.join(levels)}")
    if level and not table.has("--verbose"):
        raise ConfigError(
            f"COMFY_LOG_LEVEL={level} needs ComfyUI's --verbose, which {release_checked(version, table)} does not "
            "have: unset COMFY_LOG_LEVEL"
        )
    return ["--verbose", level] if level else []
