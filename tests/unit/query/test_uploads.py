"""TAP UPLOAD: the guarded outbound fetch (no SSRF), every VOTable datatype, the limits.

The web server here binds 127.0.0.1 on a port picked at run time and is stopped at the
end; it is reachable only because the tests allow it with OUTBOUND_ALLOW.
"""

from __future__ import annotations

import http.server
import io
import socket
import threading
from contextlib import closing
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from astropy.io.votable import from_table, parse_single_table
from astropy.table import Column, MaskedColumn, Table

from chalicelib import config, outbound
from chalicelib.lake.storage import Archive
from chalicelib.query import catalogue
from chalicelib.query import uploads as tapupload
from chalicelib.services.tap import sync as tap
from chalicelib.web.params import Params, Upload

LIMIT = 1 << 20


def _votable(table: Table, fmt: str = "tabledata") -> bytes:
    buf = io.BytesIO()
    from_table(table).to_xml(buf, tabledata_format=fmt)
    return buf.getvalue()


SMALL = _votable(Table({"n": np.array([1, 2, 3], dtype=np.int32), "s": ["a", "b", "c"]}))


class _Handler(http.server.BaseHTTPRequestHandler):
    """/table.xml: a VOTable; /redirect?to=URL: a 302; /big?n=N, /stream?n=N: N bytes
    with and without Content-Length; else 404."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.hosts.append(self.headers["Host"])
        if url.path == "/table.xml":
            self._send(200, SMALL)
        elif url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"])
            self.end_headers()
        elif url.path == "/big":
            self._send(200, b"x" * int(query["n"]))
        elif url.path == "/stream":  # no Content-Length: the cap must hold while reading
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * int(query["n"]))
        else:
            self._send(404, b"no such thing")

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader hangs up at its size cap while we write: what is tested

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def web():
    """A tiny http.server on 127.0.0.1 (a free port), in a thread; yields its base URL."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.hosts = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def allowed(web, monkeypatch) -> str:
    """The web server's base URL, allowed by the operator's list."""
    base, _ = web
    monkeypatch.setenv("OUTBOUND_ALLOW", f"elsewhere.test:80, {urlsplit(base).netloc}")
    config.reset()
    return base


@pytest.fixture(scope="module")
def cat(tmp_path_factory) -> catalogue.Catalogue:
    """A catalogue over an empty archive: the uploads are the only tables with rows."""
    return catalogue.Catalogue(Archive(str(tmp_path_factory.mktemp("empty-archive"))))


def _sync(monkeypatch, cat, query: str, uploads: list[str], files: dict[str, bytes] = ()):
    """tap.sync (the reply the HTTP layer sends) for a query with UPLOAD parameters."""
    monkeypatch.setattr(tap.runtime, "catalogue", lambda base: cat)
    pairs = [("LANG", "ADQL"), ("QUERY", query)] + [("UPLOAD", u) for u in uploads]
    parts = {k: Upload(k, v) for k, v in dict(files).items()}
    return tap.sync(Params(pairs, parts), "http://tap.test")


def _error(reply) -> str:
    assert reply.status == 400, reply.body[:500]
    body = reply.body.decode()
    assert 'name="QUERY_STATUS" value="ERROR"' in body
    return body


def _closed_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once it is closed


# ---- 1. UPLOAD by URL: no server-side request forgery -------------------------------------

REFUSED = ["http://127.0.0.1/", "http://127.0.0.2:8080/x", "http://[::1]/", "http://10.0.0.7/",
           "http://169.254.169.254/latest/meta-data/", "http://localhost/", "file:///etc/passwd",
           "ftp://ftp.example.org/t.xml", "http://2130706433/", "http://[::ffff:127.0.0.1]/",
           "http://100.64.0.1/", "http://[fd00:ec2::254]/", "http://0.0.0.0/",
           "http://user@8.8.8.8/"]


