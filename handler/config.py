"""Every setting of the handler, read from the environment once at start-up and validated.

Nothing else in the package reads `os.environ` for settings. A bad value raises ConfigError
with one line naming the variable, and `python -m handler` exits with ExitCode.CONFIG (78).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from worker_common import contract, layout, settings
from worker_common.layout import Layout
from worker_common.settings import ConfigError, env_bool, env_float, env_int, env_str, first_env

MB = 1_000_000
# How many jobs a worker takes at once (docs/handler.md, "Jobs in flight together", has the figures
# behind the defaults): by default it follows what the worker measures (handler/pipeline.py), at
# most JOB_PIPELINE_MAX_DEPTH jobs and JOB_PIPELINE_MAX_WAIT_S of measured work waiting.
PIPELINE_AUTO = "auto"
DEFAULT_PIPELINE_MAX_DEPTH = 8
DEFAULT_PIPELINE_MAX_WAIT_S = 2.0
PIPELINE_DEPTH_LIMIT = 32
S3_UPLOAD_MODES = ("always", "oversize")
S3_ADDRESSING_STYLES = ("auto", "path", "virtual")
# worker-comfyui settings that have no meaning here: named once at start, then ignored.
IGNORED = {
    "COMFY_API_AVAILABLE_INTERVAL_MS": "readiness is pushed by the sidecar; there is no polling",
    "COMFY_API_AVAILABLE_MAX_RETRIES": "see COMFY_READY_TIMEOUT_S (start-up) and JOB_READY_WAIT_S (per job)",
}


@dataclass(frozen=True)
class S3Config:
    bucket: str
    endpoint_url: str | None
    region: str | None
    access_key_id: str | None = field(repr=False)
    secret_access_key: str | None = field(repr=False)
    prefix: str
    presign_expires_s: int
    upload_mode: str
    addressing_style: str
    max_attempts: int
    session_token: str | None = field(default=None, repr=False)  # a job's own destination (destination.py)


@dataclass(frozen=True)
class Config:
    comfy_port: int
    layout: Layout
    run_dir: Path  # WORKER_RUN_DIR: the sidecar's records and this stack's identity
    on_runpod: bool  # RUNPOD_WEBHOOK_GET_JOB set: RunPod hands out the jobs
    sidecar_port: int
    started_at: float
    ready_timeout_s: float
    job_ready_wait_s: float
    job_timeout_s: float
    interrupt_grace_s: float
    pipeline_depth: int | None  # JOB_PIPELINE_DEPTH when fixed; None: it follows what the worker measures
    pipeline_max_depth: int
    pipeline_max_wait_s: float
    ws_reconnect_attempts: int
    ws_reconnect_delay_s: float
    ws_receive_timeout_s: float
    ws_trace: bool
    comfy_org_api_key: str = field(repr=False)
    include_temp_outputs: bool
    response_size_limit_bytes: int
    cleanup_inputs: bool
    cleanup_outputs: bool
    cleanup_history: bool
    refresh_worker: bool
    progress_url_set: bool
    local_api_host: str
    local_api_port: int
    s3: S3Config | None
    budgets: InputBudgets  # input budgets and downloads: see the block at the end of this file
    download_policy: DownloadPolicy

    @property
    def ready_deadline(self) -> float:
        """Unix time by which ComfyUI must be ready, counted from the container's start."""
        return self.started_at + self.ready_timeout_s


def load() -> Config:
    """Parse every setting; raises ConfigError naming the first bad variable."""
    return Config(
        comfy_port=settings.comfy_port(),
        layout=layout.load(),
        run_dir=settings.run_dir(),
        on_runpod=bool(env_str("RUNPOD_WEBHOOK_GET_JOB")),
        sidecar_port=settings.sidecar_port(),
        started_at=settings.started_at() or time.time(),
        ready_timeout_s=settings.ready_timeout_s(),
        job_ready_wait_s=env_float("JOB_READY_WAIT_S", 30.0, minimum=0.0),
        job_timeout_s=env_float("JOB_TIMEOUT_S", 600.0, minimum=0.1),
        interrupt_grace_s=env_float("COMFY_INTERRUPT_GRACE_S", 5.0, minimum=0.0, maximum=300.0),
        pipeline_depth=fixed_pipeline_depth(),
        pipeline_max_depth=env_int(
            "JOB_PIPELINE_MAX_DEPTH", DEFAULT_PIPELINE_MAX_DEPTH, minimum=1, maximum=PIPELINE_DEPTH_LIMIT
        ),
        pipeline_max_wait_s=env_float(
            "JOB_PIPELINE_MAX_WAIT_S", DEFAULT_PIPELINE_MAX_WAIT_S, minimum=0.0, maximum=600.0
        ),
        ws_reconnect_attempts=env_int("WEBSOCKET_RECONNECT_ATTEMPTS", 5, minimum=0, maximum=100),
        ws_reconnect_delay_s=env_float("WEBSOCKET_RECONNECT_DELAY_S", 3.0, minimum=0.0, maximum=300.0),
        ws_receive_timeout_s=env_float("WEBSOCKET_RECEIVE_TIMEOUT_S", 15.0, minimum=0.1),
        ws_trace=env_bool("WEBSOCKET_TRACE"),
        comfy_org_api_key=env_str("COMFY_ORG_API_KEY"),
        include_temp_outputs=env_bool("INCLUDE_TEMP_OUTPUTS"),
        response_size_limit_bytes=env_int("RESPONSE_SIZE_LIMIT_BYTES", 20 * MB, minimum=1024),
        cleanup_inputs=env_bool("CLEANUP_INPUTS", True),
        cleanup_outputs=env_bool("CLEANUP_OUTPUTS", True),
        cleanup_history=env_bool("CLEANUP_HISTORY", True),
        refresh_worker=env_bool("REFRESH_WORKER"),
        progress_url_set=bool(env_str("RUNPOD_WEBHOOK_POST_OUTPUT")),
        local_api_host="0.0.0.0" if env_bool("SERVE_API_LOCALLY") else env_str("LOCAL_API_HOST", "127.0.0.1"),
        local_api_port=env_int("LOCAL_API_PORT", contract.DEFAULT_LOCAL_API_PORT, minimum=1, maximum=65535),
        s3=load_s3(),
        budgets=load_budgets(),
        download_policy=load_download_policy(),
    )


