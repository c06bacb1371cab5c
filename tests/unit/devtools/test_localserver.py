"""The local HTTP server at the socket level: framing errors, limits, timeouts,
keep-alive and concurrency, each a regression test for a defect once found."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from chalicelib.devtools import localserver


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


def _post(headers: str, body: bytes = b"") -> bytes:
    return (f"POST /tap/sync HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n").encode() + body


@pytest.mark.parametrize("request_bytes, text", [
    (_post("Transfer-Encoding: chunked", b"zz\r\n"), b"malformed chunk size"),
    (_post("Transfer-Encoding: chunked", b"-1\r\n"), b"malformed chunk size"),
    (_post("Content-Length: abc"), b"Content-Length is not a number"),
    (_post("Content-Length: -5"), b"Content-Length is not a number"),
])
def test_malformed_framing_is_400_in_plain_text(server: str, request_bytes: bytes,
                                                text: bytes) -> None:
    r = _exchange(server, request_bytes)
    assert _status(r) == 400 and r.endswith(text + b"\n")
    assert b"invalid literal" not in r and b"text/plain" in r


def test_huge_chunk_size_is_413_not_memory_error(server: str) -> None:
    r = _exchange(server, _post("Transfer-Encoding: chunked", b"FFFFFFFFFFFF\r\n"))
    assert _status(r) == 413 and b"Connection: close" in r


def test_content_length_over_max_body_is_413_before_reading(server: str) -> None:
    r = _exchange(server, _post(f"Content-Length: {localserver.MAX_BODY + 1}"))
    assert _status(r) == 413  # answered although no body byte was sent


def test_chunked_body_over_max_body_is_counted_as_it_arrives(
        server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localserver, "MAX_BODY", 1000)
    chunk = b"258\r\n" + b"x" * 600 + b"\r\n"  # two of these pass 1000 bytes
    r = _exchange(server, _post("Transfer-Encoding: chunked", chunk + chunk))
    assert _status(r) == 413


def test_chunked_body_still_reaches_the_app(server: str) -> None:
    form = b"REQUEST=doQuery&LANG=ADQL&QUERY=SELECT+TOP+1+*+FROM+TAP_SCHEMA.tables"
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(form), form)
    r = _exchange(server, _post("Transfer-Encoding: chunked\r\nConnection: close\r\n"
                                "Content-Type: application/x-www-form-urlencoded", body))
    assert _status(r) == 200 and b"<VOTABLE" in r


@pytest.fixture
def short_timeout() -> Iterator[float]:
    """A 1 s read timeout for connections opened meanwhile (the handler reads it at setup)."""
    old = localserver.Handler.timeout
    localserver.Handler.timeout = 1.0
    yield 1.0
    localserver.Handler.timeout = old


def _request_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "process_request_thread" in t.name}


@pytest.mark.parametrize("request_bytes", [
    _post("Content-Length: 10", b"abc"),
    _post("Transfer-Encoding: chunked", b"3\r\nabc\r\n"),  # no next chunk size
])
def test_body_shorter_than_content_length_times_out_and_frees_the_thread(
        server: str, short_timeout: float, request_bytes: bytes) -> None:
    before = _request_threads()
    start = time.monotonic()
    with socket.create_connection(_addr(server), timeout=10) as s:
        s.sendall(request_bytes)
        r = _read_response(s)
        assert _status(r) == 408 and r.endswith(b"request body not received in time\n")
        assert s.recv(1) == b""  # and the server closed the connection
    assert time.monotonic() - start < short_timeout + 5
    deadline = time.monotonic() + 5
    while _request_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _request_threads() - before


def test_stalled_request_line_times_out(server: str, short_timeout: float) -> None:
    with socket.create_connection(_addr(server), timeout=10) as s:
        s.sendall(b"GET /tap/avail")
        assert s.recv(1) == b""  # closed: http.server drops a request that times out


def test_kept_alive_connection_serves_requests_in_a_row(server: str) -> None:
    conn = http.client.HTTPConnection(*_addr(server), timeout=10)
    try:
        for path in ["/tap/availability", "/nope", "/tap/availability", "/tap/availability"]:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            if path == "/nope":
                assert r.status == 404 and body == b"Not found: /nope\n"
            else:
                assert r.status == 200 and b"<vosi:available>true" in body
            assert not r.will_close
    finally:
        conn.close()


def test_expect_100_continue_is_sent_before_the_body(server: str) -> None:
    with socket.create_connection(_addr(server), timeout=10) as s:
        s.sendall(_post("Expect: 100-continue\r\nContent-Length: 3"))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"a=b")
        assert _status(_read_response(s)) == 400  # the app's answer: no REQUEST


def test_expect_100_continue_over_max_body_is_refused_at_once(server: str) -> None:
    r = _exchange(server, _post("Expect: 100-continue\r\n"
                                f"Content-Length: {localserver.MAX_BODY + 1}"))
    assert _status(r) == 413


class _CountingSocket(socket.socket):
    """Counts the sends a response takes."""

    sends = 0

    def send(self, data, flags: int = 0) -> int:
        self.sends += 1
        return super().send(data, flags)

    def sendall(self, data, flags: int = 0) -> None:
        self.sends += 1
        super().sendall(data, flags)


def test_a_response_is_one_send_with_nagle_off() -> None:
    from chalice.config import Config
    from chalice.local import LocalChalice

    app = LocalChalice("tiny")
    app.route("/ping")(lambda: {"pong": True})
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()[:2], timeout=10) as client:
        conn, addr = listener.accept()
        sock = _CountingSocket(fileno=conn.detach())
        with sock:
            client.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            localserver.Handler(sock, addr, None, app, Config.create(app_name="tiny"))
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.sends == 1
        r = _read_response(client)
    assert _status(r) == 200 and r.endswith(b'{"pong":true}')


def test_a_stalled_request_does_not_block_another(server: str) -> None:
    with socket.create_connection(_addr(server), timeout=10) as stalled:
        stalled.sendall(b"POST /tap/sync HTTP/1.1\r\nHost: x\r\nContent-Len")  # and stops
        start = time.monotonic()
        r = _exchange(server, b"GET /tap/availability HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n", timeout=5)
        assert _status(r) == 200 and time.monotonic() - start < 5