@pytest.mark.parametrize("url", REFUSED)
def test_ssrf_private_and_odd_urls_are_refused_with_one_text(url):
    with pytest.raises(outbound.OutboundError) as e:
        outbound.fetch(url, LIMIT)
    assert str(e.value) == outbound.public_message(LIMIT)


def test_ssrf_addresses_embedding_private_ipv4_are_not_public():
    private = ["::ffff:10.0.0.1", "2002:7f00:1::1", "64:ff9b::a9fe:a9fe", "fe80::1%lo",
               "224.0.0.1", "ff0e::1", "240.0.0.1", "192.168.1.1", "172.16.0.1", "::"]
    assert not any(outbound.is_public(a) for a in private)
    assert all(outbound.is_public(a) for a in ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808"])


def test_ssrf_upload_error_is_the_same_for_every_refusal(monkeypatch, cat, web):
    """Loopback open port, loopback closed port, metadata and file: all answer one text."""
    base, _ = web
    urls = [f"{base}/table.xml", f"http://127.0.0.1:{_closed_port()}/table.xml",
            "http://169.254.169.254/latest/meta-data/", "http://localhost/x",
            "file:///etc/passwd"]
    texts = set()
    for url in urls:
        reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t", [f"t,{url}"])
        texts.add(_error(reply).split('value="ERROR">', 1)[1].split("<", 1)[0])
    assert texts == {f"UPLOAD t: {outbound.public_message(tap.UPLOAD_LIMIT)}"}, texts


def test_ssrf_open_and_closed_allowed_ports_look_alike(allowed, monkeypatch):
    """Even where the operator allows loopback, the text does not tell a closed port from
    an open one answering 404."""
    closed = _closed_port()
    monkeypatch.setenv("OUTBOUND_ALLOW", f"{urlsplit(allowed).netloc},127.0.0.1:{closed}")
    config.reset()
    texts = set()
    for url in (f"{allowed}/nothing-here", f"http://127.0.0.1:{closed}/table.xml"):
        with pytest.raises(outbound.OutboundError) as e:
            outbound.fetch(url, LIMIT)
        texts.add(str(e.value))
    assert texts == {outbound.public_message(LIMIT)}


def test_ssrf_redirect_to_a_private_address_is_refused(allowed):
    assert outbound.fetch(f"{allowed}/redirect?to=/table.xml", LIMIT) == SMALL
    for target in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.2/",
                   "file:///etc/passwd"):
        with pytest.raises(outbound.OutboundError):
            outbound.fetch(f"{allowed}/redirect?to={target}", LIMIT)


def test_ssrf_redirects_are_followed_at_most_three_times(allowed):
    def chain(n: int) -> str:
        url = "/table.xml"
        for _ in range(n):
            url = f"{allowed}/redirect?to={requests.utils.quote(url, safe='')}"
        return url

    assert outbound.fetch(chain(3), LIMIT) == SMALL
    with pytest.raises(outbound.OutboundError):
        outbound.fetch(chain(4), LIMIT)


def test_ssrf_the_vetted_address_is_the_one_connected(allowed, web, monkeypatch):
    """The name is resolved once (DNS rebinding cannot swap the address after the check)
    and the request still carries the URL's host."""
    port = urlsplit(allowed).port
    real, calls = socket.getaddrinfo, []

    def resolve(host, *args, **kw):
        if host == "rebind.test":
            calls.append(host)
            host = "127.0.0.1" if len(calls) == 1 else "10.9.9.9"
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setenv("OUTBOUND_ALLOW", f"rebind.test:{port}")
    config.reset()
    assert outbound.fetch(f"http://rebind.test:{port}/table.xml", LIMIT) == SMALL
    assert calls == ["rebind.test"] and web[1].hosts[-1] == f"rebind.test:{port}"