def fixed_pipeline_depth() -> int | None:
    """JOB_PIPELINE_DEPTH: a whole number fixes the depth; `auto` (the default) lets it follow the measures."""
    value = env_str("JOB_PIPELINE_DEPTH", "auto").strip().lower()
    if value == PIPELINE_AUTO:
        return None
    if value.isdigit() and 1 <= int(value) <= PIPELINE_DEPTH_LIMIT:
        return int(value)
    raise ConfigError(
        f"JOB_PIPELINE_DEPTH={value!r} is neither {PIPELINE_AUTO} nor a whole number "
        f"from 1 to {PIPELINE_DEPTH_LIMIT}; use {PIPELINE_AUTO} (the default) or a fixed depth such as 2"
    )


def ignored_settings() -> list[str]:
    """At most one line naming every worker-comfyui setting that is set but not used here."""
    reasons = [f"{name} is set but not used: {why}" for name, why in IGNORED.items() if env_str(name)]
    return ["; ".join(reasons)] if reasons else []


def load_s3() -> S3Config | None:
    """S3 settings, or None when no bucket is configured.

    S3_* wins; worker-comfyui's BUCKET_ENDPOINT_URL / BUCKET_ACCESS_KEY_ID /
    BUCKET_SECRET_ACCESS_KEY are understood too. BUCKET_ENDPOINT_URL names the bucket in its
    host (https://<bucket>.s3.<region>.amazonaws.com), as runpod's rp_upload expects.
    """
    endpoint = first_env(("S3_ENDPOINT_URL", "BUCKET_ENDPOINT_URL"))
    bucket = first_env(("S3_BUCKET_NAME", "BUCKET_NAME"))
    if not endpoint and not bucket:
        return None
    if endpoint and not bucket:
        bucket, endpoint = split_bucket_endpoint(endpoint)
    key_id = first_env(("S3_BUCKET_CREDS_ACCESS_KEY_ID", "BUCKET_ACCESS_KEY_ID")) or None
    secret = first_env(("S3_BUCKET_CREDS_SECRET_ACCESS_KEY", "BUCKET_SECRET_ACCESS_KEY")) or None
    if bool(key_id) != bool(secret):
        raise ConfigError(
            "S3_BUCKET_CREDS_ACCESS_KEY_ID and S3_BUCKET_CREDS_SECRET_ACCESS_KEY must be set together "
            "(or neither, to use the default AWS credential chain)"
        )
    return S3Config(
        bucket=bucket,
        endpoint_url=endpoint or None,
        region=first_env(("S3_REGION", "BUCKET_REGION")) or _region_from_endpoint(endpoint),
        access_key_id=key_id,
        secret_access_key=secret,
        prefix=env_str("S3_PREFIX").strip("/"),
        presign_expires_s=env_int("S3_PRESIGN_EXPIRES_S", 604800, minimum=1, maximum=604800),
        upload_mode=_choice("S3_UPLOAD_MODE", "always", S3_UPLOAD_MODES),
        addressing_style=_choice("S3_ADDRESSING_STYLE", _default_addressing(endpoint), S3_ADDRESSING_STYLES),
        max_attempts=env_int("S3_MAX_ATTEMPTS", 5, minimum=1, maximum=20),
    )


