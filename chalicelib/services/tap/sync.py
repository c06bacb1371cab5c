"""TAP 1.1: sync and async ADQL queries, VOSI resources and DALI examples.

A thin protocol layer: ADQL goes through chalicelib.adql to DuckDB SQL, runs on the one
catalogue, and leaves through chalicelib.votable in the requested format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa

from ...config import Settings, settings
from ...query import adql, runtime
from ...query.catalogue import Catalogue, QueryError, QueryTimeout
from ...query.uploads import UploadUsageError, load_uploads
from ...render import votable
from ...web import observability
from ...web.load import sync_slot
from ...web.params import Params, parse_maxrec
from ...web.replies import Reply
from ..datalink import bind_fields, descriptors
from . import meta as tapmeta
from .errors import LANGS, UPLOAD_LIMIT, TapUsageError


@dataclass
class QueryResult:
    body: bytes
    content_type: str
    rows: int
    overflow: bool
    seconds: float


def _error(message: str, status: int = 400) -> Reply:
    return Reply(status, votable.error_document(message), "application/x-votable+xml")


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


def run_query(params: Params, cat: Catalogue, timeout: float,
              limits: Settings | None = None) -> QueryResult:
    """Translate, run and serialise one TAP query; raises TapUsageError for bad input.
    MAXREC's default and cap come from `limits` (the process settings if None)."""
    t0 = time.perf_counter()
    limits = limits or settings()
    query = _check_lang(params)
    try:
        fmt = votable.parse_format(params.get("RESPONSEFORMAT") or params.get("FORMAT"))
    except votable.UnsupportedFormat as e:
        raise TapUsageError(str(e)) from None
    maxrec = parse_maxrec(params, limits.tap_default_maxrec, limits.tap_hard_maxrec,
                          TapUsageError)
    try:
        uploads, upload_tables = load_uploads(params, UPLOAD_LIMIT)
    except UploadUsageError as e:
        raise TapUsageError(str(e)) from None
    tables = tapmeta.all_tables()
    try:
        tr = adql.translate(query, tables, box_sql=cat.box_sql, uploads=upload_tables,
                            dialect=getattr(cat, "dialect", "duckdb"),  # a SparkCatalogue
                            relation=getattr(cat, "relation", None))  # names its views
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
        fields, extra = bind_fields(fields), descriptors(cat.base_url)
    body, ctype = votable.write(table, fields, fmt, overflow=overflow, resources_after=extra,
                                title="TAP query result", query=query,
                                infos=[("release", str(cat.release.number), None),
                                       *(("WARNING", "coordinate system", n)
                                         for n in tr.notes)])
    return QueryResult(body, ctype, table.num_rows, overflow, time.perf_counter() - t0)


def _field(rc, arrow_type: pa.DataType):
    if rc.column is not None:
        return votable.Field.from_column(rc.column, name=rc.name)
    return votable.Field.from_arrow(rc.name, arrow_type, geometry=rc.geometry)


def _rename(table: pa.Table, names: list[str]) -> pa.Table:
    return table.rename_columns(names) if table.column_names != names else table


def sync(params: Params, base: str, conf: Settings | None = None) -> Reply:
    cat = runtime.catalogue(base)
    conf = conf or settings()
    try:
        with sync_slot():
            res = run_query(params, cat, conf.tap_sync_timeout, conf)
    except TapUsageError as e:
        return _error(str(e))
    except QueryTimeout:
        return _error(f"The query ran longer than the synchronous limit of "
                      f"{conf.tap_sync_timeout:g} s. Submit it as an asynchronous job to "
                      f"{base}/tap/async (limit "
                      f"{conf.tap_async_timeout:g} s), e.g. pyvo's TAPService.run_async.", 400)
    observability.add(rows=res.rows, overflow=res.overflow)
    return Reply(200, res.body, res.content_type,
                 {"X-Rows": str(res.rows), "X-Query-Seconds": f"{res.seconds:.3f}"})
