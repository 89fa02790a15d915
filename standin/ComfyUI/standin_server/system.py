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


# 0.47.1's cli_args.SENSITIVE_ARGV_FLAGS / _MULTI_FLAGS: flags whose values are local paths.
SENSITIVE_ARGV_FLAGS = frozenset(
    {
        "--tls-keyfile",
        "--tls-certfile",
        "--base-directory",
        "--output-directory",
        "--temp-directory",
        "--input-directory",
        "--front-end-root",
        "--user-directory",
        "--models-directory",
        "--database-url",
    }
)
SENSITIVE_ARGV_MULTI_FLAGS = frozenset({"--extra-model-paths-config"})


def redact_argv(argv: list[str]) -> list[str]:
    """cli_args.redact_sensitive_argv: the values of path flags become "*", flag names stay.

    `--flag=value` becomes `--flag=*`; a separate value (one, or every value up to the next
    "-" token for the multi-value flag, folded into one "*") is replaced; nothing else changes.
    """
    redacted: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token.partition("=")[0]
        multi = name in SENSITIVE_ARGV_MULTI_FLAGS
        if name not in SENSITIVE_ARGV_FLAGS and not multi:
            redacted.append(token)
        elif "=" in token:
            redacted.append(f"{name}=*")
        else:
            redacted.append(token)
            values = 0
            while i + 1 < len(argv) and not argv[i + 1].startswith("-") and (multi or values == 0):
                values += 1
                i += 1
            if values:
                redacted.append("*")
        i += 1
    return redacted