def test_ssrf_allow_list_is_exact_host_and_port(web, monkeypatch):
    base, _ = web
    port = urlsplit(base).port
    monkeypatch.setenv("OUTBOUND_ALLOW", f"127.0.0.1:{port + 1},localhost:{port}")
    config.reset()
    with pytest.raises(outbound.OutboundError):
        outbound.fetch(f"{base}/table.xml", LIMIT)


@pytest.mark.parametrize("path", ["big", "stream"])
def test_ssrf_size_cap_holds_while_streaming(allowed, path):
    assert len(outbound.fetch(f"{allowed}/{path}?n=1000", 1000)) == 1000
    with pytest.raises(outbound.OutboundError):
        outbound.fetch(f"{allowed}/{path}?n={(1 << 20) + 1}", 1000)
    with pytest.raises(outbound.OutboundError):
        outbound.fetch(f"{allowed}/{path}?n=1001", 1000)


def test_ssrf_allowed_url_upload_works_end_to_end(allowed):
    tables, described = tapupload.load_uploads(
        Params([("UPLOAD", f"Mine,{allowed}/table.xml")]), LIMIT)
    assert tables["mine"].to_pydict() == {"n": [1, 2, 3], "s": ["a", "b", "c"]}
    assert described["mine"].name == "TAP_UPLOAD.mine"


def test_ssrf_allowed_url_upload_over_http(allowed, server):
    """Through the real server: a URL upload joined in a query."""
    r = requests.post(server + "/tap/sync", data={
        "LANG": "ADQL", "QUERY": "SELECT n, s FROM TAP_UPLOAD.t ORDER BY n DESC",
        "UPLOAD": f"t,{allowed}/table.xml", "RESPONSEFORMAT": "csv"})
    assert r.status_code == 200, r.text[:500]
    assert r.text.split() == ["n,s", "3,c", "2,b", "1,a"]


# ---- 2. every VOTable datatype uploads (arrays and complex answered 500) -----------------


def _result(reply) -> Table:
    assert reply.status == 200, reply.body[:800]
    return parse_single_table(io.BytesIO(reply.body)).to_table()


def _fields(reply) -> dict[str, tuple[str, str | None]]:
    return {f.name: (f.datatype, f.arraysize)
            for f in parse_single_table(io.BytesIO(reply.body)).fields}


def test_array_and_complex_columns_upload_and_query(monkeypatch, cat):
    up = Table()
    up["a3"] = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)  # int, arraysize="3"
    up["iv"] = Column([np.array([7, 8], np.int32), np.array([], np.int32)], dtype=object)
    up["av"] = Column([np.array([1.5, 2.5]), np.array([3.0])], dtype=object)  # double[*]
    up["fc"] = MaskedColumn(np.array([1 + 2j, 0], np.complex64), mask=[False, True])
    up["dc"] = np.array([[1 + 2j, 3j], [0.5, -1]], np.complex128)  # doubleComplex[2]
    doc = _votable(up)
    assert b'datatype="int" name="a3"' in doc.replace(b'arraysize="3" ', b"")
    reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t", ["t,param:t"], {"t": doc})
    got = _result(reply)
    assert [list(v) for v in got["a3"]] == [[1, 2, 3], [4, 5, 6]]
    assert [list(v) for v in got["iv"]] == [[7, 8], []]
    assert [list(v) for v in got["av"]] == [[1.5, 2.5], [3.0]]
    assert list(np.ma.filled(got["fc"], "")) == ["1.0 2.0", ""]  # complex: 're im' text
    assert list(got["dc"]) == ["1.0 2.0 0.0 3.0", "0.5 0.0 -1.0 0.0"]
    assert _fields(reply) == {"a3": ("int", "*"), "iv": ("int", "*"), "av": ("double", "*"),
                              "fc": ("char", "*"), "dc": ("char", "*")}


