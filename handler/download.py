"""Fetch an input image given as an http(s) URL: from public addresses only, within a size and a time limit.

Requests come from the public, so an image URL must not reach what only the worker can reach
(server-side request forgery): ComfyUI and the sidecar on loopback, the cloud's metadata
service, the private network. For each hop the host is resolved once, every address it resolves
to is checked, and the connection goes to a checked address (looking the name up again could give
another answer: DNS rebinding). Redirects are followed here, one at a time, each hop checked the
same way. IMAGE_DOWNLOAD_ALLOWED_HOSTS names hosts that may resolve anywhere (a MinIO in the same
private network); cloud metadata addresses stay refused even for them. No error carries bytes of
what was fetched: statuses, sizes and the (redacted) URLs only.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit, urlunsplit

import urllib3
from requests.certs import where as default_ca_bundle
from requests.utils import default_user_agent
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util import make_headers, parse_url
from urllib3.util.ssl_match_hostname import CertificateError

from .config import DownloadPolicy
from .errors import JobError, Reason

CHUNK_BYTES = 256 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
PRIVATE_HINT = "downloads go to public addresses only (IMAGE_DOWNLOAD_ALLOWED_HOSTS lists hosts that may be private)"
# Names and addresses of cloud metadata services (AWS, GCP, Azure, ECS, Alibaba, Oracle): never fetched.
METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)
_NETWORKS = tuple(
    (ipaddress.ip_network(network), what)
    for network, what in (
        ("0.0.0.0/8", "an unspecified address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("fc00::/7", "a unique-local (private) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local (private) address"),
        ("ff00::/8", "a multicast address"),
    )
)
# IPv6 ranges that carry an IPv4 address a packet ends up at: the IPv4 address is what counts.
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def refusal(address: str, host_allowed: bool = False) -> str | None:
    """Why a download must not connect to `address` ("a loopback address"...), or None.

    A host in IMAGE_DOWNLOAD_ALLOWED_HOSTS (`host_allowed`) may be anywhere but at a cloud metadata address.
    """
    ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone (fe80::1%eth0) does not change the kind
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        why = refusal(str(embedded), host_allowed)
        return f"{why} (IPv4 {embedded} inside IPv6)" if why else None
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if host_allowed:
        return None
    for network, what in _NETWORKS:
        if ip.version == network.version and ip in network:
            return what
    if not ip.is_global:
        return "an address that is not publicly routable"
    return None


def _embedded_ipv4(ip: Address) -> ipaddress.IPv4Address | None:
    if ip.version == 4:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # ::a.b.c.d (deprecated); :: and ::1 are themselves
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in network for network in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class _Hop:
    """One URL to request: where it points and how it is shown in errors."""

    url: str
    scheme: str
    host: str  # lower case, no brackets, no trailing dot
    port: int
    request_uri: str
    auth: str | None

    @property
    def shown(self) -> str:
        return redact(self.url)

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"


class _Failed(Exception):
    """What went wrong, phrased to follow the field's name."""


def fetch(url: str, field: str, policy: DownloadPolicy, time_left_s: float | None = None) -> bytes:
    """The body of `url`; raises JobError(invalid_input) naming the field on any failure.

    The whole download, redirects included, takes at most IMAGE_DOWNLOAD_TIMEOUT_S, or `time_left_s`
    (what is left of the job's deadline) when that is shorter, so a server trickling bytes cannot hold
    the job.
    """
    limit_s = policy.timeout_s if time_left_s is None else max(0.0, min(policy.timeout_s, time_left_s))
    deadline = _Deadline(time.monotonic() + limit_s, limit_s, limit_s < policy.timeout_s)
    try:
        return _follow(url, policy, deadline)
    except _Failed as failure:
        raise JobError(Reason.INVALID_INPUT, f"Invalid input: {field}: {failure}", {"field": field}) from None


def put_file(url: str, path: str, content_type: str, policy: DownloadPolicy, timeout_s: float) -> None:
    """PUT a file to `url` (a presigned upload URL) under the same address rules as a download.

    No redirect is followed. Raises ValueError with the reason (the URL redacted) on any failure.
    """
    deadline = _Deadline(time.monotonic() + timeout_s, timeout_s, True)
    try:
        hop = _hop(url, None)
        addresses = _checked_addresses(hop, policy, "")
        with open(path, "rb") as body:
            size = os.fstat(body.fileno()).st_size
            headers = {"Host": hop.host_header, "Content-Type": content_type, "Content-Length": str(size)}
            pool = _pool(hop, addresses[0], policy.ca_bundle)
            try:
                response = pool.urlopen(
                    "PUT",
                    hop.request_uri,
                    body=body,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    timeout=urllib3.Timeout(connect=deadline.left_s(), read=deadline.left_s()),
                )
            finally:
                pool.close()
    except _Failed as failure:
        raise ValueError(str(failure)) from None
    except (HTTPError, OSError) as error:
        raise ValueError(f"uploading to {redact(url)} failed: {_problem(error, hop.host)}") from None
    if not 200 <= response.status < 300:
        raise ValueError(f"uploading to {redact(url)} answered HTTP {response.status}")


