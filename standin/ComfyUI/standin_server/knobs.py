"""Environment knobs that make the stand-in misbehave on purpose, for tests (see README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    return float(raw)


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Knobs:
    boot_delay_s: float = 0.0
    never_ready: bool = False
    crash_on_start: str | None = None
    hang_after_s: float | None = None
    exec_delay_s: float = 0.0
    history_500_once: bool = False
    ws_silent_after_s: float | None = None

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
            ws_silent_after_s=_float(env, "STANDIN_WS_SILENT_AFTER_S", None),
        )