@pytest.mark.parametrize("fmt", ["tabledata", "binary2"])
def test_every_scalar_datatype_uploads(monkeypatch, cat, fmt):
    up = Table()
    up["bit"] = np.array([True, False])  # astropy writes booleans as bit
    up["bits"] = np.array([[True, False, True], [False, False, False]])
    up["ub"] = MaskedColumn(np.array([200, 0], np.uint8), mask=[False, True])
    up["sh"] = np.array([-3, 4], np.int16)
    up["l"] = MaskedColumn(np.array([2**53 + 1, 0], np.int64), mask=[False, True])
    up["f"] = MaskedColumn(np.array([1.25, 0], np.float32), mask=[False, True])
    up["s"] = np.array(["abc", "de"])
    up["u"] = np.array(["é", "ü"])
    up["m"] = np.arange(8, dtype=np.int32).reshape(2, 2, 2)  # int, arraysize="2x2"
    doc = _votable(up, fmt)
    reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t ORDER BY sh", ["t,param:t"],
                  {"t": doc})
    got = _result(reply)
    assert list(got["bit"]) == [True, False] and list(got["bits"]) == ["T F T", "F F F"]
    assert got["ub"][0] == 200 and got["ub"].mask[1]
    assert list(got["sh"]) == [-3, 4] and got["l"][0] == 2**53 + 1 and got["l"].mask[1]
    assert got["f"][0] == 1.25 and got["f"].mask[1]
    assert list(got["s"]) == ["abc", "de"] and list(got["u"]) == ["é", "ü"]
    assert [list(v) for v in got["m"]] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    fields = _fields(reply)
    assert fields["ub"] == ("unsignedByte", None) and fields["l"] == ("long", None)
    assert fields["bit"] == ("boolean", None) and fields["m"] == ("int", "*")


def test_boolean_with_nulls_and_empty_uploads(monkeypatch, cat):
    doc = b"""<?xml version="1.0"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>
<FIELD name="b" datatype="boolean"/><FIELD name="v" datatype="short" arraysize="*"/>
<FIELD name="c" datatype="char" arraysize="*"/>
<DATA><TABLEDATA><TR><TD>T</TD><TD>1 2</TD><TD>x</TD></TR><TR><TD>?</TD><TD/><TD/></TR>
<TR><TD>F</TD><TD>3</TD><TD>y</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"""
    reply = _sync(monkeypatch, cat, "SELECT b, v, c FROM TAP_UPLOAD.t", ["t,param:t"],
                  {"t": doc})
    got = _result(reply)
    assert list(got["b"].mask) == [False, True, False] and got["b"][0] and not got["b"][2]
    assert [list(v) for v in got["v"]] == [[1, 2], [], [3]]
    empty = Table({"x": np.array([], np.int32), "y": np.zeros((0, 3))})
    reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.e", ["e,param:e"],
                  {"e": _votable(empty)})
    assert len(_result(reply)) == 0


def test_array_columns_can_be_used_in_adql(monkeypatch, cat):
    """A DALI point uploaded as double[2] xtype=point is a POINT; other columns filter."""
    up = Table({"id": np.array([1, 2], np.int32),
                "pos": np.array([[10.0, 20.0], [200.0, -40.0]]),
                "flags": np.array([[1, 0], [0, 1]], np.int16)})
    vot = from_table(up)
    vot.get_first_table().get_field_by_id("pos").xtype = "point"
    buf = io.BytesIO()
    vot.to_xml(buf)
    reply = _sync(monkeypatch, cat, "SELECT id, flags FROM TAP_UPLOAD.t WHERE "
                  "CONTAINS(pos, CIRCLE(10, 20, 1)) = 1", ["t,param:t"], {"t": buf.getvalue()})
    got = _result(reply)
    assert list(got["id"]) == [1] and list(got["flags"][0]) == [1, 0]


