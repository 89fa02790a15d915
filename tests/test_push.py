"""The sidecar's Pushgateway client (healthcheck/push.py) against Debian's real prometheus-pushgateway.

Pushes, the group's labels, the delete on stop, https and basic auth checked by the Pushgateway's
own --web.config.file, a bearer token checked by a loopback proxy in front of the real gateway,
and what an unreachable or silent gateway costs: failures counted, one log line per outage, a
stop that still ends. The helpers here are shared with tests/test_push_stack.py.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import logging
import os
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge

from healthcheck.config import PushSettings, push_settings
from healthcheck.push import JOB, Pusher
from tests.processes import Process, free_port
from tests.sidecar_world import wait_until
from worker_common.layout import worker_id
from worker_common.settings import ConfigError

PASSWORD = "pg-secret-Zq7x1Lw9"
TOKEN = "pg-token-Hk3v8Rr2"


# --------------------------------------------------------------------------- helpers


class Pushgateway:
    """Debian's prometheus-pushgateway on a loopback port, keeping its groups in memory only."""

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        web_config: dict | None = None,
        auth: tuple[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        binary = shutil.which("prometheus-pushgateway")
        assert binary, (
            "prometheus-pushgateway is missing: install Debian's `prometheus-pushgateway` package "
            "(scripts/install-system-deps)"
        )
        self.port = port or free_port()
        scheme = "https" if web_config and "tls_server_config" in web_config else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.auth = auth
        self.verify: str | bool = str(ca_file) if ca_file else True
        command = [binary, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file=", "--log.level=info"]
        if web_config:
            path = run_dir / f"pushgateway-web-{self.port}.yml"
            path.write_text(yaml.safe_dump(web_config))
            command.append(f"--web.config.file={path}")
        self.process = Process("pushgateway", command, dict(os.environ), cwd=run_dir)
        wait_until(self._ready, 30, f"the Pushgateway at {self.url}\n{self.process.output()}")

    def _get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, auth=self.auth, verify=self.verify, timeout=5)

    def _ready(self) -> bool:
        try:
            return self._get("/-/ready").status_code == 200
        except requests.RequestException:
            return False

    def groups(self) -> list[dict]:
        response = self._get("/api/v1/metrics")
        response.raise_for_status()
        return response.json()["data"]

    def group(self, worker: str) -> dict | None:
        return next((group for group in self.groups() if group["labels"].get("worker") == worker), None)

    def value(self, worker: str, metric: str) -> str | None:
        """The value of a metric without labels of its own (beyond the group's) in `worker`'s group."""
        family = (self.group(worker) or {}).get(metric)
        return family["metrics"][0]["value"] if family else None

    def stop(self) -> None:
        self.process.stop(sig=signal.SIGTERM)


@contextlib.contextmanager
def pushgateway(run_dir: Path, **options) -> Iterator[Pushgateway]:
    gateway = Pushgateway(run_dir, **options)
    try:
        yield gateway
    finally:
        gateway.stop()


def basic_auth_web_config(username: str, password: str) -> dict:
    """The Pushgateway's --web.config.file asking for basic auth (bcrypt-hashed, as it requires)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return {"basic_auth_users": {username: hashed}}


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, signed by itself (the test's own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "comfy-worker test pushgateway")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "pushgateway.crt", folder / "pushgateway.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class SilentGateway:
    """A loopback socket that accepts connections, reads what comes and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.sock.accept()
                self.connections.append(connection)  # kept open, never answered

    def close(self) -> None:
        self.sock.close()
        for connection in self.connections:
            connection.close()


class BearerProxy:
    """A loopback reverse proxy in front of a real Pushgateway that lets only one bearer token pass."""

    def __init__(self, upstream_port: int, token: str) -> None:
        self.seen: list[str | None] = []  # the Authorization header of every request
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                authorization = self.headers.get("Authorization")
                proxy.seen.append(authorization)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if authorization != f"Bearer {token}":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "host")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def settings(url: str, worker: str = "w1", **overrides) -> PushSettings:
    values = {"url": url, "interval_s": 0.05, "timeout_s": 1.0, "endpoint_id": "ep1", "worker": worker}
    return PushSettings(**{**values, **overrides})


def registry() -> CollectorRegistry:
    """A registry standing in for the sidecar's: a readiness gauge and a job counter."""
    reg = CollectorRegistry()
    Gauge("comfy_worker_ready", "1 when ready.", registry=reg).set(1)
    Counter("comfy_worker_jobs", "Jobs.", ["outcome", "reason"], registry=reg).labels("success", "none").inc(3)
    return reg


def pusher(push: PushSettings) -> Pusher:
    reg = registry()
    instance = Pusher(push, reg)
    reg.register(instance)
    return instance


