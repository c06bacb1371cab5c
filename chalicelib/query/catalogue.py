"""The catalogue: the one query engine over the archive's tables.

Opens the Delta tables of a release (the latest, or a pinned one) as Arrow datasets in a
sandboxed DuckDB connection, exposes them as the served tables (ivoa.obscore,
spherex.*, TAP_SCHEMA.*) holding only released rows, and runs SQL with a time limit.
TAP, SIA, DataLink, coverage and job planning all query through it.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import settings
from ..geometry import sky, sqlfunctions
from ..geometry.sqlfunctions import BoxSql, sql_in, sql_list, sql_str
from ..lake import deltalog, releases, schema
from ..lake.storage import Archive, duckdb_s3
from ..lake.tables import COMPACTED_PARTITION, has_column, open_table
from . import simplecone, spatial

THREADS = 2  # a Lambda of 3,538 MB or more has two vCPUs


def release_ttl(archive: Archive) -> float:
    """Seconds a release check stays good. Locally the check is a stat (done per query);
    on S3 it is a HEAD, done at most once a second so a committed delivery is still
    visible within a second (CATALOGUE_RELEASE_TTL overrides)."""
    ttl = settings().catalogue_release_ttl
    return ttl if ttl is not None else (1.0 if archive.is_s3 else 0.0)


class QueryTimeout(Exception):
    pass


_clock = time.monotonic  # bound here: tests replace the module's `time` for the TTL


class _Alarm:
    __slots__ = ("deadline", "action", "fired", "done")

    def __init__(self, deadline: float, action):
        self.deadline, self.action, self.fired, self.done = deadline, action, False, False


class Watchdog:
    """Time limits of the queries: one thread for all of them (a threading.Timer per
    query started a thread each time: ~1-2 ms of a 10 ms cone on a loaded machine)."""

    def __init__(self):
        self.alarms: list[_Alarm] = []
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def arm(self, timeout: float, action) -> _Alarm:
        alarm = _Alarm(_clock() + timeout, action)
        with self.cond:
            self.alarms.append(alarm)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._watch, name="query-watchdog",
                                               daemon=True)
                self.thread.start()
            self.cond.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> None:
        with self.cond:
            alarm.done = True
            self.alarms = [a for a in self.alarms if not a.done]

    def _watch(self) -> None:
        while True:
            with self.cond:
                now = _clock()
                due = [a for a in self.alarms if a.deadline <= now]
                for a in due:
                    a.fired, a.done = True, True
                self.alarms = [a for a in self.alarms if not a.done]
                wait = min((a.deadline for a in self.alarms), default=now + 3600) - now
                if not due:
                    self.cond.wait(max(wait, 0.0))
                    continue
            for a in due:  # outside the lock: interrupting may take a moment
                a.action()


WATCHDOG = Watchdog()


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
    sizes: list[int]  # bytes per file (what a scan of it reads at most)
    # text columns: (min per file, max per file); None where a file has no statistic
    text: dict[str, tuple[list[str | None], list[str | None]]] = field(default_factory=dict)

    @functools.cached_property
    def position(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.uris)}

    def position_of(self, uris: list[str]) -> np.ndarray:
        return np.array([self.position[u] for u in uris], np.int64)

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
        text: dict[str, tuple[list, list]] = {}
        for name in actions.column_names:
            kind, _, col = name.partition(".")
            typ = actions[name].type
            if kind in ("min", "max") and pa.types.is_string(typ) and \
                    actions[name].null_count < len(actions):  # as of_log: known bounds only
                lows, highs = text.setdefault(col, ([None] * len(uris), [None] * len(uris)))
                (lows if kind == "min" else highs)[:] = actions[name].to_pylist()
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
        return cls(uris, low, high, runs, actions["size_bytes"].fill_null(0).to_pylist(), text)

    @classmethod
    def of_table(cls, dt) -> FileStats:
        """From our log replay (TableLog) or from deltalake's table (the fallback)."""
        return cls.of_log(dt) if isinstance(dt, deltalog.TableLog) else cls.of(dt)

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
        return cls(uris, low, high, runs, [int(a.size or 0) for a in adds], _text_bounds(adds))

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

    def holding(self, col: str, values: list[str]) -> np.ndarray:
        """Files whose [min, max] of the text column col holds one of values (byte order
        of UTF-8, which is code point order, as Parquet compares); a file without the
        statistic may hold any."""
        bounds = self.text.get(col)
        if bounds is None:
            return np.ones(len(self.uris), bool)
        vals = sorted(values)
        out = np.ones(len(self.uris), bool)
        for i, (lo, hi) in enumerate(zip(*bounds, strict=True)):
            if lo is not None and hi is not None:
                j = bisect.bisect_left(vals, lo)
                out[i] = j < len(vals) and vals[j] <= hi
        return out

    def touching(self, col: str, ranges: list[tuple[float, float]]) -> np.ndarray:
        """Files whose [min, max] of col meets any of the inclusive ranges."""
        if col not in self.low or col not in self.high:
            return np.ones(len(self.uris), bool)
        lo, hi = self.low[col], self.high[col]
        hit = np.zeros(len(self.uris), bool)
        for a, b in ranges:
            hit |= (hi >= a) & (lo <= b)
        return hit

    def touching_cap(self, ra_col: str, dec_col: str, ra: float, dec: float, r: float,
                     box: tuple, footprint: bool) -> np.ndarray:
        """Files whose statistics meet a cap of radius r (already widened) and its RA/Dec
        box (sky.cap_bounds: lo, hi, RA ranges): the box columns' min/max, then the
        HEALPix cells (hpx is the cell of (s_ra, s_dec), which footprints are boxed by)."""
        lo, hi, ranges = box
        hit = self.touching(dec_col, [(lo, hi)]) & self.touching(ra_col, ranges)
        if "hpx" in self.low and (footprint or ra_col == "s_ra"):
            hit &= self.touching("hpx", sky.cap_cells(ra, dec, r) or [(-np.inf, np.inf)])
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
    # spatial indexes of this release's files holding several runs (their released rows)
    mixed_indexes: dict[str, spatial.SpatialIndex] = field(default_factory=dict)
    # per physical table: one spatial index over the release's indexed files, the files
    # it covers and the release's visible files (a cone meeting only covered or hidden
    # files is looked up once; made in the indexing thread, see _index_pending)
    combined: dict[str, tuple[spatial.SpatialIndex, set[str], set[str]]] = \
        field(default_factory=dict)
    # the cone lane: a second connection whose tables hold only a cone's candidate rows
    hot: duckdb.DuckDBPyConnection | None = None
    hot_tables: set[str] = field(default_factory=set)

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


