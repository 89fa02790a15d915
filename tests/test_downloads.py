"""URL images and server-side request forgery: handler.download against real loopback servers, then the
real handler (stand-in ComfyUI, sidecar, runpod's local API) refusing every forgery attempt.

Loopback is exactly what downloads refuse, so the servers here are reached through the test seam the
worker has for private image stores: IMAGE_DOWNLOAD_ALLOWED_HOSTS=localhost. No network is mocked; the
refused addresses (10/8, 169.254.169.254, ...) are refused before any connection, so no test leaves loopback.
"""

from __future__ import annotations

import base64
import io
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from PIL import Image

from handler import config
from handler.config import DownloadPolicy
from handler.download import fetch, refusal
from handler.errors import JobError, Reason
from tests.handler_harness import Rig, RigShape
from tests.images import png_bytes
from tests.processes import QuietHandler
from worker_common.settings import ConfigError

SECRET_TEXT = b"another job's output: the-secret-pixels"
FIELD = "input.images[0].image"


SECRET_PNG = png_bytes(text=SECRET_TEXT)


# -- the address rules (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.255.254", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("fc00::1", "a unique-local (private) address"),
        ("fd12:3456::1", "a unique-local (private) address"),
        ("fec0::1", "a site-local (private) address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("ff0e::1", "a multicast address"),  # global scope, still multicast
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("255.255.255.255", "a reserved address"),
        ("192.0.2.1", "an address that is not publicly routable"),  # documentation range
        ("2001:db8::1", "an address that is not publicly routable"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("::ffff:127.0.0.1", "a loopback address (IPv4 127.0.0.1 inside IPv6)"),
        ("::ffff:10.1.2.3", "a private address (IPv4 10.1.2.3 inside IPv6)"),
        ("::ffff:169.254.169.254", "a cloud metadata address (IPv4 169.254.169.254 inside IPv6)"),
        ("::127.0.0.1", "a loopback address (IPv4 127.0.0.1 inside IPv6)"),
        ("64:ff9b::a00:1", "a private address (IPv4 10.0.0.1 inside IPv6)"),  # NAT64
        ("2002:c0a8:101::", "a private address (IPv4 192.168.1.1 inside IPv6)"),  # 6to4
    ],
)
def test_private_loopback_and_metadata_addresses_are_refused(address: str, why: str) -> None:
    assert refusal(address) == why


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"])
def test_public_addresses_are_fetched(address: str) -> None:
    assert refusal(address) is None


def test_an_allowed_host_may_be_private_but_never_the_metadata_service() -> None:
    assert refusal("127.0.0.1", host_allowed=True) is None
    assert refusal("10.0.0.1", host_allowed=True) is None
    assert refusal("169.254.169.254", host_allowed=True) == "a cloud metadata address"
    assert refusal("::ffff:169.254.169.254", host_allowed=True).startswith("a cloud metadata address")


def test_allowed_hosts_are_host_names_or_addresses() -> None:
    assert config.allowed_hosts(" MinIO.internal., 10.0.0.5  [::1],fd00::5 ") == {
        "minio.internal",
        "10.0.0.5",
        "::1",
        "fd00::5",
    }
    assert config.allowed_hosts("") == frozenset()
    for bad in ("http://minio", "minio:9000", "minio/bucket", "user@minio"):
        with pytest.raises(ConfigError, match=r"IMAGE_DOWNLOAD_ALLOWED_HOSTS: .* is not a host name"):
            config.allowed_hosts(bad)


