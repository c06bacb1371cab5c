"""The one guarded outbound HTTP client: every fetch of a caller-supplied URL goes here.

A URL from a request must not reach the server's own network (loopback, the VPC, the
instance metadata service at 169.254.169.254), so each host is resolved once, every
address it resolves to must be globally routable, and the connection goes to that vetted
address itself (a second lookup could answer differently: DNS rebinding). Redirects are
followed by hand, each target vetted again. Whatever fails, the caller sees one fixed
message, so the service cannot be used to tell open ports from closed ones; the reason
is logged for the operator.

Operators of private deployments allow named hosts with OUTBOUND_ALLOW, a comma-separated
list of host:port (read at each call).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import certifi
from urllib3 import BaseHTTPResponse
from urllib3.connection import HTTPConnection, HTTPSConnection

from .config import settings

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
TOTAL_TIMEOUT = 10.0  # seconds for the whole fetch, redirects included
CONNECT_TIMEOUT = 5.0
CHUNK = 64 << 10
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = {301, 302, 303, 307, 308}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # embeds an IPv4 address in its low bits


class OutboundError(Exception):
    """The URL could not be fetched; the text never says why (see the module doc)."""


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as written in the URL, lower case, no brackets
    port: int
    path: str  # path and query, as sent in the request line
    address: str  # the vetted IP to connect to


class _Refused(Exception):
    """Internal: the reason a fetch failed, for the log only."""


def public_message(limit: int) -> str:
    return (f"the URL could not be fetched (only public http(s) addresses are allowed, "
            f"up to {limit} bytes)")


def fetch(url: str, limit: int) -> bytes:
    """The body of a GET of url (at most limit bytes); OutboundError on any failure."""
    deadline = time.monotonic() + TOTAL_TIMEOUT
    try:
        for _ in range(MAX_REDIRECTS + 1):
            target = _vet(url)
            status, location, body = _get(target, limit, deadline)
            if status not in _REDIRECTS:
                if status != 200:
                    raise _Refused(f"status {status}")
                return body
            if not location:
                raise _Refused("redirect without Location")
            url = urljoin(url, location)
        raise _Refused(f"more than {MAX_REDIRECTS} redirects")
    except Exception as e:  # noqa: BLE001 - every failure gets the one public message
        log.info("outbound fetch of %r refused: %s: %s", url, type(e).__name__, e)
        raise OutboundError(public_message(limit)) from None


def _allowed() -> set[tuple[str, int]]:
    return set(settings().outbound_allow)


def _vet(url: str) -> _Target:
    """Parse url and resolve its host; refuse unless every address is public (or the
    host:port is allowed by the operator)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _Refused(f"scheme {scheme!r}")
    if parts.username is not None or parts.password is not None or not parts.hostname:
        raise _Refused("credentials or no host")
    host, port = parts.hostname.lower(), parts.port or _DEFAULT_PORTS[scheme]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise _Refused("no address")
    if (host, port) not in _allowed():
        bad = [a for a in addresses if not is_public(a)]
        if bad:
            raise _Refused(f"{host} resolves to non-public {bad[0]}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(scheme, host, port, path, addresses[0])


def is_public(address: str) -> bool:
    """True for a globally routable unicast address; IPv6 forms embedding an IPv4
    address (mapped, 6to4, Teredo, NAT64) are judged by that address too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_multicast or not ip.is_global:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64:
            inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return all(is_public(str(v)) for v in inner if v is not None)
    return True


def _get(t: _Target, limit: int, deadline: float) -> tuple[int, str | None, bytes]:
    """One GET to the vetted address with the URL's Host (and SNI, certificate name).
    A timer shuts the socket at the deadline: socket timeouts alone bound each read,
    not a server dripping one byte at a time."""
    conn = _connection(t, min(CONNECT_TIMEOUT, _remaining(deadline)))
    try:
        conn.connect()
        timer = threading.Timer(_remaining(deadline), _cut, (conn,))
        timer.start()
        try:
            conn.request("GET", t.path, headers=_headers(t), preload_content=False,
                         decode_content=False)
            resp = conn.getresponse()
            if resp.status != 200:
                return resp.status, resp.headers.get("Location"), b""
            return 200, None, _read(resp, limit, deadline)
        finally:
            timer.cancel()
    finally:
        conn.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Refused("time limit")
    return left


def _connection(t: _Target, timeout: float) -> HTTPConnection:
    if t.scheme == "https":
        return HTTPSConnection(t.address, t.port, timeout=timeout, cert_reqs="CERT_REQUIRED",
                               ca_certs=certifi.where(), assert_hostname=t.host,
                               server_hostname=t.host)
    return HTTPConnection(t.address, t.port, timeout=timeout)


def _headers(t: _Target) -> dict[str, str]:
    name = f"[{t.host}]" if ":" in t.host else t.host
    default = t.port == _DEFAULT_PORTS[t.scheme]
    return {"Host": name if default else f"{name}:{t.port}", "Accept-Encoding": "identity",
            "User-Agent": "archive-upload/1"}


def _cut(conn: HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _read(resp: BaseHTTPResponse, limit: int, deadline: float) -> bytes:
    """The body, stopping as soon as it passes limit or the time is up. Undecoded: we
    asked for identity, and inflating a compressed body could pass any cap in one step."""
    if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise _Refused("compressed body")
    if int(resp.headers.get("Content-Length") or 0) > limit:
        raise _Refused("Content-Length over the limit")
    chunks, size = [], 0
    for chunk in resp.stream(CHUNK, decode_content=False):
        size += len(chunk)
        if size > limit:
            raise _Refused("body over the limit")
        chunks.append(chunk)
    _remaining(deadline)  # a body cut short by the timer is no body
    return b"".join(chunks)