@functools.lru_cache(maxsize=1024)
def _named_physical(sql: str) -> tuple[str, ...]:
    """The physical tables under the served tables a query names (kept: queries repeat,
    and the patterns were searched on every query)."""
    return tuple(dict.fromkeys(schema.TABLES[served].physical
                               for served, pattern in SERVED_PATTERNS.items()
                               if pattern.search(sql)))


_SHARED: dict[str, tuple[dict, spatial.RowGroups, list[int]]] = {}
_SHARED_LOCK = threading.Lock()


def _shared(archive: Archive, opener) -> tuple[dict, spatial.RowGroups, list[int]]:
    """The per-file spatial indexes, the row-group cache and the indexing generation of an
    archive, one per process."""
    with _SHARED_LOCK:
        got = _SHARED.get(archive.url)
        if got is None:
            got = _SHARED[archive.url] = ({}, spatial.RowGroups(opener), [0])
        return got


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
        # per data file (immutable, so shared by the releases and by the catalogues of
        # the process on this archive: one copy in memory however many lanes run): its
        # spatial index, made before the query after the first cone that touches it (that
        # first one, e.g. a cold start on S3, reads no more), and the cone lane's rows
        # _generation[0]: indexings so far (a part of translation_key: translations made
        # before a file was indexed, by any catalogue of the archive, are remade)
        self._indexes, self._row_groups, self._generation = _shared(archive, self._open_data)
        self._pending: dict[str, set[str]] = {}  # physical -> files to index
        self._indexer: threading.Thread | None = None  # indexing them, after a query
        self._checked = -float("inf")  # when the latest release number was last checked
        self.active = 0  # queries running or waiting on this catalogue
        self._count = threading.Lock()
        self.ttl = release_ttl(archive)
        self.simple = True  # answer simple cones in numpy (False: always through DuckDB)

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
        # no progress bar on stdout: a slow scan (a first cone's indexing under load)
        # printed one, which glued itself to a bench client's "ready" line
        con.execute("SET enable_progress_bar = false")
        allowed = [self.archive.path("tables/"), *(f"{r}/" for r in _bind_roots())]
        con.execute(f"SET allowed_directories = {sql_list(allowed)}")
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
                    opened.files[name] = FileStats.of_table(dt)
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
                empty = _located(_empty(table), [], [])
                opened.objects[_phys(name)] = empty
                con.register(_phys(name), empty)
            self._served_views(con, name)
            opened.loaded.add(name)

    def _served_views(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        """The served tables over physical table `name` (as the view _phys(name))."""
        table = schema.PHYSICAL[name]
        for t in schema.TABLES.values():
            if t.physical != name:
                continue
            # the file name and row number (for box_sql) and the packed footprint (for the
            # geometry tests) ride along; queries cannot name them (the translator only
            # knows served columns and expands * itself)
            hidden = [f'"{c.name}"' for c in table.columns if c.name == schema.PACKED_REGION]
            cols = ", ".join([self._select(c) for c in t.served] + hidden
                             + ['filename AS "_file"', 'file_row_number AS "_row"'])
            con.execute(f"CREATE VIEW {t.name} AS SELECT {cols} FROM {_phys(name)}")

    def _load_named(self, opened: Opened, sql: str) -> None:
        """Open the tables a query names (a superset is harmless: it costs a load)."""
        for physical in _named_physical(sql):
            if physical not in opened.loaded:
                self._load(opened, physical)

    def stats(self, table: str) -> FileStats | None:
        """Per-file statistics of a served table (opening it if needed)."""
        return self._stats_of(self.current(), schema.TABLES[table].physical)

    def _stats_of(self, opened: Opened, physical: str) -> FileStats | None:
        self._load(opened, physical)
        return opened.files.get(physical)

    def files_holding(self, table: str, col: str, values: list[str]) -> list[str] | None:
        """The files of served `table` whose statistics say they may hold one of `values`
        in text column `col` (None: all may). An ID lookup filters on them and DuckDB then
        opens no other file: on S3 each costs a HEAD and a GET, in every week's files."""
        stats = self.stats(table)
        if stats is None:
            return None
        hit = stats.holding(col, values)
        return None if hit.all() else [u for u, h in zip(stats.uris, hit, strict=True) if h]

    def file_stats(self, physical: str, release: int) -> FileStats | None:
        """The statistics of a physical table this catalogue holds for `release`, if that
        is its open release (None otherwise, or without files): a router pricing a job
        on that release reuses them instead of replaying the Delta log again."""
        opened = self.current()
        return self._stats_of(opened, physical) if opened.release.number == release else None

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
            try:
                with opened.lock:
                    self._load_named(opened, sql)
                    quick = self._simple_cone(opened, sql, max_rows) if not uploads else None
                    if quick is not None:
                        return quick
                    lane = self._cone_lane(opened, sql) if not uploads else None
                    if lane is not None:
                        return self._run(*lane, timeout, max_rows, {})
                    return self._run(opened.con, sql, timeout, max_rows, uploads or {})
            finally:
                if self._pending:
                    self._index_soon(opened)
        finally:
            with self._count:
                self.active -= 1

    def _index_soon(self, opened: Opened) -> None:
        """Index the files cones touched first in a thread, after the answer: done before
        the query, it was 250 of the 300 ms of a cold first cone (the translation of that
        same query had marked them). A query meanwhile waits for it on opened.lock."""
        with self._count:
            if self._indexer is not None and self._indexer.is_alive():
                return  # the files marked meanwhile go at the end of a later query
            # not a daemon: a process exiting while it ran inside DuckDB aborted
            # ("terminate called without an active exception"); exit waits for it
            self._indexer = threading.Thread(target=self._index_pending, args=(opened,),
                                             name="spatial-index", daemon=False)
            self._indexer.start()

    @staticmethod
    def _run(cur: duckdb.DuckDBPyConnection, sql: str, timeout: float,
             max_rows: int | None, uploads: dict[str, pa.Table]) -> pa.Table:
        for name, table in uploads.items():
            cur.register(f"_upload_{name}", table)
        timer = WATCHDOG.arm(timeout, cur.interrupt)
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
            if timer.fired:  # the limit passed, even if the interrupt came
                raise duckdb.InterruptException("time limit")  # before execute() began
            return table.slice(0, max_rows) if max_rows is not None else table
        except duckdb.InterruptException:
            raise QueryTimeout(f"query exceeded the time limit of {timeout:g} s") from None
        except (duckdb.BinderException, duckdb.ParserException, duckdb.ConversionException,
                duckdb.InvalidInputException, duckdb.CatalogException,
                duckdb.OutOfRangeException, duckdb.NotImplementedException) as e:
            raise QueryError(str(e).split("\n")[0]) from None
        finally:
            WATCHDOG.disarm(timer)
            for name in uploads:
                cur.unregister(f"_upload_{name}")

    def _open_data(self, uri: str):
        """A data file for pyarrow: a path here, a file object on S3."""
        return self.archive.fs.open(uri, "rb") if self.archive.is_s3 else uri

    def _cone_lane(self, opened: Opened, sql: str) -> tuple[duckdb.DuckDBPyConnection, str] | None:
        """A connection where the one table the query names holds only the candidate rows
        of its cone, taken from memory, and the query to run there; None (the normal
        path) unless the query names one served table once, over a box made with
        own=True in this release. The query runs as it is, but for its box (the
        candidates are inside it; DuckDB pushing it into the Arrow scan cost more than
        the query): its exact tests, other conditions, ORDER BY and TOP as ever."""
        plan = _lane_plan(sql) if "_row" in sql else None
        if plan is None:
            return None
        token, served, needed, stripped = plan
        cone = CONES.get((self.archive.url, opened.release.number), token)
        if cone is None:  # forgotten, or of another release: the normal path
            return None
        physical, per_file = cone
        if schema.TABLES[served].physical != physical:
            return None
        hot = self._hot_connection(opened, physical)
        hot.register(_phys(physical),
                     self._candidate_rows(opened, token, physical, per_file, needed))
        return hot, stripped

    def _candidate_rows(self, opened: Opened, token: int, physical: str,
                        per_file: dict[str, np.ndarray], names,
                        only: frozenset[str] | None = None) -> pa.Table:
        """The cone's candidate rows (see _rows_table), built once per cone (its release
        and token) and columns: a repeated cone takes nothing from the row-group
        cache again, so it costs the same however many files its rows lie in (ten
        unmerged weeks or one tier file; building was ~0.1 ms a file)."""
        def build() -> pa.Table:
            cols = _file_columns(schema.PHYSICAL[physical], names)
            return _rows_table(physical, [(uri, r, self._row_groups.take(uri, r, cols))
                                          for uri, r in per_file.items()], only)

        key = (self.archive.url, opened.release.number, token, frozenset(names), only)
        rows = CONES.table(key, build)
        LANE_ROWS[0] += rows.num_rows
        return rows

    def _simple_cone(self, opened: Opened, sql: str, max_rows: int | None) -> pa.Table | None:
        """A simple cone's answer computed on its candidate rows in numpy (see
        simplecone); None when the query is not one or its candidates are gone."""
        p = simplecone.plan(sql) if self.simple and ("_row" in sql or "(FALSE)" in sql) \
            else None
        if p is None or p.table not in schema.TABLES:
            return None
        physical = schema.TABLES[p.table].physical
        cone = CONES.get((self.archive.url, opened.release.number), p.token) \
            if p.token else (physical, {})  # token 0: the box met no file
        if cone is None or cone[0] != physical:
            return None
        read = _plan_columns(p, physical)
        if read is None:
            return None
        rows = self._candidate_rows(opened, p.token, physical, cone[1], read, read)
        out = self._result_schema(opened, physical, p)
        got = simplecone.answer(p, rows, out, self._served_value)
        return got.slice(0, max_rows) if max_rows is not None else got

    def _result_schema(self, opened: Opened, physical: str, p: simplecone.Plan) -> pa.Schema:
        """The Arrow schema DuckDB gives the plan's select list (asked once per list)."""
        key = (physical, p.source, p.select)
        got = RESULT_SCHEMAS.get(key)
        if got is None:
            hot = self._hot_connection(opened, physical)
            reader = hot.execute(f"SELECT {p.select} FROM {p.source} LIMIT 0") \
                .fetch_record_batch()
            if len(RESULT_SCHEMAS) >= 4096:  # distinct select lists: bounded
                RESULT_SCHEMAS.clear()
            got = RESULT_SCHEMAS[key] = reader.schema
        return got

    def _served_value(self, column: str, values: pa.Array) -> pa.Array:
        """A physical column as the served views show it (see _select)."""
        if column == "access_url":
            return pc.binary_join_element_wise(pa.scalar(self.base_url), values, "")
        return values

    def _hot_connection(self, opened: Opened, physical: str) -> duckdb.DuckDBPyConnection:
        if opened.hot is None:
            con = duckdb.connect(config={"threads": 1, "autoinstall_known_extensions": False,
                                         "autoload_known_extensions": False})
            sqlfunctions.register(con)
            for t in schema.TABLES.values():
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {t.schema_name}")
            con.execute("SET enable_external_access = false")
            con.execute("SET enable_progress_bar = false")
            con.execute("SET lock_configuration = true")
            opened.hot = con
        if physical not in opened.hot_tables:
            table = schema.PHYSICAL[physical]
            opened.hot.register(_phys(physical), _located(_empty(table), [], []))
            self._served_views(opened.hot, physical)
            opened.hot_tables.add(physical)
        return opened.hot

    def translation_key(self) -> tuple:
        """What box_sql's output depends on besides its arguments: the release (its files
        and widest footprint). ADQL translations are cached under it."""
        return self.archive.url, self.current().release.number, self._generation[0]

    def box_sql(self, ra_col: str, dec_col: str, ra: float, dec: float, radius: float,
                footprint: bool, table: str | None = None,
                alias: str | None = None, own: bool = False) -> BoxSql:
        """Where rows touching a cap can be, for Parquet statistics to prune with: an
        RA/Dec box (widened by the release's largest footprint radius when footprint=True)
        and, for a served table, the only files whose statistics meet both the box and
        the HEALPix cells of the cap (files are runs of the HEALPix order). On s_ra/s_dec
        the release's spatial index narrows that to the rows whose bounding caps (centres,
        for footprint=False) meet the cap: row-number ranges per file. `own`: the box is
        a conjunct of the WHERE of the query block whose FROM holds `alias`, so that FROM
        item may be replaced by those rows alone (the cone lane, see _cone_lane)."""
        opened = self.current()
        physical = schema.TABLES[table].physical if table else None
        if physical:
            self._load(opened, physical)
        r = radius + (opened.max_footprint_radius if footprint else 0.0) + 1e-9
        lo, hi, ranges = sky.cap_bounds(ra, dec, r)
        stats = opened.files.get(physical) if physical else None
        if stats is None:
            return BoxSql(ra_col, dec_col, lo, hi, ranges)
        names = bare_name(ra_col), bare_name(dec_col)
        hit = stats.touching_cap(*names, ra, dec, r, (lo, hi, ranges), footprint)
        file_col = f'"{alias}"."_file"' if alias else '"_file"'
        per_file = self._candidates(opened, physical, [u for u, h in zip(stats.uris, hit) if h],
                                    ra, dec, radius, footprint) \
            if names == ("s_ra", "s_dec") else None
        if per_file is not None:  # the rows whose bounding caps meet the cap, by row number
            token = None
            if own and alias:  # the row numbers stay here: a filter on them in the SQL
                # cost DuckDB more than it saved (measured: 75 ms against 15 ms)
                token = CONES.put((self.archive.url, opened.release.number), physical,
                                  per_file)
            row_col = f'"{alias}"."_row"' if alias else '"_row"'
            return BoxSql(ra_col, dec_col, lo, hi, ranges, file_col, list(per_file),
                          row_col, token)
        if hit.all():
            return BoxSql(ra_col, dec_col, lo, hi, ranges)
        # DuckDB drops files failing a filter on its filename column before opening them
        files = [u for u, h in zip(stats.uris, hit) if h]
        return BoxSql(ra_col, dec_col, lo, hi, ranges, file_col, files)

    def _index_pending(self, opened: Opened) -> None:
        """Index the files earlier cones touched first (the translations made since then
        are remade: translation_key changes)."""
        pending, self._pending = self._pending, {}
        with opened.lock:  # one query's worth of waiting, not one per file
            self._index_files(opened, pending)
            parts = {physical: self._release_indexes(opened, physical)
                     for physical in pending if physical in opened.loaded}
        for physical, (indexes, covered, visible) in parts.items():  # (~0.1 s at 1 M rows:
            if indexes:  # not under the lock) the release's files as one index
                opened.combined[physical] = (spatial.SpatialIndex.merged(indexes), covered,
                                             visible)

    def _release_indexes(self, opened: Opened, physical: str):
        """The spatial indexes the release's visible files of a table have so far, the
        files they cover and the visible files."""
        stats = opened.files.get(physical)
        if stats is None:
            return [], set(), set()
        clean, mixed = stats.visibility(set(opened.release.runs.values()))
        got = [(u, self._indexes.get(u)) for u in clean] + \
            [(u, opened.mixed_indexes.get(u)) for u in mixed]
        return [ix for _, ix in got if ix is not None], \
            {u for u, ix in got if ix is not None}, set(clean) | set(mixed)

    def _index_files(self, opened: Opened, pending: dict[str, set[str]]) -> None:
        for physical, files in pending.items():
            if physical in opened.loaded:
                self.file_indexes(opened, physical, sorted(files), now=True)

    def _candidates(self, opened: Opened, physical: str, files: list[str], ra: float,
                    dec: float, radius: float, footprint: bool) -> dict | None:
        """Candidate row numbers per file (files without any left out), from the spatial
        indexes of the files; None while a file has none yet (its first cone) or the
        cone holds too many rows for it to pay."""
        combined = opened.combined.get(physical)
        if combined is not None and all(u in combined[1] or u not in combined[2]
                                        for u in files):
            return self._combined_candidates(combined[0], files, ra, dec, radius, footprint)
        indexes = self.file_indexes(opened, physical, files)
        if indexes is None:
            return None
        if len(indexes) > 1:  # the next cone looks them up at once (made after this one)
            self._pending.setdefault(physical, set())
        cells, out, total = spatial.Cells(ra, dec), {}, 0
        for uri, index in indexes.items():
            found = index.candidates(ra, dec, radius, footprint, cells)
            if found is None:
                return None
            total += len(found)
            if total > spatial.MAX_CANDIDATES:
                return None
            if len(found):
                out[uri] = np.sort(index.row[found]).astype(np.int64)
        return out

    @staticmethod
    def _combined_candidates(index: spatial.SpatialIndex, files: list[str], ra: float,
                             dec: float, radius: float, footprint: bool) -> dict | None:
        """_candidates from one index over the release's files: the same row numbers per
        file, in the order of `files` (rows of files outside it dropped)."""
        found = index.candidates(ra, dec, radius, footprint)
        if found is None:
            return None
        number = {u: k for k, u in enumerate(index.uris)}
        wanted = np.zeros(len(index.uris) + 1, bool)
        wanted[[number.get(u, len(index.uris)) for u in files]] = True
        wanted[-1] = False
        file = index.file[found]
        keep = wanted[file]
        file, row = file[keep], index.row[found[keep]].astype(np.int64)
        order = np.lexsort((row, file))
        file, row = file[order], row[order]
        cuts = np.flatnonzero(file[1:] != file[:-1]) + 1
        per = {index.uris[int(file[a])]: row[a:b] for a, b in
               zip([0, *cuts.tolist()], [*cuts.tolist(), len(file)]) if b > a}
        return {u: per[u] for u in files if u in per}

    def file_indexes(self, opened: Opened, physical: str, files: list[str],
                     now: bool = False) -> dict[str, spatial.SpatialIndex] | None:
        """The spatial index of each of these files of the release (visible rows only);
        None when a file is touched for the first time (unless `now`): it is read before
        the next query, so a first cone (a cold start on S3) reads nothing more."""
        table = schema.PHYSICAL[physical]
        if not {"s_ra", "s_dec"} <= {c.name for c in table.columns}:
            return None
        with opened.lock:
            stats, dt = opened.files.get(physical), self._tables.get(physical)
            if stats is None or dt is None:
                return None
            runs = set(opened.release.runs.values())
            clean, mixed = stats.visibility(runs)
            visible, mixed = set(clean) | set(mixed), set(mixed)
            have = {u: (opened.mixed_indexes if u in mixed else self._indexes).get(u)
                    for u in files if u in visible}  # the view holds no other file
            missing = [u for u, ix in have.items() if ix is None]
            if missing and not now:
                self._pending.setdefault(physical, set()).update(missing)
                return None
            for group, visible in (([u for u in missing if u not in mixed], None),
                                   ([u for u in missing if u in mixed], runs)):
                if not group:
                    continue
                got = self._read_rows(opened.con, physical, dt, group, visible)
                for u in group:
                    ix = spatial.SpatialIndex([u], [got[u]])
                    (opened.mixed_indexes if u in mixed else self._indexes)[u] = ix
                    have[u] = ix
            if missing:
                self._generation[0] += 1  # box_sql answers differently: new translations
            if len(self._indexes) > 2 * len(stats.uris) + 64:  # files of old releases
                live = set(stats.uris)  # (another release's catalogue re-reads what it lost)
                for u in [u for u in list(self._indexes) if u not in live]:
                    self._indexes.pop(u, None)
                self._row_groups.forget(live)
            return have

    @staticmethod
    def _read_rows(con, name: str, dt, uris: list[str],
                   runs: set[str] | None = None) -> dict[str, spatial.FileRows]:
        """The centre, radius and cell of every row of these files (one scan); only the
        rows of these ingest runs when `runs` is given."""
        table = schema.PHYSICAL[name]

        def col(c: str, typ: str) -> str:
            there = dt.has_column(c) if isinstance(dt, deltalog.TableLog) else has_column(dt, c)
            return f'"{c}"' if there else f"NULL::{typ} AS {c}"

        got = con.execute(
            f"SELECT filename, file_row_number, s_ra, s_dec, {col('s_rmax', 'DOUBLE')}, "
            f"{col('hpx', 'BIGINT')} FROM {_scan(uris, table, _bind_file(dt))}"
            + (f" WHERE ingest_id IN ({sql_in(sorted(runs))})" if runs is not None else "")
        ).arrow()
        if isinstance(got, pa.RecordBatchReader):
            got = got.read_all()
        names = got["filename"].to_numpy(zero_copy_only=False)
        order = np.argsort(names, kind="stable")
        names = names[order]
        cuts = np.flatnonzero(names[1:] != names[:-1]) + 1
        starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(names)]])

        def arr(c: str, fill: float) -> np.ndarray:
            return got[c].cast(pa.float64()).fill_null(fill).to_numpy()[order]

        row, ra, dec = got["file_row_number"].to_numpy()[order], arr("s_ra", np.nan), \
            arr("s_dec", np.nan)
        rmax, hpx = arr("s_rmax", np.inf), arr("hpx", np.nan)
        out = {u: spatial.FileRows.of([], [], [], []) for u in uris}
        for a, b in zip(starts.tolist(), ends.tolist()):
            out[names[a]] = spatial.FileRows.of(row[a:b], ra[a:b], dec[a:b], rmax[a:b], hpx[a:b])
        return out


