"""Fuzzing every endpoint over HTTP: the generators of tests/test_fuzz.py, run at scale.

python -m chalicelib bench fuzz [--requests 10000] [--seed S] [--seconds 900]
                                [--archive DIR] [--show 10]

Builds a small synthetic archive (one week, 64 px images) unless --archive names one,
serves it on 127.0.0.1 (a port chosen at run time), and sends --requests requests made by
the hypothesis strategies below (ADQL mutations, wild numbers and shapes, repeated and
misspelled parameters, uploads, hostile paths, UWS phase sequences), bounded by
--seconds. Prints the count of requests, of 5xx answers, of answers not in the service's
documented error form and of error texts that leak internals (goal 0 for each), then the
first offending requests.

The same strategies and the same `problems` check drive tests/test_fuzz.py, where
hypothesis' settings keep the run short and reproducible.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests
from hypothesis import strategies as st

# ---- what a request is, and how it is sent -----------------------------------------------


@dataclass
class Probe:
    """One request. `form` is the error form the service documents for it: 'votable'
    (QUERY_STATUS=ERROR), 'text' (SODA/DataLink-style fault words) or 'uws'."""

    form: str
    method: str
    path: str  # below the base URL, sent as is (already percent-encoded where needed)
    params: list[tuple[str, str]] = field(default_factory=list)
    data: list[tuple[str, str]] | bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def describe(self, limit: int = 300) -> str:
        text = f"{self.method} {self.path}"
        if self.params:
            text += " ?" + "&".join(f"{k}={v}" for k, v in self.params)
        if isinstance(self.data, list) and self.data:
            text += " form " + "&".join(f"{k}={v}" for k, v in self.data)
        elif isinstance(self.data, bytes):
            text += f" body {self.data[:80]!r}"
        if self.files:
            text += " files " + ", ".join(f"{k}={v[1][:40]!r}" for k, v in self.files.items())
        return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"

    def text(self) -> str:
        """Everything the caller sent, to tell an echo of its own input from a leak."""
        parts = [self.path, *[f"{k} {v}" for k, v in self.params]]
        if isinstance(self.data, list):
            parts += [f"{k} {v}" for k, v in self.data]
        elif isinstance(self.data, bytes):
            parts.append(self.data.decode("utf-8", "replace"))
        for _name, (fname, content, _ct) in (self.files or {}).items():
            parts += [fname, content.decode("utf-8", "replace")]
        return "\n".join(parts)


def send(session: requests.Session, base: str, p: Probe, timeout: float = 60.0):
    """Send a probe with its path exactly as written (requests would normalise dot
    segments away, which is what a hostile client does not do)."""
    req = requests.Request(p.method, base + "/", params=p.params or None, data=p.data,
                           files=p.files, headers=p.headers)
    prep = session.prepare_request(req)
    query = prep.url.split("?", 1)[1] if "?" in prep.url else ""
    prep.url = base + p.path + ("?" + query if query else "")
    return session.send(prep, timeout=timeout, allow_redirects=False)


# ---- the properties ----------------------------------------------------------------------

VOTABLE_ERROR = 'name="QUERY_STATUS" value="ERROR"'
# what a plain-text error answer may start with: SODA/DataLink faults, UWS errors, the
# request framing of the local server, 404s for unknown resources
FAULT_WORDS = ("UsageError", "UsageFault", "NotFoundFault", "NotFound", "Not found",
               "MultiValuedParamNotSupported", "Error:", "Forbidden", "TransientFault",
               "FatalFault", "InternalError", "no table ", "method ", "request body",
               "Content-Length", "malformed chunk")
_CLASS = re.compile(r"\b(?!Usage|Internal)[A-Z][A-Za-z]*(?:Error|Exception)\b|"
                    r"\b(?:duckdb|sqlglot|pyarrow|astropy|botocore|numpy|chalicelib)\b")
_LEAKS = re.compile(r"Traceback|File \"|site-packages|/tmp/|/work/|/home/|/usr/lib|"
                    r"ARCHIVE_URL|JOBS_TABLE|JOBS_DIR|S3_ENDPOINT|AWS_[A-Z_]+|"
                    r"STATE_MACHINE|PUBLIC_URL|TRUSTED_PROXY")


def leaks(text: str, sent: str, secrets: tuple[str, ...] = ()) -> list[str]:
    """Internals an error text shows that the caller did not send itself."""
    found = [m.group() for rx in (_LEAKS, _CLASS) for m in rx.finditer(text)]
    found += [s for s in secrets if s and s in text]
    return sorted({f for f in found if f not in sent})


def problems(p: Probe, status: int, ctype: str, body: bytes,
             secrets: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with an answer: a 5xx, an error not in the documented form, a leak."""
    out = []
    if status >= 500:
        out.append(f"5xx: {status}")
    if status < 400:
        return out
    text = body.decode("utf-8", "replace")
    ctype = (ctype or "").lower()
    if p.form == "votable" and status not in (404, 405, 408, 413, 414):
        if VOTABLE_ERROR not in text or "votable" not in ctype:
            out.append(f"form: {status} not a VOTable error ({ctype})")
    elif not text.lstrip().startswith(FAULT_WORDS) and VOTABLE_ERROR not in text:
        out.append(f"form: {status} text does not start with a fault word ({ctype})")
    if found := leaks(text, p.text(), secrets):
        out.append("leak: " + ", ".join(found[:5]))
    return out


# ---- building blocks ---------------------------------------------------------------------

