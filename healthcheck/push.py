"""PUSHGATEWAY_URL: the container's /metrics, pushed to a Prometheus Pushgateway.

Nobody can connect to a queue-based RunPod serverless worker, so Prometheus cannot scrape its
sidecar. With PUSHGATEWAY_URL set, a thread of its own pushes the registry that /metrics serves
(the sidecar's figures and the handler's files) every PUSH_INTERVAL_S under the grouping key
job="comfy-worker", endpoint_id, worker. It uses prometheus_client's push_to_gateway (PUT: the
group is replaced as a whole, so a series that disappears here disappears there too) and, on an
orderly stop, pushes a last time and deletes the group with delete_from_gateway. A worker killed
without an orderly stop leaves its group behind; the Pushgateway's own `push_time_seconds` for
the group then grows old, which the alert rules and the dashboard read as "gone".

Only this thread ever waits on the Pushgateway: every request has a timeout, the probe loop
and the HTTP handlers never push, and a stop waits at most STOP_WAIT_S for the last push and
the delete. Failed pushes are counted in comfy_worker_push_failures_total and logged once per
outage (when pushing starts failing, and when it works again). Credentials travel only in the
Authorization header, set by prometheus_client's handler hooks; the URL logged has none.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import basic_auth_handler, default_handler, delete_from_gateway, push_to_gateway
from prometheus_client.registry import CollectorRegistry

from worker_common.contract import METRIC_PREFIX

from .config import PushSettings

log = logging.getLogger(__name__)

JOB = "comfy-worker"
# The sidecar's stop (supervisord's stopwaitsecs=5) must fit the last push and the delete.
STOP_WAIT_S = 3.5
STOP_REQUEST_TIMEOUT_S = 1.5
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

Handler = Callable[..., Callable[[], None]]


def auth_handler(settings: PushSettings) -> Handler:
    """prometheus_client's request handler for the configured authentication."""
    if settings.bearer_token:
        header = ("Authorization", f"Bearer {settings.bearer_token}")

        def bearer_handler(url: str, method: str, timeout: float | None, headers: list, data: bytes):
            return default_handler(url, method, timeout, [*headers, header], data)

        return bearer_handler
    if settings.username:
        return functools.partial(basic_auth_handler, username=settings.username, password=settings.password)
    return default_handler


def describe_error(error: Exception) -> str:
    """One line about a failed request; the Pushgateway's own explanation when it gave one."""
    if isinstance(error, urllib.error.HTTPError):
        try:
            body = error.read(300).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            body = ""
        return f"HTTP {error.code} {error.reason}" + (f": {body}" if body else "")
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return f"{type(error).__name__}: {error}"


class Pusher:
    """Pushes `registry` to the Pushgateway from its own thread; also the collector of its failures."""

    def __init__(self, settings: PushSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.grouping_key = {"endpoint_id": settings.endpoint_id, "worker": settings.worker}
        self.failures = 0
        self._handler = auth_handler(settings)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pushed_once = False
        self._outage_since: float | None = None
        self._outage_failures = 0

    @property
    def group(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in {"job": JOB, **self.grouping_key}.items())

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            METRIC_PREFIX + "push_failures",
            "Pushes of /metrics to the Pushgateway (PUSHGATEWAY_URL) that failed.",
            value=self.failures,
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        settings = self.settings
        auth = "bearer token" if settings.bearer_token else "basic auth" if settings.username else ""
        log.info(
            "pushing /metrics to the Pushgateway at %s every %g s as group %s (%s)",
            settings.url,
            settings.interval_s,
            self.group,
            auth or "no authentication",
        )
        parts = urlsplit(settings.url)
        if auth and parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            log.warning("PUSHGATEWAY_URL is plain http: the %s crosses the network unencrypted; use https", auth)
        self._thread = threading.Thread(target=self._run, name="push", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Push a last time and delete the group; gives up after STOP_WAIT_S whatever the gateway does."""
        self._stopping.set()
        if self._thread is None:
            return
        self._thread.join(STOP_WAIT_S)
        if self._thread.is_alive():
            log.warning(
                "the Pushgateway did not take the last push and the delete within %g s: group %s stays there "
                "until deleted (alert ComfyWorkerGone)",
                STOP_WAIT_S,
                self.group,
            )

    def _run(self) -> None:
        while True:
            self.push(self.settings.timeout_s)
            if self._stopping.wait(self.settings.interval_s):
                break
        timeout_s = min(self.settings.timeout_s, STOP_REQUEST_TIMEOUT_S)
        self.push(timeout_s)
        self.delete(timeout_s)

    # -- requests ----------------------------------------------------------------------

    def push(self, timeout_s: float) -> bool:
        """One PUT of the whole registry; True when the Pushgateway took it."""
        try:
            push_to_gateway(
                self.settings.url, JOB, self.registry, self.grouping_key, timeout=timeout_s, handler=self._handler
            )
        except Exception as error:  # refused, timed out, 4xx/5xx, TLS: the gateway's trouble, never the worker's
            self._failed(error)
            return False
        self._succeeded()
        return True

    def delete(self, timeout_s: float) -> bool:
        """Remove this worker's group, so a stopped worker does not linger on the Pushgateway."""
        try:
            delete_from_gateway(self.settings.url, JOB, self.grouping_key, timeout=timeout_s, handler=self._handler)
        except Exception as error:  # as in push
            log.warning(
                "could not delete group %s from the Pushgateway at %s: %s; it stays there until deleted "
                "(alert ComfyWorkerGone)",
                self.group,
                self.settings.url,
                describe_error(error),
            )
            return False
        log.info("deleted group %s from the Pushgateway", self.group)
        return True

    def _failed(self, error: Exception) -> None:
        self.failures += 1
        self._outage_failures += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "cannot push metrics to the Pushgateway at %s: %s; retrying every %g s "
                "(failures counted in comfy_worker_push_failures_total; logged again when pushing works)",
                self.settings.url,
                describe_error(error),
                self.settings.interval_s,
            )

    def _succeeded(self) -> None:
        if self._outage_since is not None:
            log.info(
                "pushing metrics to the Pushgateway at %s works %s, after %d failed pushes in %.0f s",
                self.settings.url,
                "again" if self._pushed_once else "now",
                self._outage_failures,
                time.monotonic() - self._outage_since,
            )
            self._outage_since, self._outage_failures = None, 0
        elif not self._pushed_once:
            log.info("first push to the Pushgateway at %s done", self.settings.url)
        self._pushed_once = True