@dataclass(frozen=True)
class _Deadline:
    at: float
    limit_s: float
    by_job: bool  # the job's deadline, not IMAGE_DOWNLOAD_TIMEOUT_S, is what limits this download

    def left_s(self) -> float:
        return self.at - time.monotonic()

    def passed(self, downloading: str) -> _Failed:
        setting = "what was left of the job's time, JOB_TIMEOUT_S" if self.by_job else "IMAGE_DOWNLOAD_TIMEOUT_S"
        return _Failed(f"{downloading} took longer than {self.limit_s:g} s ({setting})")


def _follow(url: str, policy: DownloadPolicy, deadline: _Deadline) -> bytes:
    first = _hop(url, None)
    hop, via = first, ""
    for _ in range(policy.max_redirects + 1):
        addresses = _checked_addresses(hop, policy, via)
        with _response(hop, addresses, policy, deadline, via) as response:
            if response.status not in REDIRECT_STATUSES:
                return _body(response, hop, policy, deadline, via)
            location = response.headers.get("Location")
            if not location:
                raise _Failed(f"{via}downloading {hop.shown} answered HTTP {response.status} without a Location")
            hop, via = _hop(urljoin(hop.url, location), first), f"{first.shown} redirected; "
    raise _Failed(f"{first.shown} redirected more than {policy.max_redirects} times (IMAGE_DOWNLOAD_MAX_REDIRECTS)")


