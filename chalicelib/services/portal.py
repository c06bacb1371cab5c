"""The web portal at `/`: one static page (portal_static/, no build step) that talks to the
public services only (TAP, SIA, DataLink, cutouts, previews, coverage, spectrophotometry),
so what it shows is what any client gets. The one thing the page cannot do without an
astronomy library is read positions as astronomers type them: /portal/resolve does that
here with astropy and the names table (names.py).

    /                          the page (with the landing page's list of services)
    /portal/resolve?q=&frame=  JSON: {"targets": [...], "errors": [...]}, one line a target
    /portal/table (POST votable=...)  JSON {"names", "ucds", "rows"}: an uploaded VOTable
                               of any serialization (the page itself reads TABLEDATA only)
    /portal/static/<file>      the page's script, style sheet and icon
"""

from __future__ import annotations

import io
import json
import re
import warnings
from html import escape
from pathlib import Path

from ..web.params import Params
from ..web.replies import Reply
from ..web.request import Request
from ..web.routes import Handler, dispatch
from . import landing, names, sesame

STATIC = Path(__file__).with_name("portal_static")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".html": "text/html; charset=utf-8"}
MAX_TARGETS = 100
FRAMES = ("icrs", "galactic")
# letters a typed position may hold: h m s d (units), : separators, e exponents, degree signs
_COORD_CHARS = re.compile(r"^[\d\s+\-.:,hmsdeE°'\"]+$")
EXAMPLES = "'270.0 66.56', '17h18m51.62s -26d08m55.6s', '17:18:51.6 -26:08:56', M31 or NEP"


class Unreadable(ValueError):
    """A line that is neither a position nor a known name; the text says why."""


def static_file(name: str) -> Reply:
    """A file of portal_static/ by its plain name (no folders: nothing else is reachable)."""
    path = STATIC / name
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file() \
            or path.suffix not in TYPES:
        return Reply.text(f"Not found: /portal/static/{name}", 404)
    return Reply(200, path.read_bytes(), TYPES[path.suffix],
                 {"Cache-Control": "public, max-age=300"})


def page(base: str, release: int, deliveries: list[str]) -> str:
    html = (STATIC / "index.html").read_text().replace("__BASE__", escape(base))
    return html.replace("<!--SERVICES-->", landing.body(base, release, deliveries))


def _skycoord(text: str, frame: str):
    import astropy.units as u  # deferred: cold start (astropy)
    from astropy.coordinates import SkyCoord  # deferred: cold start (astropy)

    s = " ".join(text.replace(",", " ").split())
    tokens = s.split(" ")
    if frame == "galactic":
        return SkyCoord(s, frame="galactic", unit=(u.deg, u.deg))
    plain = len(tokens) == 2 and all(re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", t)
                                     for t in tokens)
    if plain:
        return SkyCoord(s, frame="icrs", unit=(u.deg, u.deg))
    return SkyCoord(s, frame="icrs", unit=(u.hourangle, u.deg))


def parse_position(text: str, frame: str = "icrs") -> dict:
    """One target: a known name, or a position in the given frame (icrs: decimal degrees or
    sexagesimal with the RA in hours; galactic: l b in degrees). Raises Unreadable."""
    text = text.strip()
    if frame not in FRAMES:
        raise Unreadable(f"unknown frame {frame!r}: use icrs or galactic")
    if not _COORD_CHARS.match(text) or text[:1].isalpha():  # a position starts with a number
        return _named(text)
    try:
        c = _skycoord(text, frame).icrs
    except Exception as e:  # astropy's parse errors come as several types
        msg = str(e).split("\n")[0]
        if "dec" in msg.lower() or "latitude" in msg.lower() or "b" == msg[-1:]:
            msg = "the latitude or declination must be between -90 and +90 degrees"
        raise Unreadable(f"could not read {text!r} as an {frame.upper()} position ({msg}); "
                         f"examples: {EXAMPLES}") from None
    return _target(text, float(c.ra.deg), float(c.dec.deg))


def _named(text: str) -> dict:
    """A name: through Sesame when a resolver is configured (SESAME_URL), from the shipped
    table otherwise, or when Sesame cannot be reached or does not know the name."""
    note = ""
    if sesame.configured():
        try:
            found = sesame.resolve(text)
        except sesame.Unreachable as e:
            found, note = None, f"the name resolver (Sesame) could not be used: {e}"
        if found is not None:
            return _target(text, found.ra, found.dec, name=found.oname or text,
                           kind=found.otype, aliases=[], source=f"Sesame ({found.resolver})")
        note = note or "the name resolver (Sesame) does not know it"
    hit = names.lookup(text)
    if hit is not None:
        return _target(text, hit.ra, hit.dec, name=hit.name, kind=hit.kind,
                       aliases=list(hit.aliases), source="shipped table" + (
                           f" ({note})" if note else ""))
    near = names.suggestions(text)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    said = f"{note}, and names " if note else "names "
    raise Unreadable(f"unknown object name {text!r}: {said}known here are Messier (M1-M110) "
                     f"and bright NGC/IC objects, LMC, SMC and the SPHEREx deep fields NEP "
                     f"and SEP; or type a position, e.g. {EXAMPLES}.{hint}")