class Cones:
    """Candidate rows of the boxes box_sql made, by token (unique in the process: a
    translation cached by one catalogue of a release serves the others of that release),
    most recent last, at most `limit` rows in all; and the candidate tables built from
    them (bounded in bytes)."""

    def __init__(self, limit: int = 2_000_000, table_bytes: int = 64 << 20):
        self.limit, self.rows = limit, 0
        # candidate tables built from the row-group cache, per cone and columns
        self.tables: OrderedDict[tuple, pa.Table] = OrderedDict()
        self.table_bytes, self.bytes = table_bytes, 0
        self.items: OrderedDict[tuple, tuple[str, dict[str, np.ndarray]]] = OrderedDict()
        self.lock = threading.Lock()
        self.tokens = itertools.count(1)

    def put(self, release: tuple, physical: str, per_file: dict[str, np.ndarray]) -> int:
        with self.lock:
            token = next(self.tokens)
            self.items[(*release, token)] = (physical, per_file)
            self.rows += sum(len(r) for r in per_file.values())
            while self.rows > self.limit and len(self.items) > 1:
                _, (_, old) = self.items.popitem(last=False)
                self.rows -= sum(len(r) for r in old.values())
            return token

    def get(self, release: tuple, token: int):
        with self.lock:
            got = self.items.get((*release, token))
            if got is not None:
                self.items.move_to_end((*release, token))
            return got

    def table(self, key: tuple, build) -> pa.Table:
        """The candidate table of a cone and columns (`key`), built by build() the first
        time; at most `table_bytes` of them kept, least recently used dropped, none over
        a quarter of that (a deep field's rows: building is small next to its query)."""
        with self.lock:
            got = self.tables.get(key)
            if got is not None:
                self.tables.move_to_end(key)
                return got
        got = build()
        size = got.nbytes
        if size <= self.table_bytes // 4:
            with self.lock:
                if key not in self.tables:
                    self.tables[key] = got
                    self.bytes += size
                while self.bytes > self.table_bytes and self.tables:
                    _, old = self.tables.popitem(last=False)
                    self.bytes -= old.nbytes
        return got