# -- real loopback servers -----------------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class Target:
    """A loopback HTTP(S) server with named routes that records every request it gets."""

    host: str = "127.0.0.1"
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        target = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                target.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = target.routes().get(urlsplit(self.path).path)
                if route is None:
                    self.answer(404, b"not found")
                else:
                    route(self)

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
        self.server = server_class((self.host, 0), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def routes(self) -> dict[str, Callable[[Any], None]]:
        return {
            "/secret.png": lambda h: h.answer(200, SECRET_PNG),
            "/error": lambda h: h.answer(500, SECRET_TEXT),
            "/redirect": lambda h: h.answer(302, Location=parse_qs(urlsplit(h.path).query)["to"][0]),
            "/loop": lambda h: h.answer(302, Location="/loop?again"),
            "/hold": self._hold,
        }

    def _hold(self, handler: Any) -> None:
        """Never answers: holds the request until the test releases it or the client hangs up."""
        self.released.wait(60)

    def url(self, path: str, host: str = "localhost") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()


def policy(*allowed: str, timeout_s: float = 10.0, redirects: int = 3, ca_bundle: str | None = None) -> DownloadPolicy:
    return DownloadPolicy(1_000_000, timeout_s, redirects, frozenset(allowed), ca_bundle)


def refused(url: str, rules: DownloadPolicy, time_left_s: float | None = None) -> str:
    with pytest.raises(JobError) as caught:
        fetch(url, FIELD, rules, time_left_s)
    assert caught.value.reason is Reason.INVALID_INPUT
    assert caught.value.details == {"field": FIELD}
    message = caught.value.message
    assert message.startswith(f"Invalid input: {FIELD}: ")
    assert SECRET_TEXT.decode() not in message and "IHDR" not in message, message
    return message


def test_an_allowed_host_is_fetched(target: Target) -> None:
    assert fetch(target.url("/secret.png"), FIELD, policy("localhost")) == SECRET_PNG
    assert [seen.path for seen in target.seen] == ["/secret.png"]
    assert target.seen[0].headers["host"] == f"localhost:{target.port}"


def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed(target: Target) -> None:
    message = refused(target.url("/secret.png"), policy())
    assert f"http://localhost:{target.port}/secret.png is not fetched: localhost resolves to 127.0.0.1, a loopback" in (
        message
    )
    assert "IMAGE_DOWNLOAD_ALLOWED_HOSTS" in message
    assert target.seen == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1 is a loopback address (IPv4 127.0.0.1 inside IPv6)"),
        ("[::ffff:7f00:1]", "::ffff:127.0.0.1 is a loopback address (IPv4 127.0.0.1 inside IPv6)"),
        ("2130706433", "2130706433 resolves to 127.0.0.1, a loopback address"),  # 127.0.0.1 as one number
        ("0x7f.1", "0x7f.1 resolves to 127.0.0.1, a loopback address"),
        ("0", "0 resolves to 0.0.0.0, an unspecified address"),
    ],
)
def test_loopback_in_any_spelling_is_refused_even_with_localhost_allowed(
    target: Target, host: str, expected: str
) -> None:
    message = refused(target.url("/secret.png", host), policy("localhost"))
    assert f"is not fetched: {expected}; downloads go to public addresses only" in message
    assert target.seen == []


def test_ipv6_loopback_is_refused() -> None:
    server = Target(host="::1")
    try:
        assert "::1 is a loopback address" in refused(server.url("/secret.png", "[::1]"), policy("localhost"))
        assert server.seen == []
    finally:
        server.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://10.0.0.1/x.png", "10.0.0.1 is a private address; downloads go to public addresses only"),
        ("http://192.168.0.10:9000/bucket/x.png", "192.168.0.10 is a private address"),
        ("http://100.64.0.1/x.png", "100.64.0.1 is a shared (carrier-grade NAT) address"),
        ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 is a cloud metadata address; never fetched"),
        ("http://[fd00:ec2::254]/latest/", "fd00:ec2::254 is a cloud metadata address; never fetched"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is a cloud metadata service"),
        ("http://[fe80::1%25eth0]/x.png", "is a link-local address"),
    ],
)
def test_private_and_metadata_urls_are_refused_before_connecting(url: str, expected: str) -> None:
    """Refused before any connection (a connection would time out: this machine has no route there)."""
    assert expected in refused(url, policy("localhost", timeout_s=0.5))


def test_metadata_stays_refused_for_allowed_hosts() -> None:
    rules = policy("169.254.169.254", "metadata.google.internal", timeout_s=0.5)
    assert "a cloud metadata address; never fetched" in refused("http://169.254.169.254/latest/", rules)
    assert "cloud metadata service" in refused("http://metadata.google.internal/", rules)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://127.0.0.1:{port}/secret.png", "127.0.0.1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/secret.png", "::ffff:127.0.0.1 is a loopback address (IPv4 127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://10.1.1.1/x.png", "10.1.1.1 is a private address"),
    ],
)
def test_a_redirect_from_an_allowed_host_to_a_forbidden_one_is_refused(
    target: Target, location: str, expected: str
) -> None:
    to = location.format(port=target.port)
    message = refused(target.url(f"/redirect?to={to}"), policy("localhost", timeout_s=2))
    assert message.startswith(f"Invalid input: {FIELD}: http://localhost:{target.port}/redirect?… redirected; ")
    assert f"is not fetched: {expected}" in message
    assert [unquote(seen.path) for seen in target.seen] == [f"/redirect?to={to}"]  # the forbidden hop never was


