"""Typed, validated reading of environment variables.

Every setting of the worker is an environment variable with a default. These helpers
read one variable each and raise `ConfigError` with a message that names the variable,
the bad value and what is expected, so a misconfigured worker fails at start-up with a
line a person can act on.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from worker_common import contract
from worker_common.contract import ExitCode

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting has a value the worker cannot use."""


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use true or false")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number (default {default})") from None
    _check_range(name, number, minimum, maximum)
    return number


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number (default {default})") from None
    _check_range(name, number, minimum, maximum)
    return number


def env_path(name: str, default: str | Path) -> Path:
    return Path(env_str(name, str(default)))


def first_env(names: tuple[str, ...], default: str = "") -> str:
    """The first non-empty variable among `names` (new name first, legacy names after)."""
    for name in names:
        value = _raw(name)
        if value:
            return value
    return default


def _check_range(name: str, number: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name}={number} is above the maximum {maximum}")


def comfy_port() -> int:
    return env_int("COMFY_PORT", contract.DEFAULT_COMFY_PORT, minimum=1, maximum=65535)


def sidecar_port() -> int:
    """RunPod's PORT_HEALTH wins over SIDECAR_PORT, so RunPod's health checks find us."""
    if _raw("PORT_HEALTH"):
        return env_int("PORT_HEALTH", contract.DEFAULT_SIDECAR_PORT, minimum=1, maximum=65535)
    return env_int("SIDECAR_PORT", contract.DEFAULT_SIDECAR_PORT, minimum=1, maximum=65535)


def cannot_listen(host: str, port: int, setting: str, error: OSError) -> ConfigError:
    """The configuration error of a port that cannot be listened on (taken by another program, say)."""
    cause = error.strerror or str(error)
    return ConfigError(
        f"cannot listen on {host}:{port} ({setting}): {cause}; stop what uses port {port} or set {setting} "
        "to a free port"
    )


def run_dir() -> Path:
    default = Path(__file__).resolve().parent.parent / ".run"
    return env_path("WORKER_RUN_DIR", default)


def supervisor_socket() -> Path:
    return run_dir() / contract.SUPERVISOR_SOCKET_FILE


def started_at() -> float:
    """Container start (Unix seconds) as recorded by the entrypoint; the start-up window counts from it."""
    return env_float("WORKER_STARTED_AT", 0.0, minimum=0.0)


def ready_timeout_s() -> float:
    return env_float("COMFY_READY_TIMEOUT_S", contract.DEFAULT_READY_TIMEOUT_S, minimum=1.0)


def record_config_error(program: str, error: ConfigError) -> int:
    """Leave a program's configuration error where the watchdog finds it; returns the exit code.

    supervisord forgets why a program kept failing during start-up; with this file the
    watchdog makes the container exit 78 (configuration error) with this message.
    """
    with contextlib.suppress(OSError):
        config_error_file(program).write_text(f"{error}\n")
    return ExitCode.CONFIG


def config_error_file(program: str) -> Path:
    """Where a program's configuration error is left for the watchdog (see record_config_error)."""
    return run_dir() / contract.config_error_file_name(program)