def _hop(url: str, first: _Hop | None) -> _Hop:
    """The URL taken apart; basic auth from the first URL only goes to the same origin."""
    shown = redact(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in DEFAULT_PORTS:
        where = f"{first.shown} redirected to a {scheme or 'relative'}: URL" if first else f"{shown} is not http(s)"
        raise _Failed(f"{where}; only http(s) URLs are fetched")
    try:
        parts = parse_url(url)
    except LocationParseError:
        raise _Failed(f"{shown} is not a valid URL") from None
    host = (parts.host or "").strip("[]").rstrip(".").lower()
    if not host:
        raise _Failed(f"{shown} has no host")
    hop = _Hop(url, scheme, host, parts.port or DEFAULT_PORTS[scheme], parts.request_uri, None)
    if first is None:
        return replace(hop, auth=parts.auth)
    return replace(hop, auth=first.auth) if first.origin == hop.origin else hop


def _checked_addresses(hop: _Hop, policy: DownloadPolicy, via: str) -> list[str]:
    """Every address the host resolves to, once; refused if any is one downloads must not reach."""
    allowed = hop.host in policy.allowed_hosts
    if hop.host in METADATA_HOSTS:
        raise _Failed(f"{via}{hop.shown} is not fetched: {hop.host} is a cloud metadata service")
    addresses = _resolve(hop, via)
    for address in addresses:
        why = refusal(address, allowed)
        if why is None:
            continue
        subject = f"{address} is" if _is_literal(hop.host) else f"{hop.host} resolves to {address},"
        hint = "never fetched" if why.startswith("a cloud metadata") else PRIVATE_HINT
        raise _Failed(f"{via}{hop.shown} is not fetched: {subject} {why}; {hint}")
    return addresses


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def _resolve(hop: _Hop, via: str) -> list[str]:
    try:
        found = socket.getaddrinfo(hop.host, hop.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else "not a valid host name"
        raise _Failed(f"{via}downloading {hop.shown} failed: {hop.host} could not be resolved ({reason})") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in found:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@contextmanager
def _response(
    hop: _Hop, addresses: list[str], policy: DownloadPolicy, deadline: _Deadline, via: str
) -> Iterator[urllib3.BaseHTTPResponse]:
    """The response's head from the first checked address that takes the connection."""
    headers = {
        "Host": hop.host_header,
        "User-Agent": default_user_agent(),
        "Accept": "image/*, */*;q=0.5",
        "Accept-Encoding": "identity",
    }
    if hop.auth:
        headers.update(make_headers(basic_auth=hop.auth))
    failure: _Failed | None = None
    for address in addresses:
        pool = _pool(hop, address, policy.ca_bundle)
        try:
            left_s = deadline.left_s()
            if left_s <= 0:
                raise deadline.passed(f"{via}downloading {hop.shown}")
            response = pool.urlopen(
                "GET",
                hop.request_uri,
                headers=headers,
                redirect=False,
                retries=False,
                preload_content=False,
                timeout=urllib3.Timeout(connect=left_s, read=left_s),
            )
        except (NewConnectionError, ConnectTimeoutError) as error:
            failure = _Failed(f"{via}downloading {hop.shown} failed: {_connect_problem(error, address, hop.port)}")
            pool.close()
            continue
        except ReadTimeoutError:
            pool.close()
            raise deadline.passed(f"{via}downloading {hop.shown}") from None
        except (HTTPError, OSError) as error:
            pool.close()
            raise _Failed(f"{via}downloading {hop.shown} failed: {_problem(error, hop.host)}") from None
        try:
            yield response
        finally:
            response.release_conn()
            pool.close()
        return
    assert failure is not None
    raise failure


def _pool(hop: _Hop, address: str, ca_bundle: str | None) -> urllib3.HTTPConnectionPool:
    """A pool for one connection to `address` (already checked), with TLS verified against the host name."""
    if hop.scheme == "http":
        return urllib3.HTTPConnectionPool(address, hop.port, retries=False, maxsize=1)
    return urllib3.HTTPSConnectionPool(
        address,
        hop.port,
        retries=False,
        maxsize=1,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_bundle or default_ca_bundle(),
        server_hostname=hop.host,
        assert_hostname=hop.host,
    )


def _body(
    response: urllib3.BaseHTTPResponse, hop: _Hop, policy: DownloadPolicy, deadline: _Deadline, via: str
) -> bytes:
    shown = hop.shown
    if response.status != 200:
        raise _Failed(f"{via}downloading {shown} answered HTTP {response.status}")
    declared = _declared_length(response)
    if declared > policy.max_bytes:
        raise _Failed(f"{via}{shown} is {declared} bytes; {_limit(policy.max_bytes)}")
    body = bytearray()
    try:
        while True:
            left_s = deadline.left_s()
            if left_s <= 0:
                raise deadline.passed(f"{via}downloading {shown}")
            _set_read_timeout(response, left_s)
            chunk = response.read1(CHUNK_BYTES)
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > policy.max_bytes:
                raise _Failed(f"{via}{shown} is larger than {policy.max_bytes} bytes; {_limit(policy.max_bytes)}")
    except ReadTimeoutError:
        raise deadline.passed(f"{via}downloading {shown}") from None
    except (HTTPError, OSError) as error:
        raise _Failed(f"{via}downloading {shown} failed while reading: {_problem(error, hop.host)}") from None


def _declared_length(response: urllib3.BaseHTTPResponse) -> int:
    try:
        return int(response.headers.get("Content-Length") or 0)
    except ValueError:
        return 0


def _set_read_timeout(response: urllib3.BaseHTTPResponse, left_s: float) -> None:
    """Each read may wait only for what is left of the deadline, not the whole limit again."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(left_s, 0.001))


def _connect_problem(error: Exception, address: str, port: int) -> str:
    where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    if not isinstance(error, NewConnectionError):  # (NewConnectionError is a ConnectTimeoutError too)
        return f"connecting to {where} timed out"
    cause = error.__cause__
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else type(error).__name__
    return f"the connection to {where} failed ({reason})"


def _problem(error: BaseException, host: str) -> str:
    """The kind of failure, without the server's words (which could carry what it holds)."""
    certificate = _certificate_error(error)
    if isinstance(certificate, ssl.SSLCertVerificationError):
        return f"its TLS certificate was refused ({certificate.verify_message})"
    if certificate is not None:
        return f"its TLS certificate was refused (it is not for {host})"
    return type(error).__name__


def _certificate_error(error: BaseException | None, depth: int = 0) -> BaseException | None:
    """The certificate failure urllib3 wraps (in its args, cause or context), if that is what failed."""
    if error is None or depth > 4:
        return None
    if isinstance(error, ssl.SSLCertVerificationError | CertificateError):
        return error
    inner = [arg for arg in error.args if isinstance(arg, BaseException)] + [error.__cause__, error.__context__]
    return next((found for found in (_certificate_error(e, depth + 1) for e in inner) if found), None)


def redact(url: str) -> str:
    """The URL without credentials, query and fragment, which often hold signatures or tokens."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    query = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query


def _limit(max_bytes: int) -> str:
    return f"the limit is {max_bytes} bytes (IMAGE_DOWNLOAD_MAX_BYTES)"
