"""The local HTTP server at the socket level: framing errors, limits, timeouts,
keep-alive and concurrency, each a regression test for a defect once found."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import pytest

from chalicelib import localserver


def _addr(base: str) -> tuple[str, int]:
    u = urlparse(base)
    return u.hostname or "127.0.0.1", u.port or 80


def _exchange(base: str, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes (or the headers of one answer)."""
    with socket.create_connection(_addr(base), timeout=timeout) as s:
        s.sendall(data)
        return _read_response(s)


def _read_response(s: socket.socket) -> bytes:
    """One response (headers plus Content-Length bytes), or what came before EOF."""
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_unknown_route_is_a_plain_404(server: str) -> None:
    r = _exchange(server, b"GET /nope/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(r) == 404 and r.endswith(b"Not found: /nope/nothing\n")


def test_route_matching_error_is_a_500_without_python_text(
        server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, url: str):
        raise ValueError("invalid literal for int() with base 10: 'secret'")

    monkeypatch.setattr(localserver.GreedyRouteMatcher, "_match", broken)
    r = _exchange(server, b"GET /tap/availability HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status(r) == 500 and b"secret" not in r and b"int()" not in r
