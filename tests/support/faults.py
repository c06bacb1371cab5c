"""A fault-injecting HTTP proxy in front of moto's S3, for every S3 client at once (boto3,
s3fs, deltalake's object_store, DuckDB's httpfs all follow S3_ENDPOINT_URL).

    with FaultProxy(moto_endpoint) as proxy:
        proxy.inject("GET", "truncate", times=1, when=lambda h: "range" in h)
        os.environ["S3_ENDPOINT_URL"] = proxy.url
        ...

Faults: "503" (S3's SlowDown), "500" (InternalError), "reset" (the connection closes
before any answer), "truncate" (the headers promise the whole body, half of it comes,
then the connection closes), "delay" (answered after `seconds`). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
            b"<Message>We encountered an internal error. Please try again.</Message></Error>")
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class Fault:
    method: str
    kind: str
    times: int
    when: Callable[[dict[str, str]], bool] = lambda headers: True
    path: str = ""  # a substring the request path must contain
    seconds: float = 0.0
    done: int = 0


@dataclass
class Log:
    requests: list[tuple[str, str]] = field(default_factory=list)
    injected: list[tuple[str, str, str]] = field(default_factory=list)


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = urlparse(upstream)
        self.faults: list[Fault] = []
        self.log = Log()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, method: str, kind: str, times: int = 1, path: str = "",
               when: Callable[[dict[str, str]], bool] | None = None,
               seconds: float = 0.0) -> Fault:
        fault = Fault(method.upper(), kind, times, when or (lambda h: True), path, seconds)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """No more faults, and a fresh log."""
        with self._lock:
            self.faults.clear()
            self.log = Log()

    def _pick(self, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self.log.requests.append((method, path))
            for f in self.faults:
                if f.done < f.times and f.method in (method, "*") and f.path in path \
                        and f.when(headers):
                    f.done += 1
                    self.log.injected.append((method, path, f.kind))
                    return f
        return None

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _forward(self) -> None:
                body = self._body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                fault = proxy._pick(self.command, self.path, headers)
                if fault and fault.kind == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault and fault.kind in ("503", "500"):
                    self._answer(int(fault.kind), {"Content-Type": "application/xml"},
                                 SLOWDOWN if fault.kind == "503" else INTERNAL)
                    return
                if fault and fault.kind == "delay":
                    time.sleep(fault.seconds)
                status, out_headers, data = self._upstream(body)
                if fault and fault.kind == "truncate" and len(data) > 1:
                    self.send_response(status)
                    for k, v in out_headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._answer(status, dict(out_headers), data)

            def _upstream(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(proxy.upstream.hostname,
                                                  proxy.upstream.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    drop = HOP if self.command == "HEAD" else HOP | {"content-length"}
                    kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in drop]
                    return resp.status, kept, data
                finally:
                    conn.close()

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if self.command != "HEAD" or "content-length" not in \
                        {k.lower() for k in headers}:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Handler