CONES = Cones()
RESULT_SCHEMAS: dict[tuple, pa.Schema] = {}  # DuckDB's result types per select list
LANE_ROWS = [0]  # candidate rows the cone lane has run queries on (benchmarks read it)
NAMES = {c.name: re.compile(rf"(?<![\w$]){re.escape(c.name.lower())}(?![\w$])")
         for t in schema.PHYSICAL.values() for c in t.columns}
@functools.lru_cache(maxsize=1024)
def _lane_plan(sql: str) -> tuple[int, str, tuple[str, ...], str] | None:
    """What the cone lane needs of a query (translations repeat, so this is kept): the
    token of its box, the one served table it names, the physical columns it names and
    the query without that box; None when it names no box or not one table once."""
    m = CONE_TOKEN.search(sql)
    if m is None or "tap_schema" in sql.lower():
        return None
    bare = simplecone.STRING.sub("''", sql)  # names in string literals (file paths) do not count
    named = [t for t, pattern in SERVED_PATTERNS.items() for _ in pattern.finditer(bare)]
    if len(named) != 1:
        return None
    table = schema.PHYSICAL[schema.TABLES[named[0]].physical]
    lower = bare.lower()
    needed = [c.name for c in table.columns if NAMES[c.name].search(lower)]
    stripped = _without_box(sql, m)
    return (int(m.group(1)), named[0], tuple(needed), stripped) if stripped != sql else None


