"""RESPONSEFORMAT=html on TAP sync, SIA and DataLink: readable, linked, escaped."""

from __future__ import annotations

from html import escape
from html.parser import HTMLParser

import pyarrow as pa
import pytest
import requests

from chalicelib.render import votable
from chalicelib.render.fields import Field

HOSTILE = '<script>alert("x")</script>&"\'<img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """Collects the elements, links and header titles of a page (a strict-ish reader)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.links, self.titles, self.cells, self.headers = [], [], [], [], []
        self._in = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "a":
            self.links.append(a.get("href"))
        if tag == "th":
            self.titles.append(a.get("title"))
        self._in = tag if tag in ("td", "th", "pre") else self._in

    def handle_endtag(self, tag):
        if tag in ("td", "th", "pre"):
            self._in = None

    def handle_data(self, data):
        if self._in == "td":
            self.cells.append(data)
        elif self._in == "th":
            self.headers.append(data)


def test_hostile_values_are_text_not_markup():
    fields = [Field(HOSTILE, "char", "*", unit=HOSTILE, ucd="meta.id", description=HOSTILE),
              Field("access_url", "char", "*"), Field("n", "double")]
    table = pa.table({"a": [HOSTILE, None], "b": ["javascript:alert(1)",
                                                  "https://x.test/a?b=1&c=<2>"],
                      "n": [1.5, float("nan")]})
    body, ctype = votable.write(table, fields, "text/html", query=HOSTILE, overflow=True,
                                infos=[("WARNING", HOSTILE, HOSTILE)], title=HOSTILE)
    text = body.decode()
    assert ctype.startswith("text/html") and "<script" not in text and "<img" not in text
    page = Page(text)
    assert "script" not in page.tags and "img" not in page.tags
    assert page.links == ["https://x.test/a?b=1&c=<2>"]  # javascript: is never a link
    assert HOSTILE in page.cells and "javascript:alert(1)" in page.cells
    assert page.titles[0] == f"{HOSTILE} | unit: {HOSTILE} | UCD: meta.id"
    assert "truncated at MAXREC" in text and "NaN" in page.cells


@pytest.mark.parametrize("value", ["html", "HTML", "text/html", "text/html;charset=utf-8"])
def test_html_format_names(value):
    assert votable.parse_format(value) == "html"


def test_tap_html(server):
    q = ("SELECT TOP 3 obs_publisher_did, s_ra, access_url, 'a<b>&c' AS odd "
         "FROM ivoa.obscore ORDER BY obs_publisher_did")
    r = requests.get(server + "/tap/sync", params={"LANG": "ADQL", "QUERY": q,
                                                   "RESPONSEFORMAT": "html"}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = Page(r.text)
    assert page.headers[:2] == ["obs_publisher_did", "s_ra"] and "[deg]" in page.headers
    assert any(t and "Right Ascension" in t or t and "deg" in t for t in page.titles)
    assert len(page.links) == 3 and all("/datalink/links?ID=" in u for u in page.links)
    assert "a<b>&c" in page.cells and "a<b>" not in r.text
    assert escape(q) in r.text and "3 rows." in r.text
    r = requests.get(server + "/tap/sync", params={"LANG": "ADQL", "MAXREC": 2, "QUERY": q,
                                                   "RESPONSEFORMAT": "text/html"}, timeout=60)
    assert "truncated at MAXREC" in r.text and len(Page(r.text).links) == 2


def test_tap_capabilities_list_html(server):
    caps = requests.get(server + "/tap/capabilities", timeout=60).text
    assert "<mime>text/html</mime><alias>html</alias>" in caps


def test_sia_and_datalink_html(server):
    r = requests.get(server + "/sia/query", timeout=60,
                     params={"MAXREC": 3, "CALIB": 2, "RESPONSEFORMAT": "html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = Page(r.text)
    assert "access_url" in page.headers and "CALIB=2&amp;MAXREC=3" in r.text
    dids = [c for c in page.cells if c.startswith("ivo://")]
    assert dids and any("/datalink/links" in u for u in page.links)
    r = requests.get(server + "/datalink/links", params={"ID": dids, "RESPONSEFORMAT": "html"},
                     timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = Page(r.text)
    assert {"ID", "access_url", "semantics"} <= set(page.headers)
    assert any(u.startswith(server) and "/data/" in u for u in page.links)  # #this
    assert any("/preview/" in u for u in page.links)
    desc = requests.get(server + "/sia/query", params={"MAXREC": 0}, timeout=60).text
    assert '<OPTION value="html"/>' in desc
