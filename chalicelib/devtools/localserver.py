"""Serve the Chalice app locally, greedy {name+} routes included.

`chalice local` cannot match greedy path parameters (aws/chalice PR 2012 is unmerged),
yet /data/{path+} and /tap/{rest+} are the contract; this wraps Chalice's own local
gateway with a route matcher that understands them.
"""

from __future__ import annotations

import os
import re
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    LocalDevServer,
    LocalGateway,
    MatchResult,
    RouteMatcher,
    ThreadedHTTPServer,
)

from ..web.routes import resolve_route

MAX_BODY = 64 * 1024 * 1024  # request bodies above this are refused with 413
READ_TIMEOUT = 30.0  # seconds a socket read may wait; then the connection is dropped
_PIECE = 1 << 20  # bodies are read this much at a time, never one size-long allocation
_LINE = 65537  # longest chunk-size or trailer line read, like http.server's request line
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class HttpError(Exception):
    """A request the server refuses before the app sees it; the text is the answer."""

    def __init__(self, status: int, text: str):
        super().__init__(status, text)
        self.status, self.text = status, text


@contextmanager
def _body_timeout() -> Iterator[None]:
    """A body read that outlasts the socket timeout is answered 408, not just dropped."""
    try:
        yield
    except TimeoutError:
        raise HttpError(408, "request body not received in time") from None


class NoRoute(LookupError):
    """No route matches the path: a 404. Not a ValueError, which Chalice's gateway turns
    into a 403 and which int() and friends raise for unrelated reasons."""


class RouteError(RuntimeError):
    """Route matching failed for another reason: a 500, never a 404 or a 403."""


class GreedyRouteMatcher(RouteMatcher):
    """Exact routes first, then {name} segments, then greedy {name+} tails: the same
    matching as the Lambda entry point (web.routes.resolve_route)."""

    def __init__(self, route_urls: list[str]):
        super().__init__(route_urls)
        self._routes = tuple(route_urls)

    def match_route(self, url: str) -> MatchResult:
        try:
            return self._match(url)
        except NoRoute:
            raise
        except Exception as e:  # the gateway would answer a ValueError with a 403
            raise RouteError(url) from e

    def _match(self, url: str) -> MatchResult:
        parsed = urlparse(url)
        query = parse_qs(parsed.query, keep_blank_values=True)
        found = resolve_route(self._routes, parsed.path, greedy_suffix="+")  # Chalice's name
        if found is None:
            raise NoRoute(parsed.path)
        return MatchResult(found[0], found[1], query)