def push_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "healthcheck.push"]


@pytest.fixture
def push_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="healthcheck.push")
    return caplog


# --------------------------------------------------------------------------- settings


def push_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name in list(os.environ):
        if name.startswith(("PUSH", "RUNPOD_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_no_pushgateway_url_means_no_pushing(monkeypatch: pytest.MonkeyPatch) -> None:
    push_env(monkeypatch, PUSH_INTERVAL_S="5")
    assert push_settings() is None


def test_push_settings_defaults_and_grouping_key(monkeypatch: pytest.MonkeyPatch) -> None:
    push_env(monkeypatch, PUSHGATEWAY_URL="https://pg.example.com:9091/")
    push = push_settings()
    assert push is not None
    assert (push.url, push.interval_s, push.timeout_s) == ("https://pg.example.com:9091", 15.0, 2.0)
    assert push.endpoint_id == "none" and push.worker == worker_id() == socket.gethostname()

    push_env(monkeypatch, PUSHGATEWAY_URL="http://pg:9091", RUNPOD_ENDPOINT_ID="ep42", RUNPOD_POD_ID="pod7")
    push = push_settings()
    assert push is not None and (push.endpoint_id, push.worker) == ("ep42", "pod7")
    assert Pusher(push, CollectorRegistry()).grouping_key == {"endpoint_id": "ep42", "worker": "pod7"}


def test_credentials_are_not_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    push_env(monkeypatch, PUSHGATEWAY_URL="https://pg", PUSHGATEWAY_USERNAME="u", PUSHGATEWAY_PASSWORD=PASSWORD)
    assert PASSWORD not in repr(push_settings())
    push_env(monkeypatch, PUSHGATEWAY_URL="https://pg", PUSHGATEWAY_BEARER_TOKEN=TOKEN)
    assert TOKEN not in repr(push_settings())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PUSHGATEWAY_URL": f"https://u:{PASSWORD}@pg:9091"}, "set PUSHGATEWAY_USERNAME and PUSHGATEWAY_PASSWORD"),
        ({"PUSHGATEWAY_URL": f"https://pg:9091/?token={TOKEN}"}, "may not have a query"),
        ({"PUSHGATEWAY_URL": "ftp://pg:9091"}, "not an http:// or https:// URL"),
        ({"PUSHGATEWAY_URL": "pg:9091"}, "not an http:// or https:// URL"),
        ({"PUSHGATEWAY_URL": "http://pg:99999"}, "bad port"),
        ({"PUSHGATEWAY_URL": "http://pg", "PUSHGATEWAY_USERNAME": "u"}, "must be set together"),
        ({"PUSHGATEWAY_URL": "http://pg", "PUSHGATEWAY_PASSWORD": PASSWORD}, "must be set together"),
        (
            {
                "PUSHGATEWAY_URL": "http://pg",
                "PUSHGATEWAY_USERNAME": "u",
                "PUSHGATEWAY_PASSWORD": PASSWORD,
                "PUSHGATEWAY_BEARER_TOKEN": TOKEN,
            },
            "choose one",
        ),
        ({"PUSHGATEWAY_URL": "http://pg", "PUSH_INTERVAL_S": "0"}, "PUSH_INTERVAL_S"),
        ({"PUSHGATEWAY_URL": "http://pg", "PUSH_TIMEOUT_S": "soon"}, "PUSH_TIMEOUT_S"),
    ],
)
def test_bad_push_settings_name_the_variable_and_never_echo_secrets(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    push_env(monkeypatch, **env)
    with pytest.raises(ConfigError) as raised:
        push_settings()
    assert message in str(raised.value)
    assert PASSWORD not in str(raised.value) and TOKEN not in str(raised.value)


# --------------------------------------------------------------------------- pushing


def test_pushes_the_registry_under_its_group_and_deletes_it_on_stop(tmp_path: Path, push_logs) -> None:
    with pushgateway(tmp_path) as gateway:
        client = pusher(settings(gateway.url))
        client.start()
        group = wait_until(lambda: gateway.group("w1"), 30, "the worker's group")
        assert group["labels"] == {"job": JOB, "endpoint_id": "ep1", "worker": "w1"}
        assert group["comfy_worker_ready"]["metrics"][0]["value"] == "1"
        jobs = group["comfy_worker_jobs_total"]["metrics"][0]
        assert jobs["value"] == "3" and jobs["labels"]["outcome"] == "success"
        assert gateway.value("w1", "comfy_worker_push_failures_total") == "0"
        assert float(gateway.value("w1", "push_time_seconds") or 0) > 0
        # Pushes go on: the Pushgateway's push time advances.
        first = float(gateway.value("w1", "push_time_seconds") or 0)
        wait_until(lambda: float(gateway.value("w1", "push_time_seconds") or 0) > first, 30, "a later push")

        client.stop()
        assert gateway.group("w1") is None
        assert client.failures == 0
        messages = [record.getMessage() for record in push_log(push_logs)]
        assert any("deleted group job=comfy-worker, endpoint_id=ep1, worker=w1" in m for m in messages), messages


def test_https_and_basic_auth_reach_the_pushgateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, push_logs) -> None:
    cert, key = self_signed_certificate(tmp_path)
    web_config = {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        **basic_auth_web_config("worker", PASSWORD),
    }
    with pushgateway(tmp_path, web_config=web_config, auth=("worker", PASSWORD), ca_file=cert) as gateway:
        assert gateway.url.startswith("https://")
        # The certificate is checked: unknown to this process, the push fails.
        untrusted = pusher(settings(gateway.url, "w-untrusted", username="worker", password=PASSWORD))
        assert not untrusted.push(2.0)
        assert "CERTIFICATE_VERIFY_FAILED" in push_log(push_logs)[-1].getMessage()

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how a private CA is trusted (deploy/README.md)
        wrong = pusher(settings(gateway.url, "w-wrong", username="worker", password="not-the-password"))
        assert not wrong.push(2.0) and wrong.failures == 1
        assert "HTTP 401" in push_log(push_logs)[-1].getMessage()

        right = pusher(settings(gateway.url, "w-right", username="worker", password=PASSWORD))
        assert right.push(2.0)
        assert gateway.value("w-right", "comfy_worker_ready") == "1"
        assert right.delete(2.0) and gateway.group("w-right") is None
        assert gateway.group("w-wrong") is None and gateway.group("w-untrusted") is None
    assert not any(PASSWORD in record.getMessage() for record in push_logs.records)