def split_bucket_endpoint(endpoint: str) -> tuple[str, str]:
    """(bucket, service endpoint) from a bucket-in-host URL such as https://b.s3.eu-west-1.amazonaws.com."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    first, _, rest = host.partition(".")
    if not rest.startswith("s3") and not rest.endswith("digitaloceanspaces.com"):
        raise ConfigError(
            f"cannot tell the bucket from the endpoint {endpoint!r}: set S3_BUCKET_NAME "
            "(the bucket is only taken from hosts like <bucket>.s3.<region>.amazonaws.com)"
        )
    netloc = rest if parts.port is None else f"{rest}:{parts.port}"
    return first, urlunsplit((parts.scheme, netloc, "", "", ""))


def _region_from_endpoint(endpoint: str) -> str | None:
    host = urlsplit(endpoint).hostname or ""
    labels = host.split(".")
    if len(labels) >= 4 and labels[0] == "s3" and host.endswith("amazonaws.com"):
        return labels[1]
    if host.endswith("digitaloceanspaces.com") and len(labels) >= 3:
        return labels[0]
    return None


def _default_addressing(endpoint: str) -> str:
    """Path style for custom endpoints (MinIO, moto, most S3-compatible stores), auto for AWS."""
    if not endpoint or (urlsplit(endpoint).hostname or "").endswith("amazonaws.com"):
        return "auto"
    return "path"


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env_str(name, default).lower()
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value


# -- input budgets and downloads (handler/validate.py, handler/download.py) ----------------
#
# What a request from the public may make the worker fetch and ComfyUI hold. Defaults and
# why (docs/handler.md, "Budgets" and "URL images"): ComfyUI's LoadImage turns every frame
# into float32 RGB plus a float32 mask, 12-16 bytes a pixel (twice that while converting).

IMAGE_MAX_PIXELS = 50_000_000  # one image, frames included: a 48 MP photo (8064x6048) or 8K; ~800 MB in ComfyUI
JOB_MAX_IMAGE_PIXELS = 100_000_000  # all of a job's images: two images at the full per-image budget, ~1.6 GB
# Real workflows have tens to a few hundred nodes; ComfyUI 0.3.64 cannot validate a chain past ~980
# nodes anyway, and its progress_state frames grow with the square of the node count (3000 nodes
# added 1.1 GB to ComfyUI, 1000 nodes a ninth of that).
WORKFLOW_MAX_NODES = 1000
IMAGE_DOWNLOAD_MAX_REDIRECTS = 5  # presigned-URL services and CDNs use one or two


@dataclass(frozen=True)
class InputBudgets:
    """Limits on one job's input, checked by validate.py before anything reaches ComfyUI."""

    image_max_bytes: int
    image_max_pixels: int
    job_max_image_pixels: int
    workflow_max_nodes: int


@dataclass(frozen=True)
class DownloadPolicy:
    """How download.py fetches URL images: limits, and the hosts that may be on private addresses."""

    max_bytes: int
    timeout_s: float
    max_redirects: int
    allowed_hosts: frozenset[str]
    ca_bundle: str | None  # requests' REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE; None: requests' own (certifi)


def load_budgets() -> InputBudgets:
    return InputBudgets(
        image_max_bytes=env_int("IMAGE_MAX_BYTES", 50 * MB, minimum=1),
        image_max_pixels=env_int("IMAGE_MAX_PIXELS", IMAGE_MAX_PIXELS, minimum=1),
        job_max_image_pixels=env_int("JOB_MAX_IMAGE_PIXELS", JOB_MAX_IMAGE_PIXELS, minimum=1),
        workflow_max_nodes=env_int("WORKFLOW_MAX_NODES", WORKFLOW_MAX_NODES, minimum=1),
    )


def load_download_policy() -> DownloadPolicy:
    return DownloadPolicy(
        max_bytes=env_int("IMAGE_DOWNLOAD_MAX_BYTES", 50 * MB, minimum=1),
        timeout_s=env_float("IMAGE_DOWNLOAD_TIMEOUT_S", 30.0, minimum=0.1),
        max_redirects=env_int("IMAGE_DOWNLOAD_MAX_REDIRECTS", IMAGE_DOWNLOAD_MAX_REDIRECTS, minimum=0, maximum=30),
        allowed_hosts=allowed_hosts(env_str("IMAGE_DOWNLOAD_ALLOWED_HOSTS")),
        ca_bundle=first_env(("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")) or None,
    )


def allowed_hosts(value: str) -> frozenset[str]:
    """IMAGE_DOWNLOAD_ALLOWED_HOSTS: host names (or IP addresses), separated by commas or spaces."""
    hosts = set()
    for item in value.replace(",", " ").split():
        host = item.lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host or any(mark in host for mark in "/@[]") or (":" in host and not _is_ipv6(host)):
            raise ConfigError(
                f"IMAGE_DOWNLOAD_ALLOWED_HOSTS: {item!r} is not a host name; list host names or IP addresses "
                "only (no scheme, port or path), for example minio.internal,10.0.0.5"
            )
        hosts.add(host)
    return frozenset(hosts)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