def _target(text: str, ra: float, dec: float, **extra) -> dict:
    import astropy.units as u  # deferred: cold start (astropy)
    from astropy.coordinates import SkyCoord  # deferred: cold start (astropy)

    c = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    g = c.galactic
    return {"input": text, "ra": round(ra % 360.0, 7), "dec": round(dec, 7),
            "l": round(float(g.l.deg), 6), "b": round(float(g.b.deg), 6),
            "sexagesimal": c.to_string("hmsdms", precision=2), **extra}


def resolve(params: Params) -> Reply:
    """Every non-blank line of q (';' also separates) as a target, or an error for it."""
    q = params.get("q") or params.get("POS") or ""
    frame = (params.get("frame") or "icrs").strip().lower()
    lines = [(i + 1, t.strip()) for i, t in enumerate(re.split(r"[\n;]", q)) if t.strip()]
    if not lines:
        return _json({"targets": [], "errors": [
            {"line": 0, "input": "", "message": f"type a position or a name, e.g. {EXAMPLES}"}]},
            400)
    if len(lines) > MAX_TARGETS:
        return _json({"targets": [], "errors": [{"line": 0, "input": "", "message":
                      f"{len(lines)} targets: at most {MAX_TARGETS} at once"}]}, 400)
    targets, errors = [], []
    for line, text in lines:
        try:
            targets.append({"line": line, **parse_position(text, frame)})
        except Unreadable as e:
            errors.append({"line": line, "input": text, "message": str(e)})
    return _json({"frame": frame, "targets": targets, "errors": errors},
                 200 if targets else 400)


MAX_TABLE_BYTES = 1_000_000  # as the page's own limit on a target-list file
# a STREAM with href makes astropy fetch that URL: never from a caller's file
_EXTERNAL = re.compile(r"<\s*(?:\w+:)?STREAM\b[^>]*\bhref\s*=", re.IGNORECASE)


def table_rows(params: Params) -> Reply:
    """The first table of an uploaded VOTable (TABLEDATA, BINARY or BINARY2, as astropy
    reads it) as strings, for the page's target-list reader."""
    text = params.get("votable") or ""
    if not text.strip():
        return _json({"error": "no VOTable given (the form field votable)"}, 400)
    data = text.encode()
    if len(data) > MAX_TABLE_BYTES:
        return _json({"error": f"the VOTable is larger than {MAX_TABLE_BYTES // 1000} kB"}, 400)
    if _EXTERNAL.search(text):
        return _json({"error": "the VOTable refers to an external STREAM (href): put the "
                               "rows in the file"}, 400)
    import numpy as np  # deferred: only for an upload
    from astropy.io.votable import parse  # deferred: only for an upload

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = parse(io.BytesIO(data), verify="ignore").get_first_table()
    except Exception as e:  # noqa: BLE001 - any parse failure is the caller's file
        return _json({"error": f"not a VOTable that can be read: {e}"}, 400)

    def cell(v, masked) -> str:
        if np.all(masked):
            return ""
        return str(v.item() if isinstance(v, np.generic) else v)

    fields, arr = table.fields, table.array
    rows = [[cell(arr.data[k][i], arr.mask[k][i]) for i in range(len(fields))]
            for k in range(len(arr))]
    return _json({"names": [f.name for f in fields], "ucds": [f.ucd or "" for f in fields],
                  "rows": rows})


def _json(doc: dict, status: int = 200) -> Reply:
    return Reply(status, json.dumps(doc), "application/json",
                 {"Cache-Control": "no-store"})


def _names(rest: str, req: Request) -> Reply:
    return _json({"names": [{"name": n.name, "aliases": list(n.aliases), "ra": n.ra,
                             "dec": n.dec, "kind": n.kind} for n in names.all_names()]})


ROUTES: dict[str, Handler] = {"resolve": lambda rest, req: resolve(req.params),
                              "names": _names,
                              "table": lambda rest, req: table_rows(req.params)}
PREFIXES: dict[str, Handler] = {
    "static": lambda rest, req: static_file(rest[len("static/"):])}


def handle(req: Request) -> Reply:
    """/portal/resolve, /portal/names and /portal/static/<file>."""
    return dispatch(req, ROUTES, lambda rest: Reply.text(f"Not found: /portal/{rest}", 404),
                    PREFIXES)
