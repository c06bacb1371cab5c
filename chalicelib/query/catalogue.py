"""The catalogue: the one query engine over the archive's tables.

Opens the Delta tables of a release (the latest, or a pinned one) as Arrow datasets in a
sandboxed DuckDB connection, exposes them as the served tables (ivoa.obscore,
spherex.*, TAP_SCHEMA.*) holding only released rows, and runs SQL with a time limit.
TAP, SIA, DataLink, coverage and job planning all query through it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import settings
from ..geometry import sky, sqlfunctions
from ..geometry.sqlfunctions import BoxSql, sql_in, sql_list, sql_str
from ..lake import deltalog, releases, schema
from ..lake.storage import Archive, duckdb_s3
from ..lake.tables import COMPACTED_PARTITION, has_column, open_table

THREADS = 2  # a Lambda of 3,538 MB or more has two vCPUs


def release_ttl(archive: Archive) -> float:
    """Seconds a release check stays good. Locally the check is a stat (done per query);
    on S3 it is a HEAD, done at most once a second so a committed delivery is still
    visible within a second (CATALOGUE_RELEASE_TTL overrides)."""
    ttl = settings().catalogue_release_ttl
    return ttl if ttl is not None else (1.0 if archive.is_s3 else 0.0)


class QueryTimeout(Exception):
    pass


class QueryError(Exception):
    """The query failed for a reason the caller can fix (bad column, type, ...)."""


def _empty(table: schema.Table) -> pa.Table:
    return table.arrow_schema().empty_table()


def tap_schema_tables(extra: dict[str, schema.Table] | None = None) -> dict[str, pa.Table]:
    """TAP_SCHEMA.* rows, generated from the schema module (describing themselves too)."""
    tables = {**schema.TABLES, **TAP_SCHEMA_TABLES, **(extra or {})}
    schemas = sorted({t.schema_name for t in tables.values()})
    rows = {
        "schemas": {"schema_name": schemas,
                    "description": [schema.SCHEMA_DESCRIPTIONS.get(s, "") for s in schemas],
                    "utype": [None] * len(schemas), "schema_index": list(range(len(schemas)))},
        "tables": {"schema_name": [], "table_name": [], "table_type": [], "description": [],
                   "utype": [], "table_index": []},
        "columns": {k: [] for k in ("table_name", "column_name", "datatype", "arraysize",
                                    "xtype", "size", "description", "utype", "unit", "ucd",
                                    "indexed", "principal", "std", "column_index")},
        "keys": {"key_id": [], "from_table": [], "target_table": [], "description": [],
                 "utype": []},
        "key_columns": {"key_id": [], "from_column": [], "target_column": []},
    }
    for ti, t in enumerate(tables.values()):
        r = rows["tables"]
        for k, v in (("schema_name", t.schema_name), ("table_name", t.name),
                     ("table_type", t.table_type), ("description", t.description),
                     ("utype", t.utype), ("table_index", ti)):
            r[k].append(v)
        for ci, c in enumerate(t.served):
            r = rows["columns"]
            vals = (t.name, c.adql_name, c.datatype, c.arraysize, c.xtype, None, c.description,
                    c.utype, c.unit, c.ucd, int(c.indexed), int(c.principal), int(c.std), ci)
            for k, v in zip(r, vals):
                r[k].append(v)
        for fk in t.keys:
            for k, v in (("key_id", fk.key_id), ("from_table", t.name),
                         ("target_table", fk.target), ("description", fk.description),
                         ("utype", None)):
                rows["keys"][k].append(v)
            for a, b in fk.columns:
                for k, v in (("key_id", fk.key_id), ("from_column", a), ("target_column", b)):
                    rows["key_columns"][k].append(v)
    out = {}
    for name, cols in rows.items():
        t = TAP_SCHEMA_TABLES[f"TAP_SCHEMA.{name}"]
        out[name] = pa.table({c.name: pa.array(cols[c.name], c.arrow) for c in t.columns})
    return out


def _ts(name: str, desc: str, cols: list[tuple], keys: tuple = ()) -> schema.Table:
    columns = tuple(schema.Column(c[0], c[1], c[2], principal=True, std=True,
                                  nullable=c[0] not in ("table_name", "column_name"))
                    for c in cols)
    fks = tuple(schema.ForeignKey(f"{name}_{a}", f"TAP_SCHEMA.{target}", ((a, b),),
                                  f"{a} refers to {target}.{b}") for a, target, b in keys)
    return schema.Table(f"TAP_SCHEMA.{name}", desc, columns, physical="", keys=fks)


S, I32 = pa.string(), pa.int32()
TAP_SCHEMA_TABLES = {t.name: t for t in (
    _ts("schemas", "Schemas of this service", [
        ("schema_name", S, "schema name"), ("description", S, "description"),
        ("utype", S, "utype"), ("schema_index", I32, "ordering hint")]),
    _ts("tables", "Tables of this service", [
        ("schema_name", S, "schema of the table"), ("table_name", S, "qualified name"),
        ("table_type", S, "table or view"), ("description", S, "description"),
        ("utype", S, "utype"), ("table_index", I32, "ordering hint")],
        (("schema_name", "schemas", "schema_name"),)),
    _ts("columns", "Columns of every table", [
        ("table_name", S, "qualified table name"), ("column_name", S, "column name"),
        ("datatype", S, "VOTable datatype"), ("arraysize", S, "VOTable arraysize"),
        ("xtype", S, "VOTable xtype"), ("size", I32, "deprecated; use arraysize"),
        ("description", S, "description"), ("utype", S, "utype"), ("unit", S, "VO unit"),
        ("ucd", S, "UCD"), ("indexed", I32, "1 if indexed"),
        ("principal", I32, "1 if principal"), ("std", I32, "1 if defined by a standard"),
        ("column_index", I32, "ordering hint")],
        (("table_name", "tables", "table_name"),)),
    _ts("keys", "Foreign keys", [
        ("key_id", S, "key id"), ("from_table", S, "table with the key"),
        ("target_table", S, "table referred to"), ("description", S, "description"),
        ("utype", S, "utype")],
        (("from_table", "tables", "table_name"), ("target_table", "tables", "table_name"))),
    _ts("key_columns", "Columns of the foreign keys", [
        ("key_id", S, "key id"), ("from_column", S, "column in from_table"),
        ("target_column", S, "column in target_table")],
        (("key_id", "keys", "key_id"),)),
)}


@dataclass
class FileStats:
    """Per-file min/max of a table's columns from the Delta log: which files a box can
    touch is known before DuckDB opens any of them."""

    uris: list[str]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    runs: list[tuple[str | None, str | None]]  # (min, max) ingest run id per file

    @classmethod
    def of(cls, dt) -> FileStats:
        uris = dt.file_uris()
        actions = dt.get_add_actions(flatten=True)
        actions = actions if isinstance(actions, pa.Table) else pa.table(actions)
        row = {p.rsplit("/", 1)[-1]: i for i, p in enumerate(actions["path"].to_pylist())}
        order = pa.array([row[u.rsplit("/", 1)[-1]] for u in uris], pa.int64())
        actions = actions.take(order)
        rows = actions["num_records"].fill_null(-2).to_numpy()  # unknown: never "all null"
        low, high = {}, {}
        runs = [(None, None)] * len(uris)
        if "min.ingest_id" in actions.column_names:
            runs = list(zip(actions["min.ingest_id"].to_pylist(),
                            actions["max.ingest_id"].to_pylist()))
        for name in actions.column_names:
            kind, _, col = name.partition(".")
            typ = actions[name].type
            if kind not in ("min", "max") or not (pa.types.is_integer(typ)
                                                   or pa.types.is_floating(typ)):
                continue
            # a missing statistic is unbounded: the file is never pruned on it ...
            fill = -np.inf if kind == "min" else np.inf
            vals = actions[name].cast(pa.float64()).fill_null(fill).to_numpy()
            vals = np.nan_to_num(vals, nan=fill)
            nulls = f"null_count.{col}"
            if nulls in actions.column_names:  # ... unless the column is all null there
                empty = actions[nulls].fill_null(-1).to_numpy() == rows
                vals = np.where(empty, -fill, vals)
            (low if kind == "min" else high)[col] = vals
        return cls(uris, low, high, runs)

    @classmethod
    def of_log(cls, log: deltalog.TableLog) -> FileStats:
        """The same from our own log replay (deltalog): no DeltaTable needed."""
        uris, adds = log.uris(), list(log.files.values())
        rows = np.array([a.stats.get("numRecords", -2) for a in adds], np.float64)
        low, high = {}, {}
        for col in log.numeric_columns():
            for kind, stat, fill in (("min", "minValues", -np.inf), ("max", "maxValues", np.inf)):
                vals = np.array([_number(a.stats.get(stat, {}).get(col), fill) for a in adds],
                                np.float64)
                nulls = np.array([a.stats.get("nullCount", {}).get(col, -1) for a in adds],
                                 np.float64)
                (low if kind == "min" else high)[col] = np.where(nulls == rows, -fill, vals)
        runs = [(a.stats.get("minValues", {}).get("ingest_id"),
                 a.stats.get("maxValues", {}).get("ingest_id")) for a in adds]
        return cls(uris, low, high, runs)

    def visibility(self, runs: set[str]) -> tuple[list[str], list[str]]:
        """Files whose rows are all released, and files that need the row filter. A file
        of one run is decided whole (an unreleased one is not read at all); compacted
        files hold only runs released before compaction (see maintenance.compact)."""
        clean, mixed = [], []
        for uri, (lo, hi) in zip(self.uris, self.runs):
            if f"/{COMPACTED_PARTITION}" in uri or (lo is not None and lo == hi and lo in runs):
                clean.append(uri)
            elif lo is None or lo != hi:
                mixed.append(uri)
        return clean, mixed

    def largest(self, col: str, unknown: float) -> float:
        """Largest value of col in any file (0 without rows), `unknown` when a file that
        has values lacks the statistic."""
        high = self.high.get(col)
        if high is None:
            return unknown
        return float(min(unknown, max(0.0, high.max(initial=-np.inf))))

    def touching(self, col: str, ranges: list[tuple[float, float]]) -> np.ndarray:
        """Files whose [min, max] of col meets any of the inclusive ranges."""
        if col not in self.low or col not in self.high:
            return np.ones(len(self.uris), bool)
        lo, hi = self.low[col], self.high[col]
        hit = np.zeros(len(self.uris), bool)
        for a, b in ranges:
            hit |= (hi >= a) & (lo <= b)
        return hit


@dataclass
class Opened:
    release: releases.Release
    con: duckdb.DuckDBPyConnection
    objects: dict[str, object]
    files: dict[str, FileStats] = field(default_factory=dict)  # per physical table
    loaded: set[str] = field(default_factory=set)  # physical tables with their views
    # Queries run on the connection itself, one at a time: DuckDB's Parquet metadata
    # cache does not serve cursors, and re-reading footers cost ~80 % of a cone query.
    # A Lambda container serves one request at a time anyway. Reentrant: a query loads
    # the tables it names while holding it.
    lock: threading.RLock = field(default_factory=threading.RLock)
    load: object = None  # load(physical name): open a table of this release

    @property
    def max_footprint_radius(self) -> float:
        """The widest footprint of the release widens every pruning box; unknown (a file
        without the statistic) means no pruning rather than lost rows."""
        if "ivoa.obscore" not in self.loaded and self.load is not None:
            self.load("ivoa.obscore")
        stats = self.files.get("ivoa.obscore")
        return stats.largest("s_rmax", 180.0) if stats is not None else 0.0


def _served_pattern(t: schema.Table) -> re.Pattern:
    sch, name = t.name.split(".")
    return re.compile(rf'(?<![\w$])"?{re.escape(sch)}"?\s*\.\s*"?{re.escape(name)}(?![\w$])',
                      re.IGNORECASE)


SERVED_PATTERNS = {t.name: _served_pattern(t) for t in schema.TABLES.values()}


class Catalogue:
    """Query the archive as of a release. `release=None` follows the latest release.

    A release opens without touching the tables: each physical table (its Delta log,
    its views) is opened when a query first names it, so a cone on ivoa.obscore reads
    nothing of the CAOM tables."""

    def __init__(self, archive: Archive, release: int | None = None, base_url: str = ""):
        self.archive = archive
        self.pinned = release
        self.base_url = base_url.rstrip("/")
        self._opened: Opened | None = None
        self._lock = threading.Lock()
        self._tables: dict = {}  # DeltaTable per table, moved forward incrementally
        self._checked = -float("inf")  # when the latest release number was last checked
        self.active = 0  # queries running or waiting on this catalogue
        self._count = threading.Lock()
        self.ttl = release_ttl(archive)

    # ---- opening ------------------------------------------------------------------
    def current(self) -> Opened:
        """The open release, reopened when a newer release exists (checked every call
        without listing storage, at most once per `ttl` seconds, so a committed delivery
        is visible to the next query, or within a second on S3)."""
        with self._lock:
            if self._opened is None and self.pinned is None:
                # a new catalogue: the release pointer, one GET (no LIST); a pointer
                # behind the newest release is caught by the check after `ttl`
                self._opened = self._open(releases.latest(self.archive))
                self._checked = time.monotonic()
                return self._opened
            number = self.pinned if self.pinned is not None else self._latest()
            if self._opened is None or self._opened.release.number != number:
                self._opened = self._open(releases.load(self.archive, number))
            return self._opened

    def _latest(self) -> int:
        known = self._opened.release.number if self._opened is not None else 0
        now = time.monotonic()
        if self._opened is not None and now - self._checked < self.ttl:
            return known
        number = releases.newest(self.archive, known)
        self._checked = now
        return number

    @property
    def release(self) -> releases.Release:
        return self.current().release

    def _open(self, rel: releases.Release) -> Opened:
        con = duckdb.connect(config={"threads": THREADS, "autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False})
        sqlfunctions.register(con)
        if self.archive.is_s3:
            duckdb_s3(con)
        objects = {}
        for name, rows in tap_schema_tables().items():
            objects[f"_ts_{name}"] = rows
        for name, obj in objects.items():
            con.register(name, obj)
        for t in schema.TABLES.values():
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {t.schema_name}")
        con.execute('CREATE SCHEMA IF NOT EXISTS "TAP_SCHEMA"')
        for name in tap_schema_tables():
            con.execute(f'CREATE VIEW "TAP_SCHEMA".{name} AS SELECT * FROM _ts_{name}')
        # the sandbox: no files or URLs but the archive's tables, no extensions, no
        # changing this afterwards (queries are also checked on their AST)
        # keep Parquet footers in memory: re-reading them was ~80 % of a cone query
        con.execute("SET parquet_metadata_cache = true")
        con.execute(f"SET allowed_directories = [{sql_str(self.archive.path('tables/'))}, "
                    f"{sql_str(str(BIND_ROOT) + '/')}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
        opened = Opened(rel, con, objects)
        opened.load = lambda name: self._load(opened, name)
        return opened

    def _load(self, opened: Opened, name: str) -> None:
        """Open physical table `name` of the release and create its views (served
        tables over it hold only released rows)."""
        with opened.lock:
            if name in opened.loaded:
                return
            rel, con, table = opened.release, opened.con, schema.PHYSICAL[name]
            with self._lock:  # the DeltaTables are shared by the releases opened
                dt = self._table(name, rel.versions.get(name)) if rel.number else None
                if dt is not None:
                    opened.files[name] = FileStats.of_log(dt) \
                        if isinstance(dt, deltalog.TableLog) else FileStats.of(dt)
            runs = set(rel.runs.values())
            clean, mixed = opened.files[name].visibility(runs) if dt is not None else ([], [])
            if clean or mixed:  # DuckDB's own Parquet reader: statistics pruning,
                # metadata cache; filename lets a box skip files without opening them
                cols = "*" + _derived(table, dt)
                bind = _bind_file(dt)
                scans = [f"SELECT {cols} FROM {_scan(clean, table, bind)}"] if clean else []
                if mixed:
                    scans.append(f"SELECT {cols} FROM {_scan(mixed, table, bind)} WHERE ingest_id "
                                 f"IN ({sql_in(sorted(runs))})")
                con.execute(f"CREATE VIEW {_phys(name)} AS "
                            + " UNION ALL BY NAME ".join(scans))
            else:
                empty = _empty(table).append_column("filename", pa.array([], pa.string()))
                opened.objects[_phys(name)] = empty
                con.register(_phys(name), empty)
            for t in schema.TABLES.values():
                if t.physical != name:
                    continue
                # the file name (for box_sql) and the packed footprint (for the geometry
                # tests) ride along; queries cannot name them (the translator only knows
                # served columns and expands * itself)
                hidden = [f'"{c.name}"' for c in table.columns
                          if c.name == schema.PACKED_REGION]
                cols = ", ".join([self._select(c) for c in t.served] + hidden
                                 + ['filename AS "_file"'])
                con.execute(f"CREATE VIEW {t.name} AS SELECT {cols} FROM {_phys(name)}")
            opened.loaded.add(name)

    def _load_named(self, opened: Opened, sql: str) -> None:
        """Open the tables a query names (a superset is harmless: it costs a load)."""
        for served, pattern in SERVED_PATTERNS.items():
            physical = schema.TABLES[served].physical
            if physical not in opened.loaded and pattern.search(sql):
                self._load(opened, physical)

    def stats(self, table: str) -> FileStats | None:
        """Per-file statistics of a served table (opening it if needed)."""
        opened = self.current()
        physical = schema.TABLES[table].physical
        self._load(opened, physical)
        return opened.files.get(physical)

    def _table(self, name: str, version: int | None):
        """The table at a version, reusing the loaded log: a new release costs only the
        commits since the last one, not the whole history. Our own log reader reads each
        log object once (deltalake GETs every commit twice and LISTs the log); deltalake
        is the fallback for logs it does not handle."""
        if version is None:
            return None
        dt = self._tables.get(name)
        if isinstance(dt, deltalog.TableLog):
            try:
                dt.advance(version)
                return dt
            except deltalog.Unsupported:  # older version, or a commit it cannot replay
                dt = None
        if dt is None:
            try:
                dt = deltalog.TableLog.open(self.archive, name, version)
            except deltalog.Unsupported:
                dt = None
        if dt is None or not isinstance(dt, deltalog.TableLog) and dt.version() > version:
            dt = open_table(self.archive, name, version)
            if dt is None:
                self._tables.pop(name, None)
                return None
        elif not isinstance(dt, deltalog.TableLog) and dt.version() != version:
            dt.load_as_version(version)
        self._tables[name] = dt
        return dt

    def _select(self, c: schema.Column) -> str:
        if c.name == "access_url":
            return f"{sql_str(self.base_url)} || access_url AS access_url"
        return f'"{c.name}"'

    # ---- querying -----------------------------------------------------------------
    def query(self, sql: str, timeout: float = 60.0, max_rows: int | None = None,
              uploads: dict[str, pa.Table] | None = None) -> pa.Table:
        """Run one SELECT (already validated by the caller) and return Arrow rows."""
        with self._count:  # read without the lock by query.runtime to pick an idle one
            self.active += 1
        try:
            opened = self.current()
            with opened.lock:
                self._load_named(opened, sql)
                return self._run(opened.con, sql, timeout, max_rows, uploads or {})
        finally:
            with self._count:
                self.active -= 1

    @staticmethod
    def _run(cur: duckdb.DuckDBPyConnection, sql: str, timeout: float,
             max_rows: int | None, uploads: dict[str, pa.Table]) -> pa.Table:
        for name, table in uploads.items():
            cur.register(f"_upload_{name}", table)
        timer = threading.Timer(timeout, cur.interrupt)
        timer.start()
        try:
            rel = cur.execute(sql)
            reader = rel.fetch_record_batch(rows_per_batch=max(1, min(max_rows or 65536,
                                                                      65536)))
            batches, n = [], 0
            for b in reader:
                batches.append(b)
                n += b.num_rows
                if max_rows is not None and n >= max_rows:
                    break
            table = pa.Table.from_batches(batches, reader.schema)
            if timer.finished.is_set():  # the limit passed, even if the interrupt came
                raise duckdb.InterruptException("time limit")  # before execute() began
            return table.slice(0, max_rows) if max_rows is not None else table
        except duckdb.InterruptException:
            raise QueryTimeout(f"query exceeded the time limit of {timeout:g} s") from None
        except (duckdb.BinderException, duckdb.ParserException, duckdb.ConversionException,
                duckdb.InvalidInputException, duckdb.CatalogException,
                duckdb.OutOfRangeException, duckdb.NotImplementedException) as e:
            raise QueryError(str(e).split("\n")[0]) from None
        finally:
            timer.cancel()
            for name in uploads:
                cur.unregister(f"_upload_{name}")

    def translation_key(self) -> tuple:
        """What box_sql's output depends on besides its arguments: the release (its files
        and widest footprint). ADQL translations are cached under it."""
        return self.archive.url, self.current().release.number

    def box_sql(self, ra_col: str, dec_col: str, ra: float, dec: float, radius: float,
                footprint: bool, table: str | None = None,
                alias: str | None = None) -> BoxSql:
        """Where rows touching a cap can be, for Parquet statistics to prune with: an
        RA/Dec box (widened by the release's largest footprint radius when footprint=True)
        and, for a served table, the only files whose statistics meet both the box and
        the HEALPix cells of the cap (files are runs of the HEALPix order)."""
        opened = self.current()
        if table:
            self._load(opened, schema.TABLES[table].physical)
        r = radius + (opened.max_footprint_radius if footprint else 0.0) + 1e-9
        lo, hi, ranges = sky.cap_bounds(ra, dec, r)
        stats = opened.files.get(schema.TABLES[table].physical) if table else None
        if stats is None:
            return BoxSql(ra_col, dec_col, lo, hi, ranges)
        hit = stats.touching(_name(dec_col), [(lo, hi)]) & stats.touching(_name(ra_col), ranges)
        # hpx is the HEALPix index of (s_ra, s_dec), the centre footprints are boxed by
        if "hpx" in stats.low and (footprint or _name(ra_col) == "s_ra"):
            hit &= stats.touching("hpx", sky.cap_cells(ra, dec, r) or [(-np.inf, np.inf)])
        if hit.all():
            return BoxSql(ra_col, dec_col, lo, hi, ranges)
        # DuckDB drops files failing a filter on its filename column before opening them
        files = [u for u, h in zip(stats.uris, hit) if h]
        file_col = f'"{alias}"."_file"' if alias else '"_file"'
        return BoxSql(ra_col, dec_col, lo, hi, ranges, file_col, files)


def _number(v, fill: float) -> float:
    """A statistic as a float; missing or not a number: unbounded (`fill`)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return fill
    return fill if v != v else float(v)  # NaN


def _name(column_sql: str) -> str:
    """The bare column name of a possibly qualified, quoted reference."""
    return column_sql.rsplit(".", 1)[-1].strip('"')


def _derived(table: schema.Table, dt) -> str:
    """Columns a table written before they existed lacks, computed (slowly) until a
    compaction rewrites it with them."""
    if all(c.name != schema.PACKED_REGION for c in table.columns) or \
            (dt.has_column(schema.PACKED_REGION) if isinstance(dt, deltalog.TableLog)
             else has_column(dt, schema.PACKED_REGION)):
        return ""
    return f", sky_pack(s_region) AS {schema.PACKED_REGION}"


def _scan(files: list[str], table: schema.Table, bind: str) -> str:
    return (f"read_parquet({sql_list([bind, *files])}, filename = true, "
            f"hive_partitioning = true, hive_types = {_hive_types(table)})")


BIND_ROOT = Path(tempfile.gettempdir()) / "catalogue-bind"


def _bind_file(dt) -> str:
    """A local Parquet file of no rows with the table's file schema, listed first so
    DuckDB binds the view from it: binding read the first data file's footer (on S3 a
    HEAD and a GET of a file the query may not touch). Queries never name it in their
    file filters; a full scan reads its empty footer. One per schema, shared by the
    processes of the machine (written under a temporary name, then renamed)."""
    if isinstance(dt, deltalog.TableLog):
        arrow = deltalog.arrow_schema(dt.schema, dt.partition_columns)
        parts = dt.partition_columns
    else:
        parts = list(dt.metadata().partition_columns)
        arrow = pa.schema([f for f in pa.schema(dt.schema().to_arrow())
                           if f.name not in parts])
    key = hashlib.sha256(f"{arrow}|{parts}".encode()).hexdigest()[:20]
    folder = BIND_ROOT.joinpath(key, *(f"{p}=_" for p in parts))
    path = folder / "schema.parquet"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{os.getpid()}-{threading.get_ident()}.parquet"
        pq.write_table(arrow.empty_table(), tmp)
        os.replace(tmp, path)
    return str(path)


def _hive_types(table: schema.Table) -> str:
    """Partition values are strings (a delivery like 2025W35 must not become a date)."""
    return "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in table.partition_by) + "}"


def _phys(name: str) -> str:
    return "_t_" + name.replace(".", "_")
