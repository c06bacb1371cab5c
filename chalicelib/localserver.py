"""Serve the Chalice app locally, greedy {name+} routes included.

`chalice local` cannot match greedy path parameters (aws/chalice PR 2012 is unmerged),
yet /data/{path+} and /tap/{rest+} are the contract; this wraps Chalice's own local
gateway with a route matcher that understands them.
"""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    LocalDevServer,
    LocalGateway,
    MatchResult,
    RouteMatcher,
)


class GreedyRouteMatcher(RouteMatcher):
    """Exact routes first, then {name} segments, then {name+} tails."""

    def __init__(self, route_urls: list[str]):
        super().__init__(route_urls)
        self._patterns = []
        for route in sorted(route_urls, key=lambda r: ("+}" in r, -len(r))):
            rx = ""
            for part in route.strip("/").split("/"):
                m = re.fullmatch(r"\{(\w+)(\+?)\}", part)
                if m and m.group(2):  # Chalice looks greedy values up as 'name+'
                    rx += f"/(?P<{m.group(1)}__greedy>.+)"
                elif m:
                    rx += f"/(?P<{m.group(1)}>[^/]+)"
                elif part:
                    rx += "/" + re.escape(part)
            self._patterns.append((route, re.compile((rx or "/") + "/?$")))

    def match_route(self, url: str) -> MatchResult:
        parsed = urlparse(url)
        query = parse_qs(parsed.query, keep_blank_values=True)
        for route, rx in self._patterns:
            m = rx.match(parsed.path)
            if m:
                captured = {k.replace("__greedy", "+"): v for k, v in m.groupdict().items()}
                return MatchResult(route, captured, query)
        raise ValueError(f"No matching route found for: {url}")


class Handler(ChaliceRequestHandler):
    def __init__(self, request, client_address, server, app_object, config):
        self.local_gateway = LocalGateway(app_object, config)
        self.local_gateway.event_converter._route_matcher = GreedyRouteMatcher(
            list(app_object.routes))
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def _parse_payload(self):
        """Chalice reads Content-Length only; Java clients (TOPCAT, taplint) stream
        multipart uploads chunked."""
        if "chunked" not in self.headers.get("transfer-encoding", "").lower():
            return super()._parse_payload()
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            body += self.rfile.read(size)
            self.rfile.readline()
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        headers["Content-Length"] = str(len(body))
        return headers, bytes(body)

    def log_message(self, fmt, *args):  # one line per request, on stderr
        if os.environ.get("QUIET_HTTP") != "1":
            super().log_message(fmt, *args)

    def _generic_handle(self):
        try:
            super()._generic_handle()
        except ValueError as e:  # no route: a clean 404, not a dropped connection
            body = f"Not found: {e}".encode()
            self._send_http_response(404, {"Content-Type": "text/plain"}, body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle


def make_server(archive: str | None, host: str = "127.0.0.1", port: int = 0) -> LocalDevServer:
    """A server for the app on host:port (0: a free port, read server.server_address)."""
    if archive:
        os.environ["ARCHIVE_URL"] = archive
    from chalicelib import runtime

    runtime.reset()
    from chalice.local import LocalChalice

    import app as app_module

    app = app_module.app
    app.__class__ = LocalChalice
    config = Config.create(app_name=app.app_name, lambda_timeout=900)
    return LocalDevServer(app, config, host, port, handler_cls=Handler)


def start_background(archive: str | None, host: str = "127.0.0.1", port: int = 0):
    """Start the server in a thread; returns (server, base_url). Call .shutdown()."""
    srv = make_server(archive, host, port)
    threading.Thread(target=srv.server.serve_forever, daemon=True).start()
    h, p = srv.server.server_address[:2]
    return srv, f"http://{h}:{p}"


def serve(archive: str | None, host: str, port: int) -> None:
    srv = make_server(archive, host, port)
    print(f"Serving the archive {os.environ.get('ARCHIVE_URL', './archive')} on "
          f"http://{host}:{srv.server.server_address[1]}/", flush=True)
    srv.server.serve_forever()