def test_redirects_are_followed_a_bounded_number_of_times(target: Target) -> None:
    assert fetch(target.url("/redirect?to=/secret.png"), FIELD, policy("localhost", redirects=1)) == SECRET_PNG
    target.seen.clear()
    message = refused(target.url("/loop"), policy("localhost", redirects=3))
    assert message.endswith(
        f"http://localhost:{target.port}/loop redirected more than 3 times (IMAGE_DOWNLOAD_MAX_REDIRECTS)"
    )
    assert len(target.seen) == 4


def test_a_redirect_to_another_scheme_is_refused(target: Target) -> None:
    message = refused(target.url("/redirect?to=file:///etc/passwd"), policy("localhost"))
    assert message.endswith("redirect?… redirected to a file: URL; only http(s) URLs are fetched")


def test_the_connection_goes_to_the_address_that_was_checked(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """One lookup per hop: every later lookup is of an IP literal, so DNS cannot answer differently the second time."""
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def spy(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(str(host))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    assert fetch(target.url("/redirect?to=/secret.png"), FIELD, policy("localhost")) == SECRET_PNG
    assert [host for host in looked_up if host == "localhost"] == ["localhost", "localhost"]  # two hops
    assert {host for host in looked_up if host != "localhost"} <= {"127.0.0.1"}


def test_credentials_in_the_url_go_to_its_own_host_only(target: Target) -> None:
    rules = policy("localhost", "127.0.0.1")
    to = f"http://127.0.0.1:{target.port}/secret.png"
    assert fetch(target.url(f"/redirect?to=/redirect?to={to}").replace("//", "//alice:pw@", 1), FIELD, rules)
    auth = [seen.headers.get("authorization") for seen in target.seen]
    expected = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert auth == [expected, expected, None]  # same origin twice, then another host


def test_error_answers_quote_neither_the_body_nor_the_query(target: Target) -> None:
    message = refused(target.url("/error?X-Amz-Signature=sig-123"), policy("localhost"))
    assert message.endswith(f"downloading http://localhost:{target.port}/error?… answered HTTP 500")
    assert "sig-123" not in message


def test_a_closed_port_says_the_connection_failed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = refused(f"http://localhost:{port}/x.png", policy("localhost"))
    assert message.endswith(f"the connection to 127.0.0.1:{port} failed (Connection refused)")


def test_an_unknown_host_says_it_could_not_be_resolved() -> None:
    message = refused("http://no-such-host.invalid/x.png", policy())
    assert "no-such-host.invalid could not be resolved" in message


def test_the_job_deadline_bounds_the_download(target: Target) -> None:
    message = refused(target.url("/hold"), policy("localhost", timeout_s=30), time_left_s=0.5)
    assert message.endswith("took longer than 0.5 s (what was left of the job's time, JOB_TIMEOUT_S)")
    message = refused(target.url("/hold"), policy("localhost", timeout_s=0.5))
    assert message.endswith("took longer than 0.5 s (IMAGE_DOWNLOAD_TIMEOUT_S)")


# -- TLS: connecting to the checked address, verifying the host name ---------------------------------


@dataclass
class Certificates:
    ca: Path
    chain: Path
    key: Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA and a certificate for `localhost` only (no IP address in it), made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA", cwd=folder
    )
    openssl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost", cwd=folder)
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost\n")
    openssl(
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "2", "-extfile", "san.cnf",
        cwd=folder,
    )  # fmt: skip
    return Certificates(folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key")


@pytest.fixture
def tls_target(certificates: Certificates) -> Iterator[Target]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.chain, certificates.key)
    server = Target(tls=context)
    yield server
    server.close()


def test_https_is_verified_against_the_host_name_while_connecting_to_the_checked_address(
    tls_target: Target, certificates: Certificates
) -> None:
    trusted = policy("localhost", "127.0.0.1", ca_bundle=str(certificates.ca))
    assert fetch(tls_target.url("/secret.png"), FIELD, trusted) == SECRET_PNG
    # The same server by its address: the certificate names only localhost.
    message = refused(tls_target.url("/secret.png", "127.0.0.1"), trusted)
    assert "its TLS certificate was refused (it is not for 127.0.0.1)" in message
    # Without the test CA (requests' own bundle): refused.
    message = refused(tls_target.url("/secret.png"), policy("localhost"))
    assert "its TLS certificate was refused (unable to get local issuer certificate)" in message


# -- the real handler -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rig_shape() -> RigShape:
    return RigShape(handler_env={"IMAGE_DOWNLOAD_ALLOWED_HOSTS": ""})


def load_job(url: str) -> dict[str, Any]:
    return {
        "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dl"}},
        },
        "images": [{"name": "in.png", "image": url}],
    }


