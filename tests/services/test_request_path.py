"""The sync request path (#17): one send per response on new and kept-alive connections,
so no answer waits for the client's delayed ACK; the Lambda handler answers the same."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
from collections import Counter
from urllib.parse import urlencode, urlparse

import pytest
from astropy.io.votable import parse_single_table


@pytest.fixture
def sends(server, monkeypatch):
    """send()/sendall() calls made by the server on its side of each connection (the
    socket whose local port is the server's), counted per connection."""
    port = urlparse(server).port
    counts: Counter = Counter()
    lock = threading.Lock()

    def counting(real):
        def wrapper(self, *args, **kwargs):
            try:
                local, peer = self.getsockname(), self.getpeername()
            except OSError:
                local = peer = None
            if local is not None and local[1] == port:
                with lock:
                    counts[peer] += 1
            return real(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(socket.socket, "send", counting(socket.socket.send))
    monkeypatch.setattr(socket.socket, "sendall", counting(socket.socket.sendall))
    return counts


def _cone_adql(archive) -> str:
    from chalicelib.query.catalogue import Catalogue

    row = Catalogue(archive).query(
        "SELECT s_ra, s_dec FROM ivoa.obscore WHERE s_ra IS NOT NULL "
        "ORDER BY obs_publisher_did LIMIT 1").to_pylist()[0]
    return (f"SELECT obs_publisher_did, s_ra FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', "
            f"{row['s_ra']!r}, {row['s_dec']!r}), s_region) = 1"), row


def _paths(archive) -> list[str]:
    adql, row = _cone_adql(archive)
    tap = "/tap/sync?" + urlencode({"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": adql})
    sia = "/sia/query?" + urlencode({"POS": f"CIRCLE {row['s_ra']} {row['s_dec']} 0.01"})
    return [tap, sia]


def _rows(body: bytes) -> int:
    return len(parse_single_table(io.BytesIO(body)).to_table())


def test_each_response_is_one_send_on_a_kept_alive_connection(server, archive, sends):
    host, port = urlparse(server).hostname, urlparse(server).port
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        for path in _paths(archive) * 2:  # TAP, SIA, then both again on one connection
            before = sum(sends.values())
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200 and not r.will_close, body[:300]
            assert _rows(body) > 0
            assert sum(sends.values()) - before == 1, path  # headers and body together
        assert len(sends) == 1  # all on the one connection
        conn.request("GET", "/tap/availability")
        r = conn.getresponse()
        r.read()
        assert r.status == 200 and sum(sends.values()) == 5
    finally:
        conn.close()


def test_each_response_is_one_send_on_new_connections(server, archive, sends):
    host, port = urlparse(server).hostname, urlparse(server).port
    for path in _paths(archive):
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            assert r.status == 200 and _rows(r.read()) > 0
        finally:
            conn.close()
    assert sorted(sends.values()) == [1, 1]  # two connections, one send each


def test_lambda_handler_answers_the_same_rows_as_the_local_server(server, archive,
                                                                  monkeypatch):
    from urllib.parse import parse_qsl

    import requests

    from chalicelib.lambdas import handlers
    from chalicelib.query import runtime

    monkeypatch.setenv("ARCHIVE_URL", archive.url)
    runtime.reset()
    for path in _paths(archive):
        route, _, qs = path.partition("?")
        query = dict(parse_qsl(qs))
        event = {
            "resource": "/{proxy+}", "path": route, "httpMethod": "GET",
            "headers": {"Host": "abc.execute-api.us-east-1.amazonaws.com"},
            "multiValueHeaders": {}, "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
            "pathParameters": {"proxy": route.lstrip("/")}, "stageVariables": None,
            "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": "GET",
                               "stage": "api", "path": "/api" + route, "requestId": "r-1",
                               "domainName": "abc.execute-api.us-east-1.amazonaws.com"},
            "body": None, "isBase64Encoded": False,
        }
        got = json.loads(json.dumps(handlers.api(event)))  # as the Lambda runtime sends it
        assert got["statusCode"] == 200, got
        body = base64.b64decode(got["body"]) if got.get("isBase64Encoded") else \
            got["body"].encode()
        local = requests.get(server + path, timeout=60)
        assert local.status_code == 200
        assert _rows(body) == _rows(local.content) > 0, route