def test_a_bearer_token_reaches_the_pushgateway(tmp_path: Path, push_logs) -> None:
    with pushgateway(tmp_path) as gateway:
        proxy = BearerProxy(gateway.port, TOKEN)
        try:
            wrong = pusher(settings(proxy.url, "w-wrong", bearer_token="not-the-token"))
            assert not wrong.push(2.0)
            assert "HTTP 401" in push_log(push_logs)[-1].getMessage()

            right = pusher(settings(proxy.url, "w-right", bearer_token=TOKEN))
            assert right.push(2.0)
            assert proxy.seen[-1] == f"Bearer {TOKEN}"
            assert gateway.value("w-right", "comfy_worker_ready") == "1"
            assert right.delete(2.0) and gateway.group("w-right") is None
        finally:
            proxy.close()
    assert not any(TOKEN in record.getMessage() for record in push_logs.records)


def test_an_outage_is_counted_and_logged_once_when_it_starts_and_once_when_it_ends(tmp_path: Path, push_logs) -> None:
    port = free_port()  # nothing listens there yet
    client = pusher(settings(f"http://127.0.0.1:{port}"))
    client.start()
    try:
        wait_until(lambda: client.failures >= 5, 30, "five failed pushes")
        warnings = [r.getMessage() for r in push_log(push_logs) if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "cannot push metrics to the Pushgateway at http://127.0.0.1" in warnings[0]
        assert "comfy_worker_push_failures_total" in warnings[0]
        exposed = {s.name: s.value for m in client.registry.collect() for s in m.samples}
        assert exposed["comfy_worker_push_failures_total"] >= 5

        with pushgateway(tmp_path, port=port) as gateway:
            wait_until(lambda: gateway.group("w1"), 30, "the first push after the outage")
            failures = int(float(gateway.value("w1", "comfy_worker_push_failures_total") or 0))
            assert failures >= 5
            recovered = [r.getMessage() for r in push_log(push_logs) if "works now" in r.getMessage()]
            assert len(recovered) == 1 and f"after {failures} failed pushes" in recovered[0], recovered
            client.stop()
            assert gateway.group("w1") is None
        warnings = [r.getMessage() for r in push_log(push_logs) if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
    finally:
        client.stop()


def test_a_gateway_that_never_answers_times_out_and_the_stop_still_ends(push_logs) -> None:
    silent = SilentGateway()
    try:
        client = pusher(settings(silent.url, timeout_s=0.2))
        client.start()
        wait_until(lambda: client.failures >= 2, 30, "two pushes timed out")
        assert len(silent.connections) >= 2
        client.stop()
        assert client._thread is not None and not client._thread.is_alive()
        warnings = [r.getMessage() for r in push_log(push_logs) if r.levelno == logging.WARNING]
        assert len(warnings) == 2, warnings  # the outage, and the group that could not be deleted
        assert "timed out" in warnings[0]
        assert "could not delete group job=comfy-worker, endpoint_id=ep1, worker=w1" in warnings[1]
    finally:
        silent.close()
