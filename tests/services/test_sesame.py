"""The portal's configurable name resolver: SESAME_URL pointing at a fake Sesame on
127.0.0.1 that answers in Sesame's own XML format (the -oxp output of
cds.unistra.fr/cgi-bin/nph-sesame, as it comes: Resolver blocks per database, an INFO
'*** Nothing found ***' for unknown names). No internet."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

from chalicelib import config
from chalicelib.services import names, portal, sesame

# Real Sesame answers (-oxp/SNV), as the service writes them.
FOUND = """<?xml version="1.0" encoding="UTF-8"?>
<Sesame xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:noNamespaceSchemaLocation="http://vizier.u-strasbg.fr/xml/sesame_4x.xsd">
<Target option="SNV">
  <name>{name}</name>
  <!-- Q24770814 #1 -->
  <Resolver name="S=Simbad (via url):    1">
    <INFO>from cache</INFO>
    <!--delay: 0ms [2] -->
    <otype>{otype}</otype>
    <jpos>{jpos}</jpos>
    <jradeg>{ra}</jradeg>
    <jdedeg>{dec}</jdedeg>
    <refPos>2006AJ....131.1163S</refPos>
    <errRAmas>5</errRAmas><errDEmas>5</errDEmas>
    <oname>{oname}</oname>
    <nrefs>12573</nrefs>
  </Resolver>
</Target>
</Sesame>
<!-- - ====Done (2019-Feb-05,21:35:03z)====  -->
"""
NOTHING = """<?xml version="1.0" encoding="UTF-8"?>
<Sesame xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:noNamespaceSchemaLocation="http://vizier.u-strasbg.fr/xml/sesame_4x.xsd">
<Target option="SNV">
<name>{name}</name>
<!--  Q24770845 #1  -->
<INFO>*** Nothing found ***</INFO>
</Target>
</Sesame>
<!-- - ====Done (2019-Feb-05,21:35:26z)====  -->
"""
KNOWN = {  # SIMBAD's positions of these objects
    "VEGA": dict(otype="PM*", jpos="18:36:56.33 +38:47:01.2", ra="279.23473479",
                 dec="+38.78368896", oname="* alf Lyr"),
    "M31": dict(otype="AGN", jpos="00:42:44.33 +41:16:07.5", ra="010.68470833",
                dec="+41.26875000", oname="M  31"),
}


@pytest.fixture
def fake_sesame(monkeypatch):
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            parts = urlsplit(self.path)
            name = unquote(parts.query)
            asked.append(f"{parts.path}?{name}")
            if parts.path != "/cgi-bin/nph-sesame/-oxp/SNV":
                self.send_error(404)
                return
            hit = KNOWN.get(" ".join(name.upper().split()).replace(" ", ""))
            body = (FOUND.format(name=name, **hit) if hit else NOTHING.format(name=name))
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    port = srv.server_address[1]
    monkeypatch.setenv("SESAME_URL", f"http://127.0.0.1:{port}/cgi-bin/nph-sesame/-oxp/SNV")
    monkeypatch.setenv("OUTBOUND_ALLOW", f"127.0.0.1:{port}")
    config.reset()
    sesame.clear_cache()
    yield asked
    srv.shutdown()
    srv.server_close()
    sesame.clear_cache()


def test_sesame_is_used_when_configured(fake_sesame) -> None:
    vega = portal.parse_position("Vega")  # not in the shipped table
    assert (vega["ra"], vega["dec"]) == pytest.approx((279.23473479, 38.78368896), abs=1e-6)
    assert vega["name"] == "* alf Lyr" and vega["source"].startswith("Sesame (S=Simbad")
    m31 = portal.parse_position("m 31")  # in the table too: Sesame's answer wins
    assert (m31["ra"], m31["dec"]) == pytest.approx((10.68470833, 41.26875), abs=1e-6)
    assert m31["name"] == "M 31"
    # answers are kept: asking again does not ask Sesame again
    n = len(fake_sesame)
    portal.parse_position("VEGA")
    assert len(fake_sesame) == n
    assert fake_sesame[0] == "/cgi-bin/nph-sesame/-oxp/SNV?Vega"


def test_names_sesame_does_not_know_fall_back_to_the_table(fake_sesame) -> None:
    nep = portal.parse_position("NEP")
    entry = names.lookup("NEP")
    assert (nep["ra"], nep["dec"]) == (entry.ra, entry.dec)
    assert "shipped table" in nep["source"] and "does not know" in nep["source"]
    with pytest.raises(portal.Unreadable, match="Sesame.*does not know"):
        portal.parse_position("Nowhere Special")
    # positions never go to the resolver
    n = len(fake_sesame)
    portal.parse_position("270.0 66.56")
    assert len(fake_sesame) == n


def test_unreachable_sesame_falls_back_and_says_so(monkeypatch) -> None:
    monkeypatch.setenv("SESAME_URL", "http://127.0.0.1:9/sesame")  # nothing listens there
    monkeypatch.setenv("OUTBOUND_ALLOW", "127.0.0.1:9")
    config.reset()
    sesame.clear_cache()
    m31 = portal.parse_position("M31")
    assert m31["name"] == "M31" and "could not be used" in m31["source"]
    reply = portal.resolve(portal.Params([("q", "Vega")]))
    assert reply.status == 400 and "could not be used" in reply.body


def test_without_a_resolver_the_table_alone_answers(monkeypatch) -> None:
    monkeypatch.delenv("SESAME_URL", raising=False)
    config.reset()
    assert not sesame.configured()
    assert portal.parse_position("M31")["source"] == "shipped table"
    with pytest.raises(portal.Unreadable, match="unknown object name"):
        portal.parse_position("Vega")


def test_sesame_xml_parsing() -> None:
    hit = sesame.parse(FOUND.format(name="M31", **KNOWN["M31"]).encode())
    assert hit == sesame.Resolved(10.68470833, 41.26875, "M 31", "AGN", "S=Simbad (via url)")
    assert sesame.parse(NOTHING.format(name="x").encode()) is None
    with pytest.raises(sesame.Unreachable):
        sesame.parse(b"<html>502 Bad Gateway</html>")
    with pytest.raises(sesame.Unreachable):
        sesame.parse(b"not xml at all")
    assert sesame.query_url("http://h/s/-oxp/SNV", "M  31") == "http://h/s/-oxp/SNV?M%2031"
    assert sesame.query_url("http://h/s?q={name}&x=1", "NGC 224") == "http://h/s?q=NGC%20224&x=1"