SAFE_TEXT = st.characters(blacklist_categories=("Cs",))  # what requests can encode
WILD_NUMBERS = ["0", "-0", "1", "-1", "1e308", "-1e308", "1e309", "-1e400", "1e-320",
                "5e-324", "NaN", "nan", "-nan", "inf", "+inf", "-Inf", "Infinity",
                "-infinity", "1.", ".5", "1e", "1e+", "0x10", "1_000", "00012",
                "9" * 30, "1" * 5000, "360", "361", "-360", "720.5", "90", "90.0000001",
                "-90", "-91", "180", "180.0001", "1e-9", "١٢", "²", "１２", "1,5", "--1",
                "", " ", "1 2", "\u00a01", "0e0"]
numbers = st.one_of(st.sampled_from(WILD_NUMBERS),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.integers(-10**40, 10**40).map(str),
                    st.floats(-400, 400, allow_nan=False).map(lambda x: f"{x:.6g}"))
words = st.text(SAFE_TEXT, max_size=20)
junk = st.one_of(words, st.sampled_from(["", " ", "\x00", "'", '"', "%", "\\", "../..",
                                          "é", "☃", "\u202e", "<x/>", "]]>", "&amp;",
                                          "\r\n", "a" * 10000]))


def seq(n: int, sep: str = " ") -> st.SearchStrategy[str]:
    return st.lists(numbers, min_size=0, max_size=n).map(sep.join)


def shapes() -> st.SearchStrategy[str]:
    """DALI shapes, well and badly formed, with wild numbers."""
    kind = st.sampled_from(["CIRCLE", "RANGE", "POLYGON", "circle", "Polygon", "BOX",
                            "POINT", "", "CIRCLE("])
    near = st.tuples(st.floats(0, 30), st.floats(-30, 30)).map(
        lambda t: f"CIRCLE {t[0]:.4f} {t[1]:.4f} 0.5")
    return st.one_of(
        st.tuples(kind, seq(9)).map(" ".join),
        st.tuples(kind, seq(9, ",")).map(" ".join),
        near,
        st.integers(3, 1200).map(lambda n: "POLYGON " + " ".join(
            f"{10 + 0.001 * i} {10 + (i % 2) * 0.001}" for i in range(n))),
        junk)


def intervals() -> st.SearchStrategy[str]:
    return st.one_of(seq(3), st.tuples(numbers, numbers).map(" ".join), junk)


def case(name: str) -> st.SearchStrategy[str]:
    """DALI names are case-insensitive: any spelling must behave."""
    return st.sampled_from([name, name.lower(), name.title(), name.swapcase()])