def test_array_upload_over_http_with_pyvo(server):
    import pyvo

    up = Table({"n": np.array([1, 2], np.int32), "a": np.array([[1, 2, 3], [4, 5, 6]],
                                                                  np.int64)})
    res = pyvo.dal.TAPService(server + "/tap").run_sync(
        "SELECT * FROM TAP_UPLOAD.t ORDER BY n", uploads={"t": up})
    assert [list(v) for v in res.to_table()["a"]] == [[1, 2, 3], [4, 5, 6]]


def test_column_names_repeating_in_another_case_are_refused(monkeypatch, cat):
    doc = _votable(Table({"ra": [1.0], "RA": [2.0]}))
    reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t", ["t,param:t"], {"t": doc})
    assert "unique" in _error(reply)


# ---- 3. limits, checked before the work and named in the error ---------------------------


def _tabledata(fields: int, rows: int, nrows: str = "") -> bytes:
    head = "".join(f'<FIELD name="c{i}" datatype="short"/>' for i in range(fields))
    row = "<TR>" + "<TD>1</TD>" * fields + "</TR>"
    return (f'<?xml version="1.0"?><VOTABLE version="1.4" '
            f'xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE{nrows}>{head}'
            f"<DATA><TABLEDATA>").encode() + row.encode() * rows + \
        b"</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"


@pytest.fixture
def no_parsing(monkeypatch):
    """Fails a test whose upload reaches astropy's parser."""
    import astropy.io.votable

    def refuse(*args, **kw):
        raise AssertionError("the upload was parsed")

    monkeypatch.setattr(astropy.io.votable, "parse_single_table", refuse)


def test_upload_max_rows_refused_before_parsing(monkeypatch, cat, no_parsing):
    doc = _tabledata(1, tapupload.UPLOAD_MAX_ROWS + 1)
    assert tapupload.UPLOAD_MAX_ROWS == 1_000_000 and len(doc) < tap.UPLOAD_LIMIT
    reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t", ["t,param:t"], {"t": doc})
    assert "UPLOAD_MAX_ROWS) is 1000000" in _error(reply)
    reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t", ["t,param:t"],
                  {"t": _tabledata(1, 1, ' nrows="2000000"')})
    assert "2000000 rows" in _error(reply)


def test_upload_max_columns_refused_before_parsing(monkeypatch, cat, no_parsing):
    doc = _tabledata(tapupload.UPLOAD_MAX_COLUMNS + 1, 1)
    reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t", ["t,param:t"], {"t": doc})
    assert "1001 columns; the limit (UPLOAD_MAX_COLUMNS) is 1000" in _error(reply)


def test_upload_limits_hold_for_binary_tables(monkeypatch, cat):
    """BINARY2 rows cannot be counted unparsed: refused after parsing, before conversion."""
    monkeypatch.setattr(tapupload, "UPLOAD_MAX_ROWS", 4)
    monkeypatch.setattr(tapupload, "UPLOAD_MAX_COLUMNS", 2)
    monkeypatch.setattr(tapupload, "_column", lambda *a: pytest.fail("converted"))
    wide, tall = Table({"a": [1], "b": [2], "c": [3]}), Table({"a": np.arange(5)})
    for table, message in ((wide, "UPLOAD_MAX_COLUMNS) is 2"), (tall, "UPLOAD_MAX_ROWS) is 4")):
        reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t", ["t,param:t"],
                      {"t": _votable(table, "binary2")})
        assert message in _error(reply)


def test_upload_max_tables_refused_before_any_fetch(monkeypatch, cat, allowed, web):
    n = tapupload.UPLOAD_MAX_TABLES + 1
    before = len(web[1].hosts)
    uploads = [";".join(f"t{i},{allowed}/table.xml" for i in range(n))]
    reply = _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t0", uploads)
    assert "11 tables; the limit (UPLOAD_MAX_TABLES) is 10" in _error(reply)
    assert len(web[1].hosts) == before
    ten = [f"t{i},{allowed}/table.xml" for i in range(n - 1)]
    assert _sync(monkeypatch, cat, "SELECT * FROM TAP_UPLOAD.t9", ten).status == 200