def _without_box(sql: str, token: re.Match) -> str:
    """The query with the pruning box that starts at the token replaced by TRUE."""
    start = token.start()
    depth, i = 1, start + 1
    while depth and i < len(sql):
        ch = sql[i]
        if ch in "'\"":  # a literal or identifier: skip to its end ('' and "" escape)
            j = sql.find(ch, i + 1)
            while j != -1 and sql[j + 1:j + 2] == ch:
                j = sql.find(ch, j + 2)
            i = j if j != -1 else len(sql)
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        i += 1
    return sql[:start] + "(TRUE)" + sql[i:] if depth == 0 else sql


CONE_TOKEN = re.compile(r'\((?:"[^"]*"\.)?"_row" <> -(\d+) AND ')


def _file_columns(table: schema.Table, names) -> list[str]:
    """The columns to read from a table's files for these physical columns: partition
    values are in the paths; the packed footprint comes with s_region (files written
    before it have only s_region)."""
    cols = [c for c in names if c not in table.partition_by]
    if schema.PACKED_REGION in cols:
        cols.append("s_region")
    return cols


def _located(t: pa.Table, files, rows) -> pa.Table:
    """A physical table's rows with the filename and file_row_number a scan adds."""
    return t.append_column("filename", pa.array(files, pa.string())) \
        .append_column("file_row_number", pa.array(rows, pa.int64()))