class Handler(ChaliceRequestHandler):
    # StreamRequestHandler.setup applies it to the socket: a client that stalls (a body
    # shorter than its Content-Length, an idle kept-alive connection) frees its thread.
    timeout = READ_TIMEOUT
    # A response went out as headers then body in separate sends; on a kept-alive
    # connection Nagle held the body until the client's delayed ACK, ~40 ms a request.
    # Buffer the writes (handle_one_request flushes once per response) and set
    # TCP_NODELAY so what is still split (large bodies, send_error) is not held either.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    # what http.server itself answers (a request line over 64 KiB: 414, a malformed
    # request: 400) is plain text like the rest of the local server's refusals, not HTML
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "Error: %(code)d %(message)s\n"

    def __init__(self, request, client_address, server, app_object, config):
        self.local_gateway = LocalGateway(app_object, config)
        self.local_gateway.event_converter._route_matcher = GreedyRouteMatcher(
            list(app_object.routes))
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def _parse_payload(self) -> tuple[dict[str, str], bytes | None]:
        """Chalice reads Content-Length only; Java clients (TOPCAT, taplint) stream
        multipart uploads chunked. Both are checked against MAX_BODY before reading."""
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
            headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
            headers["Content-Length"] = str(len(body))
            return headers, body
        length = self._content_length()
        return headers, self._read_exact(length) if length else None

    def _content_length(self) -> int:
        value = self.headers.get("content-length", "0").strip()
        if not value.isdigit():  # also refuses a sign, which int() would accept
            raise HttpError(400, "Content-Length is not a number")
        if int(value) > MAX_BODY:
            raise HttpError(413, f"request body over {MAX_BODY} bytes")
        return int(value)

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while size := self._chunk_size():
            if len(body) + size > MAX_BODY:  # counted as chunks arrive, before reading
                raise HttpError(413, f"request body over {MAX_BODY} bytes")
            body += self._read_exact(size)
            if self._readline() not in (b"\r\n", b"\n"):
                raise HttpError(400, "chunk not followed by CRLF")
        while self._readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return bytes(body)

    def _chunk_size(self) -> int:
        line = self._readline().split(b";")[0].strip()  # drop chunk extensions
        if not _HEX.fullmatch(line):
            raise HttpError(400, "malformed chunk size")
        return int(line, 16)

    def _readline(self) -> bytes:
        with _body_timeout():
            return self.rfile.readline(_LINE)

    def _read_exact(self, n: int) -> bytes:
        """n bytes, read in pieces so a lying size costs no memory up front."""
        data = bytearray()
        while len(data) < n:
            with _body_timeout():
                piece = self.rfile.read(min(_PIECE, n - len(data)))
            if not piece:
                raise HttpError(400, "request body shorter than announced")
            data += piece
        return bytes(data)

    def handle_expect_100(self) -> bool:
        """Refuse a body over MAX_BODY before the client sends it; flush the 100
        Continue, which the buffered wfile would otherwise keep until the answer."""
        length = self.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > MAX_BODY:
            return True  # no 100: _content_length answers 413
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def log_message(self, fmt, *args):  # one line per request, on stderr
        if os.environ.get("QUIET_HTTP") != "1":
            super().log_message(fmt, *args)

    def _generic_handle(self) -> None:
        try:
            self._trusted_headers()
            super()._generic_handle()
        except HttpError as e:  # the rest of the request is unread or unframed: close
            self._reply(e.status, e.text, close=True)
        except NoRoute as e:  # like the deployed API (handlers._not_found)
            self._reply(404, f"Not found: {e.args[0]}")
        except OSError:
            raise  # the connection broke: nobody to answer
        except Exception:  # on stderr even when QUIET_HTTP; the client never sees it
            traceback.print_exc()
            self._reply(500, "Internal server error", close=True)

    def _trusted_headers(self) -> None:
        """Headers the app trusts are written here, never taken from the caller: Host
        becomes the address the connection arrived on (web.base_url reads Host locally,
        and a caller's Host must never reach the URLs we hand out), X-Client-Address the
        peer's address (what rate limits count against)."""
        host, port = self.connection.getsockname()[:2]
        del self.headers["Host"], self.headers["X-Client-Address"]
        self.headers["Host"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.headers["X-Client-Address"] = str(self.client_address[0])

    def _reply(self, code: int, text: str, close: bool = False) -> None:
        """A plain-text answer; close when the request stream can no longer be trusted."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if close:
            headers["Connection"] = "close"  # send_header then sets close_connection
        self._send_http_response(code, headers, (text + "\n").encode())

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle


def make_server(archive: str | None, host: str = "127.0.0.1", port: int = 0) -> LocalDevServer:
    """A server for the app on host:port (0: a free port, read server.server_address)."""
    if archive:
        os.environ["ARCHIVE_URL"] = archive
    from chalicelib.query import runtime

    runtime.reset()
    from chalice.local import LocalChalice

    import app as app_module

    app = app_module.app
    app.__class__ = LocalChalice
    warm(f"http://{host}:{port}" if port else None)
    config = Config.create(app_name=app.app_name, lambda_timeout=900)
    # A thread per connection (Chalice's default, named so it stays so): a slow or
    # stalled client never blocks another.
    return LocalDevServer(app, config, host, port, handler_cls=Handler,
                          server_cls=ThreadedHTTPServer)


def warm(base: str | None = None) -> None:
    """Pay the request path's first-use costs before the port opens, not in the first
    request after a restart: the TAP and SIA modules (imported per route, for the
    Lambda's sake), sqlglot's first translation and the numba kernels (#17: the first
    TAP query after a restart waited 1-2 s for them); with the base URL known (a fixed
    port), also the catalogue that will serve it, ivoa.obscore opened."""
    from chalicelib.geometry import sky  # deferred: warm-up only
    from chalicelib.query.adql import translate  # deferred: warm-up only
    from chalicelib.services import sia  # noqa: F401  # deferred: warm-up only
    from chalicelib.services.tap import routes  # noqa: F401  # deferred: warm-up only
    from chalicelib.services.tap.meta import all_tables  # deferred: warm-up only

    sky.kernels_ready()  # loads in a thread while the translation runs
    translate("SELECT TOP 1 obs_publisher_did FROM ivoa.obscore WHERE CONTAINS("
              "POINT('ICRS', 10.0, 20.0), s_region) = 1 AND DISTANCE(POINT('ICRS', s_ra, "
              "s_dec), POINT('ICRS', 10.0, 20.0)) < 1", all_tables())
    sky.kernels_ready(wait=True)
    if base is None:
        return
    from chalicelib.config import settings  # deferred: warm-up only
    from chalicelib.query import runtime  # deferred: warm-up only

    try:
        cat = runtime.catalogue(settings().public_url or base)
        cat.query(translate("SELECT TOP 1 obs_publisher_did FROM ivoa.obscore WHERE "
                            "CONTAINS(POINT('ICRS', 10.0, 20.0), s_region) = 1",
                            all_tables(), box_sql=cat.box_sql).sql)
    except Exception:  # a warm-up never keeps the server from starting
        traceback.print_exc()


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
