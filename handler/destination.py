"""A job's own destination: its S3 bucket (`"s3"` in its input), or presigned URLs (upload_urls.py).

The S3 destination: its outputs go to the caller's bucket, with the caller's keys.

    "s3": {"bucket": "...", "access_key_id": "...", "secret_access_key": "...",
           "session_token"?, "region"?, "endpoint_url"?, "prefix"?}

The credentials are used for this job's uploads only: they live in this job's uploader, never
in a log line, an error or the result (which names each object as `s3://bucket/key` rather than
a presigned URL, since that would carry the access key id). Credentials are required: the
worker's own (the default AWS chain) are never used for a bucket a request names.

The endpoint obeys the address rules of URL downloads (download.py): it must not resolve to a
loopback, private or cloud metadata address, unless its host is in IMAGE_DOWNLOAD_ALLOWED_HOSTS
or it is the worker's own configured S3 endpoint (S3_ENDPOINT_URL, trusted as the operator's).
The check resolves the host when the job starts; boto3 resolves it again when it connects.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

from . import deliver, upload_urls
from .collect import Collected
from .config import Config, S3Config, _default_addressing
from .context import JobContext
from .download import METADATA_HOSTS, PRIVATE_HINT, redact, refusal
from .errors import invalid_input
from .runtime import Runtime
from .s3 import S3Uploader
from .upload_urls import UrlUploads

FIELDS = ("bucket", "access_key_id", "secret_access_key", "session_token", "region", "endpoint_url", "prefix")
REQUIRED = ("bucket", "access_key_id", "secret_access_key")


def own(raw: dict[str, Any], config: Config) -> S3Uploader | UrlUploads | None:
    """The job's own destination (input.s3 or input.upload_urls), or None for the worker's usual delivery."""
    if raw.get("s3") is not None and raw.get("upload_urls") is not None:
        raise invalid_input("input.s3 and input.upload_urls are both given: send the outputs to one destination")
    return uploader(raw.get("s3"), config) or upload_urls.parse(raw.get("upload_urls"), config.download_policy)


def deliver_to(
    rt: Runtime, ctx: JobContext, collected: Collected, own: S3Uploader | UrlUploads | None
) -> dict[str, Any]:
    """The result's items: delivered as the worker does (deliver.py), or to the job's own destination."""
    if isinstance(own, UrlUploads):
        return own.deliver(collected, max(ctx.left_s(), 0.0))
    return deliver.deliver(rt, ctx, collected, own)


def uploader(raw: Any, config: Config) -> S3Uploader | None:
    """The job's own uploader, or None when the job names no destination; raises JobError(invalid_input)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid_input("input.s3 must be an object with bucket, access_key_id and secret_access_key")
    problems = [f"input.s3.{name} is missing" for name in REQUIRED if not raw.get(name)]
    problems += [f"input.s3.{name} is not one of {', '.join(FIELDS)}" for name in raw if name not in FIELDS]
    problems += [
        f"input.s3.{name} must be a string" for name in FIELDS if name in raw and not isinstance(raw[name], str)
    ]
    if problems:
        raise invalid_input("; ".join(problems))
    endpoint = raw.get("endpoint_url") or None
    if endpoint:
        _check_endpoint(endpoint, config)
    own = config.s3
    return S3Uploader(
        S3Config(
            bucket=raw["bucket"],
            endpoint_url=endpoint,
            region=raw.get("region") or None,
            access_key_id=raw["access_key_id"],
            secret_access_key=raw["secret_access_key"],
            session_token=raw.get("session_token") or None,
            prefix=(raw.get("prefix") or "").strip("/"),
            presign_expires_s=0,
            upload_mode="always",
            addressing_style=_default_addressing(endpoint or ""),
            max_attempts=own.max_attempts if own else 5,
        )
    )


def _check_endpoint(endpoint: str, config: Config) -> None:
    parts = urlsplit(endpoint)
    shown = redact(endpoint)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise invalid_input(f"input.s3.endpoint_url {shown} has a bad port") from None
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise invalid_input(f"input.s3.endpoint_url {shown} must be an http(s) URL with a host")
    if _is_own(parts.scheme, host, port, config):
        return
    if host in METADATA_HOSTS:
        raise invalid_input(f"input.s3.endpoint_url {shown}: {host} is a cloud metadata service")
    try:
        addresses = {str(found[4][0]) for found in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        raise invalid_input(f"input.s3.endpoint_url {shown}: {host} could not be resolved") from None
    allowed = host in config.download_policy.allowed_hosts
    for address in sorted(addresses):
        why = refusal(address, allowed)
        if why:
            raise invalid_input(
                f"input.s3.endpoint_url {shown} is not used: {host} resolves to {address}, {why}; {PRIVATE_HINT}"
            )


def _is_own(scheme: str, host: str, port: int, config: Config) -> bool:
    """Whether the endpoint is the worker's own configured one (scheme, host and port)."""
    own = config.s3.endpoint_url if config.s3 else None
    if not own:
        return False
    parts = urlsplit(own)
    own_port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme, (parts.hostname or "").rstrip(".").lower(), own_port) == (scheme, host, port)