def failed(result: dict[str, Any]) -> str:
    assert result["status"] == "FAILED", result
    return result["error"]


def secret_output(rig: Rig) -> str:
    """Another job's output in ComfyUI's output folder, and the /view query that would return it."""
    folder = rig.layout.output / "other-job"
    folder.mkdir(exist_ok=True)
    (folder / "private.png").write_bytes(SECRET_PNG)
    return "/view?filename=private.png&subfolder=other-job&type=output"


def assert_no_secret(message: str) -> None:
    for leak in (SECRET_TEXT.decode(), base64.b64encode(SECRET_PNG[:30]).decode()[:24], "IHDR", "\\x89PNG"):
        assert leak not in message, (leak, message)


def test_forgery_attempts_through_the_handler_fail_without_a_byte_of_the_target(rig: Rig, target: Target) -> None:
    view = secret_output(rig)
    assert rig.session.get(rig.comfy_url + view, timeout=10).content == SECRET_PNG  # what a forgery would steal
    inputs_before = rig.files("input")
    port = rig.comfy_port
    attempts = {
        f"http://127.0.0.1:{port}{view}": "127.0.0.1 is a loopback address",
        f"http://localhost:{port}{view}": "localhost resolves to 127.0.0.1, a loopback address",
        f"http://[::1]:{port}{view}": "::1 is a loopback address",
        f"http://[::ffff:127.0.0.1]:{port}{view}": "::ffff:127.0.0.1 is a loopback address (IPv4 127.0.0.1",
        f"http://2130706433:{port}{view}": "2130706433 resolves to 127.0.0.1, a loopback address",
        target.url("/secret.png", "127.0.0.1"): "127.0.0.1 is a loopback address",
        "http://10.0.0.1/x.png": "10.0.0.1 is a private address",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a cloud metadata address; never fetched",
    }
    for url, expected in attempts.items():
        message = failed(rig.runsync(load_job(url)))
        assert message.startswith(f"Invalid input: {FIELD}: "), message
        assert f"is not fetched: {expected}" in message, message
        if "metadata" not in expected:
            assert "IMAGE_DOWNLOAD_ALLOWED_HOSTS" in message
        assert_no_secret(message)
    assert target.seen == []
    assert rig.files("input") == inputs_before


def test_a_redirect_from_an_allowed_host_to_comfyui_fails_and_the_worker_serves_on(rig: Rig, target: Target) -> None:
    rig.start_handler({"IMAGE_DOWNLOAD_ALLOWED_HOSTS": "localhost"})
    try:
        view = secret_output(rig)
        for to in (f"http://127.0.0.1:{rig.comfy_port}{view}", f"http://[::ffff:7f00:1]:{rig.comfy_port}{view}"):
            message = failed(rig.runsync(load_job(target.url(f"/redirect?to={to}"))))
            assert f"http://localhost:{target.port}/redirect?… redirected; " in message
            assert "a loopback address" in message
            assert_no_secret(message)
        # The allowed host itself works: the image arrives, and so does the job's output.
        result = rig.runsync(load_job(target.url("/secret.png")))
        assert result["status"] == "COMPLETED", result
        [item] = result["output"]["images"]
        assert Image.open(io.BytesIO(base64.b64decode(item["data"]))).convert("RGB").getpixel((0, 0)) == (200, 30, 90)
    finally:
        rig.start_handler({"IMAGE_DOWNLOAD_ALLOWED_HOSTS": ""})
