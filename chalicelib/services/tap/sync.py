"""TAP 1.1: sync and async ADQL queries, VOSI resources and DALI examples.

A thin protocol layer: ADQL goes through chalicelib.adql to DuckDB SQL, runs on the one
catalogue, and leaves through chalicelib.votable in the requested format.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from xml.sax.saxutils import escape

import pyarrow as pa

from ...dali import UsageError
from ...query import runtime
from ...query.catalogue import Catalogue, QueryError, QueryTimeout
from ...web import observability
from ...web.params import Params, Reply, parse_maxrec
from . import meta as tapmeta

SYNC_TIMEOUT = float(os.environ.get("TAP_SYNC_TIMEOUT", "25"))  # API Gateway allows 29 s
ASYNC_TIMEOUT = float(os.environ.get("TAP_ASYNC_TIMEOUT", "600"))
DEFAULT_MAXREC = int(os.environ.get("TAP_DEFAULT_MAXREC", "100000"))
HARD_MAXREC = int(os.environ.get("TAP_HARD_MAXREC", "5000000"))
UPLOAD_LIMIT = 20 << 20  # bytes per request
LANGS = {"ADQL", "ADQL-2.0", "ADQL-2.1"}


class TapUsageError(UsageError):
    """The caller's mistake: answered with a VOTable error and a 400."""


@dataclass
class QueryResult:
    body: bytes
    content_type: str
    rows: int
    overflow: bool
    seconds: float


def _error(message: str, status: int = 400) -> Reply:
    from ...render.votable import error_document

    return Reply(status, error_document(message), "application/x-votable+xml")


def _check_lang(params: Params) -> str:
    request = params.get("REQUEST")
    if request is not None and request.lower() != "doquery":
        raise TapUsageError(f"REQUEST={request} is not supported; use doQuery")
    lang = params.get("LANG")
    if lang is None:
        raise TapUsageError("LANG is missing; use LANG=ADQL")
    if lang.upper() not in LANGS:
        raise TapUsageError(f"LANG={lang} is not supported; use ADQL (2.0 or 2.1)")
    query = params.get("QUERY")
    if not query or not query.strip():
        raise TapUsageError("QUERY is missing or empty")
    return query


def run_query(params: Params, cat: Catalogue, timeout: float) -> QueryResult:
    """Translate, run and serialise one TAP query; raises TapUsageError for bad input."""
    from ...query import adql
    from ...query.uploads import load_uploads
    from ...render import votable

    t0 = time.perf_counter()
    query = _check_lang(params)
    try:
        fmt = votable.parse_format(params.get("RESPONSEFORMAT") or params.get("FORMAT"))
    except votable.UnsupportedFormat as e:
        raise TapUsageError(str(e)) from None
    maxrec = parse_maxrec(params, DEFAULT_MAXREC, HARD_MAXREC, TapUsageError)
    uploads, upload_tables = load_uploads(params, UPLOAD_LIMIT)
    tables = tapmeta.all_tables()
    try:
        tr = adql.translate(query, tables, box_sql=cat.box_sql, uploads=upload_tables)
    except adql.AdqlError as e:
        raise TapUsageError(f"Invalid ADQL: {e}") from None
    try:
        table = cat.query(tr.sql, timeout=timeout, max_rows=maxrec + 1, uploads=uploads)
    except QueryError as e:
        raise TapUsageError(f"Query failed: {e}") from None
    overflow = table.num_rows > maxrec
    table = table.slice(0, maxrec)
    fields = [_field(rc, table.schema.field(i).type) for i, rc in enumerate(tr.columns)]
    table = _rename(table, [f.name for f in fields])
    extra = []
    if any(f.name == "obs_publisher_did" for f in fields):  # the same DataLink as SIA
        from ..datalink import bind_fields, descriptors

        fields, extra = bind_fields(fields), descriptors(cat.base_url)
    body, ctype = votable.write(table, fields, fmt, overflow=overflow, resources_after=extra,
                                infos=[("release", str(cat.release.number), None)])
    return QueryResult(body, ctype, table.num_rows, overflow, time.perf_counter() - t0)


def _field(rc, arrow_type: pa.DataType):
    from ...render.votable import Field

    if rc.column is not None:
        return Field.from_column(rc.column, name=rc.name)
    return Field.from_arrow(rc.name, arrow_type, geometry=rc.geometry)


def _rename(table: pa.Table, names: list[str]) -> pa.Table:
    return table.rename_columns(names) if table.column_names != names else table


def sync(params: Params, base: str) -> Reply:
    cat = runtime.catalogue(base)
    try:
        res = run_query(params, cat, SYNC_TIMEOUT)
    except TapUsageError as e:
        return _error(str(e))
    except QueryTimeout:
        return _error(f"The query ran longer than the synchronous limit of {SYNC_TIMEOUT:g} s."
                      f" Submit it as an asynchronous job to {base}/tap/async (limit "
                      f"{ASYNC_TIMEOUT:g} s), e.g. pyvo's TAPService.run_async.", 400)
    observability.add(rows=res.rows, overflow=res.overflow)
    return Reply(200, res.body, res.content_type,
                 {"X-Rows": str(res.rows), "X-Query-Seconds": f"{res.seconds:.3f}"})


def availability() -> Reply:
    return Reply.xml(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
        "<vosi:available>true</vosi:available>"
        "<vosi:note>The service is accepting queries</vosi:note></vosi:availability>")


def handle(rest: str, method: str, params: Params, base: str) -> Reply:
    rest = rest.strip("/")
    head = rest.split("/", 1)[0]
    if rest == "sync":
        return sync(params, base)
    if head == "async":
        from .asyncjobs import handle_async

        return handle_async(rest[len("async"):], method, params, base)
    if rest == "availability":
        return availability()
    if rest == "capabilities":
        return Reply.xml(tapmeta.capabilities(base))
    if rest == "tables":
        return Reply.xml(tapmeta.tableset(params.get("detail")))
    if head == "tables":
        xml = tapmeta.table_document(rest.split("/", 1)[1])
        return Reply.xml(xml) if xml else Reply.text(f"no table {rest[7:]!r}", 404)
    if rest == "examples":
        return Reply(200, tapmeta.examples(base), "application/xhtml+xml")
    return Reply.text(f"Not found: /tap/{escape(rest)}", 404)

