"""Environment knobs that make the stand-in misbehave on purpose, for tests (see README).

Read once at start-up. A knob that cannot be read is a KnobError: the stand-in says which
and exits 2 before serving, as it does for an unknown STANDIN_COMFYUI_VERSION.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class KnobError(ValueError):
    pass


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise KnobError(f"{name}={raw!r} is not a number") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _failed_packs(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    """`Pack=error line[;Pack2=error line]` -> ((pack, error line), ...)."""
    packs = []
    for entry in env.get(name, "").split(";"):
        if not entry.strip():
            continue
        pack, sep, error = entry.partition("=")
        if not sep or not pack.strip() or not error.strip():
            raise KnobError(f"{name}: {entry!r} is not Pack=error line")
        packs.append((pack.strip(), error.strip()))
    return tuple(packs)


@dataclass(frozen=True)
class Knobs:
    boot_delay_s: float = 0.0
    never_ready: bool = False
    crash_on_start: str | None = None
    hang_after_s: float | None = None
    exec_delay_s: float = 0.0
    history_500_once: bool = False
    history_500: bool = False
    ws_silent_after_s: float | None = None
    prompt_delay_s: float = 0.0
    prompt_garbage: bool = False
    failed_custom_nodes: tuple[tuple[str, str], ...] = ()
    cache_drops: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Knobs:
        env = os.environ if env is None else env
        return cls(
            boot_delay_s=_float(env, "STANDIN_BOOT_DELAY_S", 0.0) or 0.0,
            never_ready=_flag(env, "STANDIN_NEVER_READY"),
            crash_on_start=env.get("STANDIN_CRASH_ON_START") or None,
            hang_after_s=_float(env, "STANDIN_HANG_AFTER_S", None),
            exec_delay_s=_float(env, "STANDIN_EXEC_DELAY_S", 0.0) or 0.0,
            history_500_once=_flag(env, "STANDIN_HISTORY_500_ONCE"),
            history_500=_flag(env, "STANDIN_HISTORY_500"),
            ws_silent_after_s=_float(env, "STANDIN_WS_SILENT_AFTER_S", None),
            prompt_delay_s=_float(env, "STANDIN_PROMPT_DELAY_S", 0.0) or 0.0,
            prompt_garbage=_flag(env, "STANDIN_PROMPT_GARBAGE"),
            failed_custom_nodes=_failed_packs(env, "STANDIN_FAILED_CUSTOM_NODES"),
            cache_drops=_flag(env, "STANDIN_CACHE_DROPS"),
        )