@functools.cache
def _arrow_schema(physical: str) -> pa.Schema:
    return schema.PHYSICAL[physical].arrow_schema()


@functools.cache
def _arrow_types(physical: str) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in _arrow_schema(physical)}


@functools.lru_cache(maxsize=1024)
def _plan_columns(p: simplecone.Plan, physical: str) -> frozenset[str] | None:
    """The physical columns a simple-cone plan reads, None when the numpy lane cannot
    answer it on this table (a column it lacks, a comparison across kinds): worked out
    once per plan, not per query."""
    types = _arrow_types(physical)
    read = frozenset(simplecone.columns(p))
    return read if read <= types.keys() and simplecone.comparable(p, types) else None


def _rows_table(physical: str, parts: list[tuple[str, np.ndarray, dict]],
                only: set[str] | None = None) -> pa.Table:
    """Rows of some files, (uri, row numbers, columns read) each, as the physical view
    has them: the columns read, the partition values of the files' paths, NULL for the
    columns the query does not name; one chunk (one batch per call of the exact tests).
    `only`: just these columns, without the file name and row number."""
    table = schema.PHYSICAL[physical]
    sizes = [len(r) for _, r, _ in parts]
    n = sum(sizes)
    paths = [_partition_values(uri) for uri, _, _ in parts]
    out = {}
    for f in _arrow_schema(physical):
        if only is not None and f.name not in only:
            continue
        if f.name in table.partition_by:
            vals = pa.array([d.get(f.name) for d in paths], pa.string())
            out[f.name] = vals.take(pa.array(np.repeat(np.arange(len(parts)), sizes)))
        elif parts and all(f.name in cols for _, _, cols in parts):
            arrays = [cols[f.name] for _, _, cols in parts]
            a = pa.concat_arrays(arrays) if len(arrays) > 1 else arrays[0]
            out[f.name] = a if a.type == f.type else a.cast(f.type)
        elif f.name == schema.PACKED_REGION and parts and \
                all("s_region" in cols for _, _, cols in parts):  # as _derived does
            out[f.name] = pa.concat_arrays([sky.pack(cols["s_region"]) for _, _, cols in parts])
        else:
            out[f.name] = pa.nulls(n, f.type)
    if only is not None:
        return pa.table(out)
    names = pa.array([uri for uri, _, _ in parts], pa.string())
    files = names.take(pa.array(np.repeat(np.arange(len(parts)), sizes)))
    rows = np.concatenate([r for _, r, _ in parts]) if parts else np.zeros(0, np.int64)
    return _located(pa.table(out), files, rows)


