"""TAP self-description: VOSI capabilities (TAPRegExt), tables, and DALI examples.

Tables come from the schema module; capabilities declare exactly what the ADQL
translator and the writers implement.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from ...config import settings
from ...lake import schema
from ...query.catalogue import TAP_SCHEMA_TABLES
from . import errors as tap

XSI = "http://www.w3.org/2001/XMLSchema-instance"
TR = "ivo://ivoa.net/std/TAPRegExt"

# COALESCE works too; its type, features-adql-conditional, is left undeclared because
# the taplint we validate with (STILTS 3.4) rejects that key as unknown
UNDECLARED = {TR + "#features-adql-conditional"}


OUTPUT_FORMATS = [
    ("output-votable-td", "application/x-votable+xml", ["votable"]),
    ("output-votable-binary2", "application/x-votable+xml;serialization=BINARY2",
     ["votable/b2"]),
    (None, "application/vnd.apache.parquet;content=votable", ["parquet"]),
    (None, "application/fits", ["fits"]),
    (None, "text/csv", ["csv"]),
    (None, "text/tab-separated-values", ["tsv"]),
    (None, "text/html", ["html"]),
]


def _interface(url: str, role: bool = False) -> str:
    r = ' role="std" version="1.1"' if role else ""
    use = "base" if role else "full"
    return (f'<interface xsi:type="vs:ParamHTTP"{r}><accessURL use="{use}">{escape(url)}'
            "</accessURL></interface>")


def _language() -> str:
    from ...query.adql import LANGUAGE_FEATURES  # deferred: sqlglot (~80 ms) on SIA's path

    feats = "".join(
        f'<languageFeatures type="{kind}">' + "".join(
            f"<feature><form>{escape(form)}</form>"
            + (f"<description>{escape(d)}</description>" if d else "") + "</feature>"
            for form, d in forms) + "</languageFeatures>"
        for kind, forms in LANGUAGE_FEATURES.items() if kind not in UNDECLARED)
    return ("<language><name>ADQL</name>"
            '<version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>'
            '<version ivo-id="ivo://ivoa.net/std/ADQL#v2.1">2.1</version>'
            "<description>ADQL 2.1 translated to DuckDB; exact spherical geometry"
            "</description>" + feats + "</language>")


def _outputs() -> str:
    out = []
    for ivo_id, mime, aliases in OUTPUT_FORMATS:
        attr = f' ivo-id="{TR}#{ivo_id}"' if ivo_id else ""
        out.append(f"<outputFormat{attr}><mime>{escape(mime)}</mime>"
                   + "".join(f"<alias>{a}</alias>" for a in aliases) + "</outputFormat>")
    return "".join(out)


def capabilities(base: str) -> str:
    tap_url = f"{base}/tap"
    conf = settings()
    limits = (
        f'<uploadMethod ivo-id="{TR}#upload-inline"/>'
        f'<uploadMethod ivo-id="{TR}#upload-http"/>'
        "<retentionPeriod><default>604800</default><hard>604800</hard></retentionPeriod>"
        f"<executionDuration><default>{int(conf.tap_async_timeout)}</default>"
        f"<hard>{int(conf.tap_async_timeout)}</hard></executionDuration>"
        f'<outputLimit><default unit="row">{conf.tap_default_maxrec}</default>'
        f'<hard unit="row">{conf.tap_hard_maxrec}</hard></outputLimit>'
        f'<uploadLimit><hard unit="byte">{tap.UPLOAD_LIMIT}</hard></uploadLimit>')
    vosi = "".join(
        f'<capability standardID="{sid}">{_interface(f"{tap_url}/{path}")}</capability>'
        for sid, path in (("ivo://ivoa.net/std/VOSI#capabilities", "capabilities"),
                          ("ivo://ivoa.net/std/VOSI#availability", "availability"),
                          ("ivo://ivoa.net/std/VOSI#tables-1.1", "tables"),
                          ("ivo://ivoa.net/std/DALI#examples", "examples")))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
        f'xmlns:xsi="{XSI}" xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0" '
        'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
        'xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">'
        '<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">'
        + _interface(tap_url, role=True)
        + '<dataModel ivo-id="ivo://ivoa.net/std/ObsCore#core-1.1">ObsCore-1.1</dataModel>'
        + _language() + _outputs() + limits + "</capability>" + vosi
        + "</vosi:capabilities>")


def vosi_capabilities(base: str, caps: list[tuple[str, str, str]]) -> str:
    """A VOSI capabilities document for (standardID, path under base, extra interface
    attributes) triples: what SIA and the async services declare."""
    body = "".join(
        f'<capability standardID="{sid}"><interface xsi:type="vs:ParamHTTP"{attrs}>'
        f'<accessURL use="base">{escape(base)}/{path}</accessURL></interface></capability>'
        for sid, path, attrs in caps)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
            f'xmlns:xsi="{XSI}" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1">'
            + body + "</vosi:capabilities>")


def _opt(tag: str, value) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>" if value else ""


def _column(c: schema.Column) -> str:
    size = f" arraysize={quoteattr(c.arraysize)}" if c.arraysize else ""
    xt = f" extendedType={quoteattr(c.xtype)}" if c.xtype else ""
    flags = "".join(f"<flag>{f}</flag>" for f, on in (("indexed", c.indexed),
                                                       ("nullable", c.nullable)) if on)
    return ("<column>" + _opt("name", c.adql_name) + _opt("description", c.description)
            + _opt("unit", c.unit) + _opt("ucd", c.ucd) + _opt("utype", c.utype)
            + f'<dataType xsi:type="vs:VOTableType"{size}{xt}>{c.datatype}</dataType>'
            + flags + "</column>")


def _table(t: schema.Table, detail: bool = True, root: bool = False) -> str:
    tag = "vosi:table" if root else "table"
    ns = (' xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
          f'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" xmlns:xsi="{XSI}"'
          if root else "")
    body = _opt("name", t.name) + _opt("description", t.description) + _opt("utype", t.utype)
    if detail:
        body += "".join(_column(c) for c in t.served)
        for fk in t.keys:
            body += ("<foreignKey>" + _opt("targetTable", fk.target) + "".join(
                f"<fkColumn><fromColumn>{a}</fromColumn><targetColumn>{b}</targetColumn>"
                "</fkColumn>" for a, b in fk.columns) + _opt("description", fk.description)
                + "</foreignKey>")
    return f'<{tag}{ns} type="{t.table_type}">{body}</{tag}>'


def all_tables() -> dict[str, schema.Table]:
    return {**schema.TABLES, **TAP_SCHEMA_TABLES}


def tableset(detail: str | None = None) -> str:
    tables = all_tables()
    by_schema: dict[str, list[schema.Table]] = {}
    for t in tables.values():
        by_schema.setdefault(t.schema_name, []).append(t)
    full = detail != "min"
    schemas = "".join(
        "<schema>" + _opt("name", s) + _opt("description", schema.SCHEMA_DESCRIPTIONS.get(s))
        + "".join(_table(t, full) for t in ts) + "</schema>" for s, ts in by_schema.items())
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
            f'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" xmlns:xsi="{XSI}">'
            + schemas + "</vosi:tableset>")


def table_document(name: str) -> str | None:
    for key, t in all_tables().items():
        if key.lower() == name.lower():
            return '<?xml version="1.0" encoding="UTF-8"?>\n' + _table(t, root=True)
    return None


EXAMPLES = [
    ("cone", "Images covering a position",
     "All SPHEREx images whose footprint contains the north ecliptic pole deep field.",
     "SELECT obs_publisher_did, obs_collection, energy_bandpassname, t_min, access_url\n"
     "FROM spherex.obscore\n"
     "WHERE CONTAINS(POINT('ICRS', 270.0, 66.56), s_region) = 1"),
    ("circle", "Images overlapping a circle, one band",
     "Detector D3 images touching a 0.1 degree circle, newest first.",
     "SELECT TOP 100 obs_id, s_ra, s_dec, em_min, em_max, t_min\n"
     "FROM ivoa.obscore\n"
     "WHERE INTERSECTS(CIRCLE('ICRS', 270.0, 66.56, 0.1), s_region) = 1\n"
     "  AND em_min < 2.0e-6 AND em_max > 2.0e-6\nORDER BY t_min DESC"),
    ("caom", "CAOM planes joined with their files",
     "The plane footprint and the file of each image near a position.",
     "SELECT p.obs_publisher_did, p.energy_bandpassname, a.uri, a.content_length\n"
     "FROM spherex.plane AS p JOIN spherex.artifact AS a ON a.planeid = p.planeid\n"
     "WHERE CONTAINS(POINT('ICRS', 270.0, 66.56), p.poly) = 1"),
    ("calibration", "Calibration files an image used",
     "Provenance: the calibration planes behind science images of one planning period.",
     "SELECT TOP 20 pr.planeid, pr.product, pr.input_uri\n"
     "FROM spherex.provenance AS pr"),
    ("coverage-count", "Images per collection and band",
     "How many images each collection holds per detector band.",
     "SELECT obs_collection, energy_bandpassname, COUNT(*) AS n\n"
     "FROM spherex.obscore\nGROUP BY obs_collection, energy_bandpassname\n"
     "ORDER BY obs_collection, energy_bandpassname"),
]


def examples(base: str) -> str:
    items = "".join(
        f'<div typeof="example" id="{i}" resource="#{i}"><h2 property="name">{escape(n)}</h2>'
        f'<p property="description">{escape(d)}</p>'
        f'<pre property="query" class="dachs-ex-sql">{escape(q)}</pre></div>'
        for i, n, d, q in EXAMPLES)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>TAP examples</title>'
            f'</head><body vocab="ivo://ivoa.net/std/DALI-examples#"><h1>Examples for '
            f"{escape(base)}/tap</h1>{items}</body></html>")