def pairs(spec: dict[str, st.SearchStrategy[str]], extra: int = 2
          ) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Parameters drawn from spec, some repeated, plus unknown or junk names."""
    one = st.one_of([st.tuples(case(n), v) for n, v in spec.items()] +
                    [st.tuples(words, junk)])
    return st.lists(one, max_size=len(spec) + extra)


def methods() -> st.SearchStrategy[str]:
    return st.sampled_from(["GET", "POST"])


def _as(method: str, path: str, kv: list[tuple[str, str]], form: str) -> Probe:
    if method == "GET":
        return Probe(form, "GET", path, params=kv)
    return Probe(form, "POST", path, data=kv or None)


# ---- ADQL --------------------------------------------------------------------------------

SEEDS = [
    "SELECT TOP 5 obs_id, s_ra, s_dec FROM ivoa.obscore",
    "SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), "
    "CIRCLE('ICRS', 10, 10, 1)) = 1",
    "SELECT TOP 3 * FROM ivoa.obscore WHERE INTERSECTS(s_region, CIRCLE(10.0, 10.0, 0.5)) = 1",
    "SELECT COUNT(*) AS n, calib_level FROM ivoa.obscore GROUP BY calib_level "
    "HAVING COUNT(*) > 0 ORDER BY n DESC",
    "SELECT TOP 4 DISTANCE(POINT(s_ra, s_dec), POINT(10, 10)) AS d FROM ivoa.obscore ORDER BY d",
    "SELECT TOP 2 AREA(s_region), CENTROID(s_region), COORD1(POINT(1, 2)) FROM ivoa.obscore",
    "SELECT table_name FROM TAP_SCHEMA.tables WHERE schema_name = 'ivoa'",
    "WITH lo AS (SELECT obs_id FROM ivoa.obscore WHERE calib_level <= 1) "
    "SELECT obs_id FROM lo UNION SELECT obs_id FROM lo",
    "SELECT TOP 1 CAST(5.7 AS INTEGER), IN_UNIT(s_ra, 'rad'), LOWER(obs_id), "
    "COALESCE(s_ra, 0) FROM ivoa.obscore",
    "SELECT TOP 3 ivo_healpix_index(10, s_ra, s_dec) FROM ivoa.obscore "
    "WHERE obs_id LIKE '%1%' OFFSET 2",
    "SELECT TOP 3 o.obs_id FROM ivoa.obscore AS o JOIN ivoa.obscore AS p "
    "ON o.obs_id = p.obs_id WHERE o.s_ra BETWEEN 0 AND 360",
    "SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT(s_ra, s_dec), "
    "POLYGON(10, 10, 11, 10, 11, 11)) = 1",
    "SELECT obs_id FROM ivoa.obscore WHERE INTERSECTS(s_region, BOX('ICRS', 10, 10, 2, 2)) = 1",
    "SELECT TOP 5 MOD(s_xel1, 3), POWER(2, 10), SQRT(ABS(s_ra)), LOG10(s_fov), "
    "ATAN2(1, s_dec), TRUNCATE(s_ra, 2) FROM ivoa.obscore",
    "SELECT TOP 5 obs_id, CASE WHEN calib_level IN (1, 2) THEN 'low' ELSE 'high' END "
    "FROM ivoa.obscore WHERE obs_id IS NOT NULL AND NOT (s_fov > 100)",
    "SELECT DISTINCT dataproduct_type FROM ivoa.obscore ORDER BY 1",
    'SELECT TOP 1 "size", column_name FROM TAP_SCHEMA.columns',
]
KEYWORDS = ["SELECT", "FROM", "WHERE", "TOP", "DISTINCT", "AND", "OR", "NOT", "IN", "IS",
            "NULL", "LIKE", "ILIKE", "BETWEEN", "GROUP", "BY", "ORDER", "HAVING", "ASC",
            "DESC", "JOIN", "LEFT", "OUTER", "NATURAL", "USING", "ON", "AS", "UNION",
            "EXCEPT", "INTERSECT", "WITH", "OFFSET", "CASE", "WHEN", "THEN", "ELSE", "END",
            "CAST", "EXISTS", "ALL", "ANY", "INSERT", "DROP", "ATTACH", "COPY", "PRAGMA"]
FUNCTIONS = ["POINT", "CIRCLE", "POLYGON", "BOX", "CONTAINS", "INTERSECTS", "DISTANCE",
             "AREA", "CENTROID", "COORD1", "COORD2", "COORDSYS", "ABS", "SQRT", "LOG",
             "LOG10", "EXP", "POWER", "MOD", "ROUND", "TRUNCATE", "RAND", "COUNT", "MAX",
             "AVG", "SUM", "LOWER", "UPPER", "COALESCE", "IN_UNIT", "ivo_healpix_index",
             "ivo_interval_overlaps", "read_csv", "read_parquet", "glob", "getenv",
             "current_setting", "duckdb_settings"]
PUNCT = ["(", ")", ",", ".", "*", "+", "-", "/", "||", "=", "<>", "!=", "<", ">=", ";", "'",
         '"', "--", "/*", "*/", "?", "$1", "@", "::", "[", "]", "{", "}", "&", "|", "^"]
NAMES = ["ivoa.obscore", "obs_id", "s_ra", "s_dec", "s_region", "TAP_SCHEMA.tables",
         "TAP_UPLOAD.t", "spherex.plane", "information_schema.tables", "main.x",
         '"quoted name"', "nosuch", "a", "t1", "x" * 300]
TOKENS = st.one_of(st.sampled_from(KEYWORDS + FUNCTIONS + PUNCT + NAMES), numbers,
                   st.sampled_from(["'x'", "''", "'it''s'", "'\u2603'", "1.5e3"]))
_SPLIT = re.compile(r"('[^']*'|\"[^\"]*\"|\w+|\s+|.)")


@st.composite
def mutated(draw) -> str:
    """A valid query with a few random edits: deletions, insertions, duplications,
    numbers swapped for wild ones, truncation."""
    toks = _SPLIT.findall(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["del", "ins", "dup", "num", "swap", "cut"]))
        i = draw(st.integers(0, max(len(toks) - 1, 0)))
        if not toks:
            break
        if op == "del":
            del toks[i]
        elif op == "ins":
            toks.insert(i, " " + draw(TOKENS) + " ")
        elif op == "dup":
            toks[i:i] = toks[i:i + draw(st.integers(1, 6))]
        elif op == "num":
            nums = [j for j, t in enumerate(toks) if t[:1].isdigit()] or [i]
            toks[draw(st.sampled_from(nums))] = draw(numbers)
        elif op == "swap" and i + 1 < len(toks):
            toks[i], toks[i + 1] = toks[i + 1], toks[i]
        elif op == "cut":
            toks = toks[:i]
    return "".join(toks)


def _nest(depth: int, kind: str) -> str:
    inner = {"paren": ("(" * depth, "1" + ")" * depth),
             "abs": ("ABS(" * depth, "s_ra" + ")" * depth),
             "neg": ("-" * depth, "1"), "not": ("NOT " * depth, "s_ra > 1"),
             "sub": ("SELECT * FROM (" * depth, "SELECT 1 AS a" + ") AS q" * depth),
             "plus": ("", " + ".join(["1"] * depth)),
             "and": ("", " AND ".join(["s_ra > 1"] * depth)),
             "in": ("", "s_ra IN (" + ", ".join(str(i) for i in range(depth)) + ")"),
             "case": ("CASE WHEN 1=1 THEN " * depth, "1" + " END" * depth)}[kind]
    expr = inner[0] + inner[1]
    if kind == "sub":
        return expr
    where = expr if kind in ("not", "and", "in") else f"{expr} > 0"
    return f"SELECT TOP 1 obs_id FROM ivoa.obscore WHERE {where}"


deep = st.builds(_nest, st.sampled_from([1, 10, 50, 200, 500, 1000, 3000, 9000]),
                 st.sampled_from(["paren", "abs", "neg", "not", "sub", "plus", "and", "in",
                                  "case"]))


@st.composite
def geometry(draw) -> str:
    """Geometry constructors and predicates with wild numbers and wrong arities."""
    def args(n):
        return ", ".join(draw(numbers) or "0" for _ in range(n))
    frame = draw(st.sampled_from(["", "'ICRS', ", "'GALACTIC', ", "'', ", "NULL, ", "1, "]))
    n = draw(st.integers(0, 12))
    shape = draw(st.sampled_from([f"CIRCLE({frame}{args(3)})", f"POINT({frame}{args(2)})",
                                  f"BOX({frame}{args(4)})", f"POLYGON({frame}{args(n)})",
                                  f"CIRCLE({frame}POINT({args(2)}), {args(1)})",
                                  f"CIRCLE({args(n)})"]))
    pred = draw(st.sampled_from([
        f"CONTAINS(POINT('ICRS', s_ra, s_dec), {shape}) = 1",
        f"INTERSECTS(s_region, {shape}) = 1", f"INTERSECTS({shape}, {shape}) = 0",
        f"DISTANCE(POINT(s_ra, s_dec), POINT({args(2)})) < {args(1)}",
        f"DISTANCE({args(4)}) > 0", f"AREA({shape}) > 0", f"COORD1({shape}) > 0",
        f"CONTAINS({shape}, s_region) = 1"]))
    select = draw(st.sampled_from(["obs_id", shape, "CENTROID(s_region)", "COUNT(*)"]))
    return f"SELECT TOP 3 {select} FROM ivoa.obscore WHERE {pred}"


adql = st.one_of(st.sampled_from(SEEDS), mutated(), mutated(), mutated(),
                 st.lists(TOKENS, max_size=25).map(" ".join), deep, geometry(), geometry(),
                 junk)


# ---- requests per service ----------------------------------------------------------------

FORMATS = st.sampled_from(["votable", "csv", "tsv", "fits", "parquet", "votable/b2",
                           "application/x-votable+xml", "text/csv", "json", "html", "",
                           "votable;serialization=BINARY2", "application/fits",
                           "application/vnd.apache.parquet", "\u2603"])
MAXREC = st.one_of(st.sampled_from(["0", "1", "5", "-1", "", "1e3", "99999999999999999999",
                                    "0x10", " 3 ", "٣", "²"]), numbers)


@dataclass
class Context:
    """What the strategies draw real values from: a few IDs, file keys, collections."""

    ids: list[str]
    keys: list[str]
    collections: list[str]


def tap_sync(ctx: Context) -> st.SearchStrategy[Probe]:
    kv = st.tuples(st.just([("LANG", "ADQL")]), st.lists(st.tuples(case("QUERY"), adql),
                                                         min_size=1, max_size=2),
                   pairs({"LANG": st.sampled_from(["ADQL", "adql", "ADQL-2.1", "SQL", ""]),
                          "RESPONSEFORMAT": FORMATS, "FORMAT": FORMATS, "MAXREC": MAXREC,
                          "REQUEST": st.sampled_from(["doQuery", "getCapabilities", ""])},
                         extra=0)).map(lambda t: t[0] + t[1] + t[2])
    return st.builds(lambda m, p: _as(m, "/tap/sync", p, "votable"), methods(), kv)


def uploads(ctx: Context) -> st.SearchStrategy[Probe]:
    """TAP_UPLOAD with random bytes and truncated or mangled VOTables."""
    table = (b'<?xml version="1.0"?><VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/'
             b'VOTable/v1.3"><RESOURCE><TABLE name="t"><FIELD name="ra" datatype="double"/>'
             b'<FIELD name="id" datatype="char" arraysize="*"/><DATA><TABLEDATA>'
             b'<TR><TD>10.5</TD><TD>a</TD></TR><TR><TD>nan</TD><TD>b</TD></TR>'
             b'</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>')
    content = st.one_of(
        st.binary(max_size=2000),
        st.integers(0, len(table)).map(lambda n: table[:n]),
        st.tuples(st.integers(0, len(table) - 1), st.binary(min_size=1, max_size=8)).map(
            lambda t: table[:t[0]] + t[1] + table[t[0] + 1:]),
        st.sampled_from([table, table.replace(b"double", b"int"),
                         table.replace(b'name="ra"', b'name="s e l e c t"'),
                         table.replace(b"<TR>", b"<TR>" * 3), b"ra,id\n1,a\n",
                         table.replace(b"VOTABLE", b"VOTABLE" * 2), b"\xef\xbb\xbf" + table]))
    spec = st.sampled_from(["t,param:t", "T,param:t", "t,param:nosuch", "t,file:///etc/passwd",
                            "t,ftp://127.0.0.1/x", "bad name,param:t", "t;", ",", "t,",
                            "t,param:t;u,param:t", "t,archive:uploads/../x",
                            "t,archive:uploads/nosuch/t", "1t,param:t"])
    query = st.sampled_from(["SELECT * FROM TAP_UPLOAD.t", "SELECT TOP 2 ra, id FROM "
                             "TAP_UPLOAD.t", "SELECT t.ra FROM TAP_UPLOAD.t AS t JOIN "
                             "ivoa.obscore AS o ON CONTAINS(POINT(t.ra, 0), "
                             "CIRCLE(o.s_ra, o.s_dec, 1)) = 1"])

    def make(c, s, q, name):
        return Probe("votable", "POST", "/tap/sync",
                     data=[("LANG", "ADQL"), ("QUERY", q), ("UPLOAD", s)],
                     files={"t": (name, c, "application/x-votable+xml")})
    return st.builds(make, content, spec, query, st.sampled_from(["t.xml", "", "..\\x", "é"]))


def sia(ctx: Context) -> st.SearchStrategy[Probe]:
    spec = {"POS": shapes(), "BAND": intervals(), "TIME": intervals(),
            "POL": st.sampled_from(["I", "Q", "XX", "", "i", "POLI POLA", "%"]),
            "FOV": intervals(), "SPATRES": intervals(), "EXPTIME": intervals(),
            "TIMERES": intervals(), "SPECRP": intervals(),
            "ID": st.one_of(st.sampled_from(ctx.ids), junk),
            "COLLECTION": st.one_of(st.sampled_from(ctx.collections), junk),
            "FACILITY": junk, "INSTRUMENT": junk, "DPTYPE": junk, "TARGET": junk,
            "FORMAT": junk, "CALIB": st.one_of(numbers, junk), "MAXREC": MAXREC,
            "RESPONSEFORMAT": FORMATS}
    path = st.sampled_from(["/sia/query", "/sia/query", "/sia/query", "/sia/nosuch",
                            "/sia/capabilities", "/sia/availability"])
    return st.builds(lambda m, p, kv: _as(m, p, kv, "votable"), methods(), path, pairs(spec))


def datalink(ctx: Context) -> st.SearchStrategy[Probe]:
    ident = st.one_of(st.sampled_from(ctx.ids), junk,
                      st.sampled_from(ctx.ids).map(lambda i: i + "x"),
                      st.sampled_from(ctx.ids).map(str.upper))
    many = st.integers(0, 200).map(lambda n: [("ID", f"ivo://x/{i}") for i in range(n)])
    kv = st.tuples(st.lists(st.tuples(case("ID"), ident), max_size=6), many,
                   pairs({"RESPONSEFORMAT": FORMATS, "MAXREC": MAXREC}, extra=1))
    return st.builds(lambda m, t: _as(m, "/datalink/links", t[0] + t[1] + t[2], "votable"),
                     methods(), kv)


def coverage(ctx: Context) -> st.SearchStrategy[Probe]:
    search = st.builds(lambda m, kv: _as(m, "/coverage", kv, "votable"), methods(),
                       pairs({"POS": shapes(), "RESPONSEFORMAT": FORMATS}))
    coll = st.one_of(st.sampled_from(ctx.collections), junk.map(
        lambda s: quote(s, safe="") or "x"))
    moc = st.builds(lambda c, f: Probe("text", "GET", f"/coverage/{c}", params=f), coll,
                    pairs({"FORMAT": st.sampled_from(["fits", "json", "ascii", "JSON",
                                                      "application/json", "x", ""])}))
    return st.one_of(search, moc)


def soda(ctx: Context) -> st.SearchStrategy[Probe]:
    ident = st.one_of(st.sampled_from(ctx.ids), st.sampled_from(ctx.ids), junk)
    # around the images so that real cutouts are made as well as refusals
    spec = {"POS": shapes(), "CIRCLE": st.one_of(seq(4), shapes()), "POLYGON": seq(10),
            "BAND": intervals(), "TIME": intervals(),
            "POL": st.sampled_from(["I", "Q U", "Z", "", "XX YY"]),
            "PSF": st.sampled_from(["all", "zone", "none", "x", ""])}
    kv = st.tuples(st.lists(st.tuples(case("ID"), ident), min_size=0, max_size=2),
                   pairs(spec, extra=1)).map(lambda t: t[0] + t[1])
    return st.builds(lambda m, p: _as(m, "/soda/sync", p, "text"), methods(), kv)


def files(ctx: Context) -> st.SearchStrategy[Probe]:
    key = st.one_of(st.sampled_from(ctx.keys), st.sampled_from(ctx.keys), paths_below())
    center = st.one_of(st.tuples(numbers, numbers, st.sampled_from(["", "px", "deg", "x"]))
                       .map(lambda t: f"{t[0]},{t[1]}{t[2]}"), junk)
    size = st.one_of(st.tuples(numbers, st.sampled_from(["", "px", "deg", "arcmin", "rad",
                                                         "arcsec", ",1", "x"]))
                     .map("".join), junk)
    common = {"gzip": st.sampled_from(["true", "false", "1", "yes", "x", ""]),
              "psf": st.sampled_from(["all", "zone", "none", "x"])}
    data = st.builds(lambda k, kv: Probe("text", "GET", f"/data/{k}", params=kv), key,
                     pairs({"center": center, "size": size, **common}))
    rest = st.builds(lambda k, kv: Probe("text", "GET", f"/cutout/{k}", params=kv), key,
                     pairs({"ra": numbers, "dec": numbers, "size": size, **common}))
    by_param = st.builds(lambda m, kv: _as(m, "/cutout", kv, "text"), methods(), pairs(
        {"path": st.one_of(st.sampled_from(ctx.keys), junk),
         "ID": st.one_of(st.sampled_from(ctx.ids), junk), "ra": numbers, "dec": numbers,
         "size": size, **common}, extra=1))
    preview = st.builds(lambda k: Probe("text", "GET", f"/preview/{k}"), paths_below())
    return st.one_of(data, rest, by_param, preview)


def photometry(ctx: Context) -> st.SearchStrategy[Probe]:
    """Spectrophotometry job creation (never run: PHASE is not RUN)."""
    point = st.one_of(st.tuples(numbers, numbers).map(",".join), junk,
                      st.tuples(st.floats(0, 30), st.floats(-30, 30)).map(
                          lambda t: f"{t[0]},{t[1]}"))
    spec = {"POINT": point, "TIME": intervals(), "BAND": intervals(),
            "COLLECTION": junk, "MAX_IMAGES": numbers, "BKG_REGION_SIZE": numbers,
            "RUNID": junk, "EXECUTIONDURATION": numbers, "DESTRUCTION": times()}
    return st.builds(lambda kv: Probe("uws", "POST", "/spectrophotometry/async", data=kv or None),
                     pairs(spec))


def times() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([
        "2030-01-01T00:00:00Z", "2030-01-01", "9999-12-31T23:59:59-12:00",
        "0001-01-01T00:00:00+14:00", "0001-01-01", "9999-12-31T23:59:59.999999", "",
        "tomorrow", "2030-13-01", "2030-02-30T00:00:00", "2030-01-01T25:00:00Z",
        "2030-01-01T00:00:00+99:00", "1970-01-01T00:00:00Z", "20300101T000000Z",
        "2030-W01", "+002030-01-01"]), junk,
        st.datetimes().map(lambda d: d.isoformat()))


def async_creation(ctx: Context) -> st.SearchStrategy[Probe]:
    """Creation POSTs of TAP and SODA jobs with random control parameters, never RUN."""
    control = {"EXECUTIONDURATION": numbers, "DESTRUCTION": times(), "RUNID": junk,
               "PHASE": st.sampled_from(["", "ABORT", "SUSPEND", "run2", "HELD"])}
    tap = pairs({"LANG": st.just("ADQL"), "QUERY": adql, **control})
    sodakv = pairs({"ID": st.one_of(st.sampled_from(ctx.ids), junk), "POS": shapes(),
                    "BAND": intervals(), **control})
    return st.one_of(st.builds(lambda kv: Probe("uws", "POST", "/tap/async", data=kv or None),
                               tap),
                     st.builds(lambda kv: Probe("uws", "POST", "/soda/async", data=kv or None),
                               sodakv),
                     st.builds(lambda s, kv: Probe("uws", "GET", s, params=kv),
                               st.sampled_from(["/tap/async", "/soda/async",
                                                "/spectrophotometry/async"]),
                               pairs({"PHASE": st.sampled_from(
                                   ["PENDING", "COMPLETED", "x", "", "pending"]),
                                   "LAST": MAXREC, "AFTER": times()})))


SEGMENTS = ["..", ".", "%2e%2e", "%2E%2E%2F", "..%2F..%2F..%2Fetc%2Fpasswd", "%2F", "%5C",
            "..\\..\\", "%00", "%25", "%ff", "%c0%ae%c0%ae", "~", "~root", "etc", "passwd",
            "_jobs", "results", "data", "moc", "uploads", "releases", "%20", "a b", "é",
            "%E2%98%83", "x" * 255, "x" * 5000, "-", "*", "?", "#", "CON", "nul", "a.fits",
            "level2_x.fits", ".git", "%2e", ";", "'", "\"", "<x>"]


def paths_below() -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(SEGMENTS),
                              junk.map(lambda s: quote(s, safe=""))),
                    min_size=1, max_size=6).map("/".join).map(lambda s: s or "x")


def paths(ctx: Context) -> st.SearchStrategy[Probe]:
    """Hostile paths under every prefix (traversal, encoded slashes, very long)."""
    prefix = st.sampled_from([("/data/", "text"), ("/cutout/", "text"), ("/preview/", "text"),
                              ("/results/", "text"), ("/coverage/", "text"),
                              ("/tap/", "votable"), ("/tap/async/", "uws"),
                              ("/tap/tables/", "text"), ("/sia/", "votable"),
                              ("/soda/", "text"), ("/soda/async/", "uws"),
                              ("/spectrophotometry/", "text"),
                              ("/spectrophotometry/async/", "uws")])
    return st.builds(lambda p, rest, m: Probe(p[1], _declared(p[0], m), p[0] + rest),
                     prefix, paths_below(), st.sampled_from(["GET", "GET", "POST", "DELETE"]))


def _declared(prefix: str, method: str) -> str:
    """POST and DELETE only where a route declares them (elsewhere Chalice answers 405
    itself, and API Gateway 403): GET instead."""
    allowed = {"/tap/": "GET POST DELETE", "/soda/": "GET POST DELETE",
               "/spectrophotometry/": "GET POST DELETE", "/sia/": "GET POST"}
    top = "/" + prefix.strip("/").split("/")[0] + "/"
    return method if method in allowed.get(top, "GET") else "GET"


def any_request(ctx: Context) -> st.SearchStrategy[Probe]:
    return st.one_of(tap_sync(ctx), tap_sync(ctx), uploads(ctx), sia(ctx), datalink(ctx),
                     coverage(ctx), soda(ctx), files(ctx), photometry(ctx),
                     async_creation(ctx), paths(ctx))


# ---- UWS: random sequences of operations, checked against the state machine --------------

TERMINAL = {"COMPLETED", "ERROR", "ABORTED"}
UWS_PHASES = {"PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN",
              "HELD", "SUSPENDED", "ARCHIVED"}
JOBS = {"tap": [("LANG", "ADQL"), ("QUERY", "SELECT TOP 1 obs_id FROM ivoa.obscore")],
        "soda": [("ID", "ivo://nowhere/x"), ("CIRCLE", "10 10 0.1")]}


def uws_ops() -> st.SearchStrategy[list[tuple[str, str, list]]]:
    """(method, child, form) operations on one job."""
    op = st.one_of(
        st.tuples(st.just("POST"), st.sampled_from(["/phase", ""]), st.lists(
            st.tuples(case("PHASE"), st.sampled_from(["RUN", "ABORT", "run", "SUSPEND", "",
                                                      "ARCHIVED", "x"])), min_size=1,
            max_size=2)),
        st.tuples(st.just("POST"), st.sampled_from(["/destruction", ""]),
                  st.lists(st.tuples(case("DESTRUCTION"), times()), max_size=2)),
        st.tuples(st.just("POST"), st.sampled_from(["/executionduration", ""]),
                  st.lists(st.tuples(case("EXECUTIONDURATION"), numbers), max_size=2)),
        st.tuples(st.just("POST"), st.sampled_from(["/parameters", ""]),
                  st.lists(st.tuples(words, junk), max_size=2)),
        st.tuples(st.just("GET"), st.sampled_from(["", "/phase", "/error", "/results",
                                                   "/parameters", "/owner", "/quote",
                                                   "/destruction", "/executionduration",
                                                   "/results/result", "/nosuch", "/phase/x"]),
                  st.lists(st.tuples(st.sampled_from(["WAIT", "PHASE"]),
                                     st.sampled_from(["0", "1", "-1", "-2", "x", "PENDING",
                                                      "EXECUTING", "COMPLETED", "zz"])),
                           max_size=2)),
        st.tuples(st.sampled_from(["DELETE", "POST"]), st.just(""),
                  st.sampled_from([[], [("ACTION", "DELETE")], [("action", "delete")],
                                   [("ACTION", "x")]])))
    return st.lists(op, min_size=1, max_size=8)


def _phase(session, job_url: str) -> str:
    return session.get(job_url + "/phase", timeout=30).text.strip()


def run_uws(session: requests.Session, base: str, service: str, ops: list,
            record: Callable[[Probe, requests.Response], None]) -> list[str]:
    """Create a job, apply ops, and check each answer and each phase change against
    UWS 1.1. Returns the violations (empty: the job behaved)."""
    bad: list[str] = []
    url = f"{base}/{service}/async"
    created = session.post(url, data=JOBS[service], allow_redirects=False, timeout=30)
    if created.status_code != 303:
        return [f"creation answered {created.status_code}"]
    job_url = created.headers["Location"]
    path = job_url[len(base):]
    phase, deleted, destroyed = "PENDING", False, False
    for method, child, form in ops:
        p = Probe("uws", method, path + child, data=form or None)
        r = send(session, base, p)
        record(p, r)
        names = {k.upper(): v for k, v in form}
        if deleted:
            if r.status_code != 404:
                bad.append(f"{p.describe()}: a deleted job answered {r.status_code}")
            continue
        if child == "" and (method == "DELETE" or names.get("ACTION", "").upper() == "DELETE"):
            if r.status_code != 303 or r.headers.get("Location") != url:
                bad.append(f"{p.describe()}: delete answered {r.status_code} "
                           f"{r.headers.get('Location')}")
            deleted = _phase(session, job_url).startswith("NotFound")
            if not deleted:
                bad.append(f"{p.describe()}: the job is still there")
            continue
        destroyed = destroyed or "DESTRUCTION" in names and r.status_code == 303
        now = _phase(session, job_url)
        if destroyed and now.startswith("NotFound"):
            deleted = True  # a destruction time in the past: the job is gone, as it should
            continue
        if now not in UWS_PHASES:
            bad.append(f"phase {now!r} after {p.describe()} is not a UWS phase")
        if phase in TERMINAL and now != phase:
            bad.append(f"{phase} -> {now} after {p.describe()}: a finished job changed")
        if phase != "PENDING" and now == "PENDING":
            bad.append(f"{phase} -> PENDING after {p.describe()}")
        if method == "POST" and "PHASE" in names and "ACTION" not in names:
            wanted = names["PHASE"].strip().upper()
            if wanted not in ("RUN", "ABORT") and r.status_code != 400:
                bad.append(f"{p.describe()}: PHASE={wanted} answered {r.status_code}")
            if wanted == "ABORT" and phase in ("PENDING", "QUEUED", "EXECUTING") and \
                    r.status_code == 303 and now not in TERMINAL:
                bad.append(f"ABORT left the job {now}")
            if wanted == "RUN" and phase == "PENDING" and r.status_code == 303 and \
                    now == "PENDING":
                bad.append("RUN left the job PENDING")
        if method == "POST" and child == "/executionduration" and r.status_code == 303 \
                and phase != "PENDING":
            bad.append(f"executionDuration changed in phase {phase}")
        phase = now if now in UWS_PHASES else phase
    if not deleted:
        session.delete(job_url, allow_redirects=False, timeout=30)
    return bad


# ---- the bench ---------------------------------------------------------------------------


def context_from(base: str, session: requests.Session | None = None) -> Context:
    """A few real IDs, keys and collections, asked of the server itself."""
    s = session or requests.Session()
    r = s.get(base + "/tap/sync", params={
        "LANG": "ADQL", "RESPONSEFORMAT": "csv",
        "QUERY": "SELECT TOP 20 o.obs_publisher_did, a.uri, o.obs_collection FROM "
                 "ivoa.obscore AS o JOIN spherex.plane AS p ON p.obs_publisher_did = "
                 "o.obs_publisher_did JOIN spherex.artifact AS a ON a.planeid = p.planeid "
                 "WHERE o.dataproduct_type = 'image' ORDER BY 1"}, timeout=60)
    r.raise_for_status()
    rows = [line.split(",") for line in r.text.splitlines()[1:] if line]
    return Context(sorted({x[0] for x in rows}), sorted({x[1] for x in rows}),
                   sorted({x[2] for x in rows}))


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chalicelib bench fuzz")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--seconds", type=float, default=900.0, help="stop after this long")
    p.add_argument("--archive", help="serve this archive (default: build a small one)")
    p.add_argument("--show", type=int, default=10, help="offending requests to print")
    p.add_argument("--uws-share", type=float, default=0.05,
                   help="fraction of examples that are UWS operation sequences")
    return p.parse_args(argv)


def build_archive(folder: Path) -> str:
    from ...ingest.delivery import ingest
    from ...lake.storage import Archive
    from ..synth import synthesize

    synthesize(folder / "synth", weeks=1, image_size=64, images_per_week=24, seed=7)
    arch = Archive.from_env(str(folder / "archive"))
    for d in sorted(p for p in (folder / "synth").iterdir() if p.is_dir()):
        ingest(d, arch)
    return arch.url


class Tally:
    def __init__(self, secrets: tuple[str, ...]):
        self.secrets = secrets
        self.requests = 0
        self.kinds: Counter[str] = Counter()
        self.offending: list[tuple[str, str]] = []
        self.statuses: Counter[int] = Counter()

    def record(self, p: Probe, r: requests.Response) -> None:
        self.requests += 1
        self.statuses[r.status_code] += 1
        for found in problems(p, r.status_code, r.headers.get("Content-Type", ""), r.content,
                              self.secrets):
            kind = found.split(":", 1)[0]
            self.kinds[kind] += 1
            if len(self.offending) < 1000:
                self.offending.append((found, f"{p.describe()} -> {r.text[:200]!r}"))

    def violation(self, text: str) -> None:
        self.kinds["uws"] += 1
        self.offending.append(("uws: " + text, ""))


def main(argv: list[str]) -> None:
    a = _args(argv)
    import logging
    import os

    os.environ["QUIET_HTTP"] = "1"
    os.environ["RATE_LIMIT"] = "0"  # every request comes from one address: measure the service
    logging.getLogger("chalicelib").setLevel(logging.CRITICAL)  # tracebacks counted, not shown
    from ..localserver import start_background

    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        t0 = time.perf_counter()
        url = a.archive or build_archive(Path(tmp))
        srv, base = start_background(url)
        try:
            print(f"archive {url} ({time.perf_counter() - t0:.1f} s), serving on {base}",
                  flush=True)
            _fuzz(a, base, (url, str(Path(url).resolve())))
        finally:
            srv.server.shutdown()
            srv.server.server_close()
            from ...jobs import runtime as jobs

            jobs.reset()


def _fuzz(a: argparse.Namespace, base: str, secrets: tuple[str, ...]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    session = requests.Session()
    ctx = context_from(base, session)
    tally = Tally(secrets)
    deadline = time.monotonic() + a.seconds
    created: list[str] = []

    def one(p: Probe) -> None:
        r = send(session, base, p)
        tally.record(p, r)
        if p.path.endswith("/async") and p.method == "POST" and r.status_code == 303:
            created.append(r.headers["Location"])

    n_uws = max(1, int(a.requests * a.uws_share / 5))  # a sequence is ~5 requests
    strategy = st.one_of(any_request(ctx).map(lambda p: ("one", p)),
                         st.tuples(st.sampled_from(sorted(JOBS)), uws_ops()).map(
                             lambda t: ("uws", t)))
    # hypothesis as a generator only: no shrinking, no database, the seed fixed
    cfg = settings(max_examples=10 ** 9, deadline=None, database=None, phases=[Phase.generate],
                   suppress_health_check=list(HealthCheck))
    done_uws = [0]

    class Enough(Exception):
        pass

    @cfg
    @given(strategy)
    def drive(item):
        if tally.requests >= a.requests or time.monotonic() > deadline:
            raise Enough
        kind, value = item
        if kind == "uws":
            if done_uws[0] >= n_uws:
                return
            done_uws[0] += 1
            for v in run_uws(session, base, value[0], value[1], tally.record):
                tally.violation(v)
            tally.requests += len(value[1]) + 2  # creation, phase reads, clean-up
        else:
            one(value)
        while len(created) > 20:
            session.delete(created.pop(0), allow_redirects=False, timeout=30)

    from hypothesis import seed as hseed

    t0 = time.perf_counter()
    try:
        hseed(a.seed)(drive)()
    except Enough:
        pass
    for job in created:
        session.delete(job, allow_redirects=False, timeout=30)
    seconds = time.perf_counter() - t0
    _report(tally, seconds, done_uws[0], a.show)


def _report(t: Tally, seconds: float, uws: int, show: int) -> None:
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(t.statuses.items()))
    print(f"requests: {t.requests} in {seconds:.0f} s ({t.requests / max(seconds, 1e-9):.0f}/s)"
          f", of which {uws} UWS operation sequences")
    print(f"statuses: {statuses}")
    print(f"5xx answers: {t.kinds['5xx']} (goal 0)")
    print(f"errors not in the documented form: {t.kinds['form']} (goal 0)")
    print(f"leaks in error texts: {t.kinds['leak']} (goal 0)")
    print(f"UWS state-machine violations: {t.kinds['uws']} (goal 0)")
    seen: set[tuple[str, str]] = set()
    for found, what in t.offending:  # one line per kind of problem and path
        key = (found.split(":", 1)[0], what.split(" ?")[0].split(" form")[0][:60])
        if key in seen:
            continue
        seen.add(key)
        print(f"  {found} <- {what}")
        if len(seen) >= show:
            break
    ok = not any(t.kinds[k] for k in ("5xx", "form", "leak", "uws"))
    print("PASS" if ok else "FAIL")

