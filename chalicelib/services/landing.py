"""The landing page: what this service is, its endpoints and queries to try."""

from __future__ import annotations

from html import escape

SERVICES = [
    ("TAP 1.1 (ObsTAP, ADQL 2.1)", "/tap", "/tap/capabilities"),
    ("TAP availability", "/tap/availability", None),
    ("TAP tables", "/tap/tables", None),
    ("TAP examples", "/tap/examples", None),
    ("SIA 2.0 image search", "/sia/query?POS=CIRCLE+270+66.56+1", "/sia/capabilities"),
    ("DataLink 1.1", "/datalink/links?ID=", None),
    ("SODA 1.0 cutouts (sync)", "/soda/sync", None),
    ("SODA 1.0 cutouts (async, UWS)", "/soda/async", None),
    ("Spectrophotometry (async, UWS)", "/spectrophotometry/async",
     "/spectrophotometry/capabilities"),
    ("Coverage: collections covering a region", "/coverage?POS=CIRCLE+270+66.56+1", None),
    ("Coverage MOC of the deep collection", "/coverage/spherex_qr2_deep?FORMAT=json", None),
]

EXAMPLE_ADQL = ("SELECT TOP 10 obs_publisher_did, s_ra, s_dec, em_min, em_max, access_url "
                "FROM spherex.obscore WHERE INTERSECTS(CIRCLE('ICRS', 270.0, 66.56, 2.0), "
                "s_region) = 1")


def pyvo_snippet(base: str) -> str:
    return (f"import pyvo\n"
            f"tap = pyvo.dal.TAPService('{base}/tap')\n"
            f"print(tap.run_sync(\"{EXAMPLE_ADQL}\").to_table())\n")


def body(base: str, release: int, deliveries: list[str]) -> str:
    """The landing content (release, services, snippets) as an HTML fragment; the portal
    at / shows it under its search form."""
    rows = "".join(
        f"<li><a href='{escape(base + path)}'>{escape(name)}</a> <code>{escape(path)}</code>"
        + (f" (<a href='{escape(base + cap)}'>capabilities</a>)" if cap else "") + "</li>"
        for name, path, cap in SERVICES)
    return (
        f"<p>Release {release}: {len(deliveries)} weekly deliveries"
        f"{' (latest ' + escape(deliveries[-1]) + ')' if deliveries else ''}.</p>"
        f"<h2>Services</h2><ul>{rows}</ul>"
        f"<h2>Try it</h2><pre>{escape(pyvo_snippet(base))}</pre>"
        f"<pre>curl '{escape(base)}/tap/sync?LANG=ADQL&amp;QUERY=SELECT+TOP+5+*+FROM+"
        "ivoa.obscore'</pre>")


def page(base: str, release: int, deliveries: list[str]) -> str:
    """The landing content as a page of its own (/about)."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<title>SPHEREx archive services</title></head><body>"
            f"<h1>SPHEREx archive services</h1>{body(base, release, deliveries)}"
            f"<p><a href='{escape(base)}/'>Search the archive (portal)</a></p></body></html>")