@functools.lru_cache(maxsize=4096)
def _partition_values(uri: str) -> dict[str, str]:
    """The hive partition values in a file's path."""
    return dict(p.split("=", 1) for p in uri.split("/") if "=" in p)


def _text_bounds(adds: list) -> dict[str, tuple[list[str | None], list[str | None]]]:
    """Per text column, the min and max of each file from its add action's statistics."""
    cols = {c for a in adds for c, v in a.stats.get("minValues", {}).items()
            if isinstance(v, str)}
    return {c: ([_text(a.stats.get("minValues", {}).get(c)) for a in adds],
                [_text(a.stats.get("maxValues", {}).get(c)) for a in adds]) for c in cols}


def _text(v) -> str | None:
    return v if isinstance(v, str) else None


def _number(v, fill: float) -> float:
    """A statistic as a float; missing or not a number: unbounded (`fill`)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return fill
    return fill if v != v else float(v)  # NaN


def bare_name(column_sql: str) -> str:
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
            f"file_row_number = true, hive_partitioning = true, "
            f"hive_types = {_hive_types(table)})")


BIND_ROOT = Path(tempfile.gettempdir()) / "catalogue-bind"


def _bind_roots() -> list[Path]:
    """Where bind files are looked for: the image's (CATALOGUE_BIND_SEED, read-only,
    written at build for the schemas of lake.schema), then this machine's."""
    seed = settings().catalogue_bind_seed
    return ([Path(seed)] if seed else []) + [BIND_ROOT]


