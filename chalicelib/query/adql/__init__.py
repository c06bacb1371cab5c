"""ADQL 2.1 -> DuckDB SQL: parse with a narrow sqlglot dialect, check every name against the
declared tables and functions, translate by static type, emit SQL from the AST.

    t = translate("SELECT TOP 5 obs_id FROM ivoa.obscore WHERE ...", tables, box_sql=cat.box_sql)
    cat.query(t.sql)  # t.columns: result names and metadata in SELECT order
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp

from ...lake import schema
from . import sandbox, spark
from .dialect import parse
from .errors import AdqlError, fail
from .features import LANGUAGE_FEATURES
from .translate import OutCol, Translator
from .values import GEOMETRY

# Ten times a long hand-written query; a 1000-vertex polygon takes ~14,000.
MAX_QUERY_CHARS = 100_000

__all__ = ["LANGUAGE_FEATURES", "AdqlError", "ResultColumn", "Translation", "translate"]


@dataclass
class ResultColumn:
    name: str  # output name, unique, in SELECT order
    column: schema.Column | None  # metadata of the source column (plain references, aliases)
    geometry: str | None  # 'point' | 'circle' | 'polygon' when the value is a geometry


@dataclass
class Translation:
    sql: str
    columns: list[ResultColumn]
    tables: list[str] = field(default_factory=list)  # tables referenced (schema.table)
    notes: list[str] = field(default_factory=list)  # warnings for the answer's INFOs


class _Cache:
    """Translations of recent ADQL texts, bounded (LRU). A translation depends on the
    text, the declared tables and, through the pruning boxes, the release whose files
    the boxes name: box_sql's owner says which with `translation_key()` (no key: not
    cached). A repeated query then skips parsing and translating (~1-2 ms)."""

    def __init__(self, size: int = 512):
        self.size, self.entries, self.lock = size, OrderedDict(), threading.Lock()

    @staticmethod
    def key(adql: str, tables: Mapping[str, schema.Table], box_sql, dialect: str):
        box_key = None
        if box_sql is not None:
            of = getattr(getattr(box_sql, "__self__", None), "translation_key", None)
            if of is None or getattr(box_sql, "__name__", "") != "box_sql":
                return None
            box_key = of()
        # the tables by identity (the declared Table objects are module constants; the
        # entry keeps them alive, so an id is never reused while its entry exists)
        return adql, dialect, tuple((k, id(t)) for k, t in tables.items()), box_key

    def get(self, key):
        with self.lock:
            hit = self.entries.get(key)
            if hit is not None:
                self.entries.move_to_end(key)
                return hit[0]
        return None

    def put(self, key, value: Translation, tables: Mapping[str, schema.Table]) -> None:
        with self.lock:
            self.entries[key] = (value, tuple(tables.values()))
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


CACHE = _Cache()


def translate(adql: str, tables: Mapping[str, schema.Table], *,
              box_sql: Callable[..., str] | None = None,
              uploads: Mapping[str, schema.Table] | None = None,
              dialect: str = "duckdb",
              relation: spark.Relation | None = None) -> Translation:
    """Translate one ADQL query; AdqlError says what is wrong and where. Repeated texts
    come from a bounded cache (not with uploads, whose tables change per request, nor
    with a `relation`). dialect="spark": Spark SQL over temp views, named by
    `relation(schema, table, alias)` (default spark.view_name)."""
    key = None if uploads or relation else CACHE.key(adql, tables, box_sql, dialect)
    hit = CACHE.get(key) if key is not None else None
    if hit is None:
        hit = _translate(adql, tables, box_sql=box_sql, uploads=uploads, dialect=dialect,
                         relation=relation)
        if key is not None:
            CACHE.put(key, hit, tables)
    return Translation(hit.sql, list(hit.columns), list(hit.tables), list(hit.notes))


def _translate(adql: str, tables: Mapping[str, schema.Table], *,
               box_sql: Callable[..., str] | None,
               uploads: Mapping[str, schema.Table] | None, dialect: str,
               relation: spark.Relation | None = None) -> Translation:
    if len(adql) > MAX_QUERY_CHARS:  # checked before parsing, which costs ~0.1 ms a char
        raise AdqlError(f"The query has {len(adql):,} characters; at most "
                        f"{MAX_QUERY_CHARS:,} are accepted (use TAP_UPLOAD for long lists)")
    tree = parse(adql)
    _check_integers(adql, tree)
    tr = Translator(adql, tables, uploads or {}, box_sql)
    try:
        out, cols = tr.run(tree)
        sandbox.check(out, tr.physical)
        if dialect == "spark":  # checked as DuckDB SQL, then rewritten node by node
            out = spark.to_spark(out, relation or spark.default_relation)
        sql = out.sql(dialect=dialect, copy=False, comments=False)
    except RecursionError:
        raise AdqlError("The query is nested too deeply") from None
    return Translation(sql, [_result(c) for c in cols], tr.referenced, tr.notes)


def _check_integers(text: str, tree) -> None:
    """An integer literal beyond a double's range is out of range, like 1e400 (and one
    of more than 4300 digits cannot even be read by int())."""
    for lit in tree.find_all(exp.Literal):
        if not lit.is_string and lit.this.isascii() and lit.this.isdigit() and \
                len(lit.this.lstrip("0")) > 309:
            raise fail(f"The number {lit.this[:20]}... ({len(lit.this)} digits) is out of "
                       "range", text, lit)


def _result(c: OutCol) -> ResultColumn:
    v = c.val
    column = v.column if v.op == "col" else None
    if column is None and "unit_text" in v.extra:  # IN_UNIT: the converted unit is known
        column = schema.Column(c.name, pa.float64(), f"Value in {v.extra['unit_text']}",
                               unit=v.extra["unit_text"])
    return ResultColumn(c.name, column, v.type if v.type in GEOMETRY else None)


def _warm() -> None:
    """Translate one pruned cone at import: sqlglot builds its DuckDB generator and
    dispatch tables on first use (~0.1 s), which a first query would otherwise pay
    after the catalogue opened (on Lambda the import runs in the init phase)."""
    from ...geometry.sqlfunctions import BoxSql  # deferred: only the warm-up needs it

    def box_sql(ra_col, dec_col, ra, dec, radius, **_):
        return BoxSql(ra_col, dec_col, dec - radius, dec + radius, [(ra - 1, ra + 1)],
                      '"_file"', ["warm.parquet"])

    try:
        _translate("SELECT TOP 1 obs_publisher_did, s_ra FROM ivoa.obscore WHERE "
                   "CONTAINS(POINT('ICRS', 10.0, 20.0), s_region) = 1 ORDER BY s_ra",
                   schema.TABLES, box_sql=box_sql, uploads=None, dialect="duckdb")
    except AdqlError:  # a schema without ivoa.obscore: nothing to warm
        pass


_warm()
