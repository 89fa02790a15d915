"""The sidecar's settings: read from the environment once, validated, then passed around.

Nothing else in the sidecar reads the environment, so every setting is visible here with its
default, and a bad value stops the sidecar at start with one line naming the variable.
(`probe` and `status` in status.py are a person's commands, not the sidecar: they find the
stack through its run dir and read only the shared settings of worker_common.settings.)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from worker_common import layout, settings
from worker_common.contract import COMFY_HOST
from worker_common.settings import ConfigError, env_float, env_int, env_str


@dataclass(frozen=True)
class PushSettings:
    """PUSHGATEWAY_URL and its companions: where, how often and as whom /metrics is pushed."""

    url: str
    interval_s: float
    timeout_s: float
    endpoint_id: str  # the grouping key: RUNPOD_ENDPOINT_ID ("none" off serverless) ...
    worker: str  # ... and the worker (RUNPOD_POD_ID, else the host name)
    username: str = ""
    password: str = field(default="", repr=False)
    bearer_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class SidecarConfig:
    host: str
    port: int
    comfy_port: int
    supervisor_socket: Path
    started_at: float
    ready_timeout_s: float
    probe_interval_s: float
    startup_probe_interval_s: float
    unready_after_failures: int
    probe_timeout_s: float
    warmup_workflow: Path | None
    warmup_timeout_s: float
    multiproc_dir: Path | None
    push: PushSettings | None  # None: PUSHGATEWAY_URL unset, no pushing
    run_dir: Path
    client_timeout_s: float = 10.0
    max_connections: int = 256
    port_setting: str = "SIDECAR_PORT"  # the variable `port` came from, for error messages

    @property
    def comfy_host(self) -> str:
        return COMFY_HOST

    @property
    def loop_stale_after_s(self) -> float:
        """How long the probe loop may go without a tick before /livez reports it dead.

        Five steady intervals, but never less than one interval plus three probe timeouts (a
        pass can wait on supervisord, /system_stats and /queue in turn), so a hung ComfyUI does
        not make the sidecar itself look dead.
        """
        return max(5 * self.probe_interval_s, self.probe_interval_s + 3 * self.probe_timeout_s)

    @property
    def local_url(self) -> str:
        """The sidecar's address as seen from inside the container (probe, status)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls) -> SidecarConfig:
        """Parse every setting; raises ConfigError naming the first bad variable."""
        started_at = settings.started_at() or time.time()
        warmup = env_str("WARMUP_WORKFLOW")
        warmup_path = Path(warmup) if warmup else None
        if warmup_path is not None and not warmup_path.is_file():
            raise ConfigError(f"WARMUP_WORKFLOW={warmup!r} is not a readable file")
        multiproc = env_str("PROMETHEUS_MULTIPROC_DIR")
        return cls(
            host=env_str("SIDECAR_HOST", "0.0.0.0"),
            port=settings.sidecar_port(),
            comfy_port=settings.comfy_port(),
            supervisor_socket=settings.supervisor_socket(),
            started_at=started_at,
            ready_timeout_s=settings.ready_timeout_s(),
            probe_interval_s=env_float("PROBE_INTERVAL_S", 1.0, minimum=0.01, maximum=60.0),
            startup_probe_interval_s=env_float("STARTUP_PROBE_INTERVAL_S", 0.05, minimum=0.005, maximum=10.0),
            unready_after_failures=env_int("UNREADY_AFTER_FAILURES", 3, minimum=1, maximum=1000),
            probe_timeout_s=env_float("PROBE_TIMEOUT_S", 2.0, minimum=0.05, maximum=60.0),
            warmup_workflow=warmup_path,
            warmup_timeout_s=env_float("WARMUP_TIMEOUT_S", 300.0, minimum=1.0),
            multiproc_dir=Path(multiproc) if multiproc else None,
            push=push_settings(),
            run_dir=settings.run_dir(),
            client_timeout_s=env_float("SIDECAR_CLIENT_TIMEOUT_S", 10.0, minimum=0.1, maximum=600.0),
            max_connections=env_int("SIDECAR_MAX_CONNECTIONS", 256, minimum=8, maximum=10000),
            port_setting="PORT_HEALTH" if env_str("PORT_HEALTH") else "SIDECAR_PORT",
        )


def push_settings() -> PushSettings | None:
    """The Pushgateway settings, or None when PUSHGATEWAY_URL is unset (no pushing)."""
    url = env_str("PUSHGATEWAY_URL")
    if not url:
        return None
    _check_pushgateway_url(url)
    username, password = env_str("PUSHGATEWAY_USERNAME"), env_str("PUSHGATEWAY_PASSWORD")
    token = env_str("PUSHGATEWAY_BEARER_TOKEN")
    if bool(username) != bool(password):
        raise ConfigError("PUSHGATEWAY_USERNAME and PUSHGATEWAY_PASSWORD must be set together (basic auth)")
    if token and username:
        raise ConfigError(
            "PUSHGATEWAY_BEARER_TOKEN and PUSHGATEWAY_USERNAME/PUSHGATEWAY_PASSWORD are both set: choose one"
        )
    return PushSettings(
        url=url.rstrip("/"),
        interval_s=env_float("PUSH_INTERVAL_S", 15.0, minimum=0.1, maximum=3600.0),
        timeout_s=env_float("PUSH_TIMEOUT_S", 2.0, minimum=0.1, maximum=60.0),
        endpoint_id=env_str("RUNPOD_ENDPOINT_ID", "none"),
        worker=layout.worker_id(),
        username=username,
        password=password,
        bearer_token=token,
    )


def _check_pushgateway_url(url: str) -> None:
    """An http(s) URL with a host and nothing that could hold a secret (the URL is logged)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:  # the value is not repeated: it holds a password
        raise ConfigError(
            "PUSHGATEWAY_URL has credentials in it (user:password@host); "
            "set PUSHGATEWAY_USERNAME and PUSHGATEWAY_PASSWORD instead"
        )
    if parts.query or parts.fragment:
        raise ConfigError("PUSHGATEWAY_URL may not have a query (?...) or fragment (#...): give the base URL")
    try:
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise ConfigError(f"PUSHGATEWAY_URL={url!r} has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"PUSHGATEWAY_URL={url!r} is not an http:// or https:// URL, e.g. https://pushgateway.example.com:9091"
        )


def environ_without_multiproc() -> None:
    """Drop PROMETHEUS_MULTIPROC_DIR from this process's environment.

    prometheus_client switches every metric object it creates to file-backed values when the
    variable is set. The sidecar only reads those files (the handler writes them); its own
    figures come from collectors on its own registry. Removing the variable after the config
    captured it guarantees no library in this process can add files with the sidecar's pid.
    """
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ.pop("prometheus_multiproc_dir", None)