def _bind_file(dt) -> str:
    """A local Parquet file of no rows with the table's file schema, listed first so
    DuckDB binds the view from it: binding read the first data file's footer (on S3 a
    HEAD and a GET of a file the query may not touch). Queries never name it in their
    file filters; a full scan reads its empty footer. One per schema, keyed by the Delta
    schema: found in the image's seed (a cold container writes none, ~40 ms) or written
    once per machine (under a temporary name, then renamed)."""
    delta, parts = deltalog.table_schema(dt)
    rel = _bind_path(delta, parts)
    for root in _bind_roots():
        if (root / rel).exists():
            return str(root / rel)
    _write_bind(BIND_ROOT / rel, delta, parts)
    return str(BIND_ROOT / rel)


def _bind_path(delta: dict, parts: list[str]) -> Path:
    key = hashlib.sha256(f"{json.dumps(delta, sort_keys=True)}|{parts}".encode())
    return Path(key.hexdigest()[:20]).joinpath(*(f"{p}=_" for p in parts), "schema.parquet")


def _write_bind(path: Path, delta: dict, parts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{os.getpid()}-{threading.get_ident()}.parquet")
    pq.write_table(deltalog.arrow_schema(delta, parts).empty_table(), tmp)
    os.replace(tmp, path)


def seed_bind_files(root: str | Path) -> int:
    """Write the bind files of every table as lake.schema defines it (what the ingest
    writes into the Delta logs) under root: the image build's step. Returns how many."""
    for t in schema.PHYSICAL.values():
        delta = deltalog.delta_schema(t.arrow_schema())
        _write_bind(Path(root) / _bind_path(delta, list(t.partition_by)), delta,
                    list(t.partition_by))
    return len(schema.PHYSICAL)


def _hive_types(table: schema.Table) -> str:
    """Partition values are strings (a delivery like 2025W35 must not become a date)."""
    return "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in table.partition_by) + "}"


def _phys(name: str) -> str:
    return "_t_" + name.replace(".", "_")
