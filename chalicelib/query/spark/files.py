"""Which Parquet files a query reads in one release, without opening any of them.

A release names a Delta version per table and the ingest runs that are visible. The
files of a table are its add actions at that version (lake.deltalog replays the log),
split as the DuckDB catalogue splits them (FileStats.visibility: files wholly released,
and files that need the ingest_id filter). A cone prunes them with the same statistics
test the catalogue uses (RA/Dec box and HEALPix cells against each file's min/max), so
both engines read the same files and the router can price a query before running it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ...geometry import sky
from ...geometry.sqlfunctions import BoxSql
from ...lake import deltalog, releases, schema
from ...lake.storage import Archive
from ...lake.tables import open_table
from ..adql.spark import view_name
from ..catalogue import FileStats, bare_name


@dataclass
class TableFiles:
    """One physical table of a release: its visible files, their sizes and statistics."""

    name: str
    root: str  # the table's folder (partition values are read from paths below it)
    clean: list[str]  # every row released
    mixed: list[str]  # rows of several runs: read with the ingest_id filter
    sizes: dict[str, int]
    stats: FileStats | None
    schema: dict = field(default_factory=dict)  # the Delta schemaString, parsed
    partition_columns: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return self.clean + self.mixed

    def bytes(self, files: list[str] | None = None) -> int:
        return sum(self.sizes.get(u, 0) for u in (self.files if files is None else files))


@dataclass
class Pruned:
    """The files one FROM item (an alias of the emitted SQL) needs, after its boxes."""

    table: str  # served table (ivoa.obscore ...)
    files: list[str]


def _open_log(archive: Archive, name: str, version: int):
    try:
        return deltalog.TableLog.open(archive, name, version)
    except deltalog.Unsupported:
        return open_table(archive, name, version)


def load_table(archive: Archive, release: releases.Release, name: str) -> TableFiles:
    """The visible files of physical table `name` as of `release`."""
    root = archive.path(f"tables/{name}")
    version = release.versions.get(name) if release.number else None
    log = _open_log(archive, name, version) if version is not None else None
    if log is None:
        return TableFiles(name, root, [], [], {}, None)
    return _visible(root, release, name, FileStats.of_table(log), *deltalog.table_schema(log))


def _visible(root: str, release: releases.Release, name: str, stats: FileStats,
             delta: dict | None = None, parts: list[str] | None = None) -> TableFiles:
    clean, mixed = stats.visibility(set(release.runs.values()))
    return TableFiles(name, root, clean, mixed, dict(zip(stats.uris, stats.sizes, strict=True)),
                      stats, delta or {}, parts or [])


class ReleaseFiles:
    """The files of one release, loaded per physical table on first use, and the boxes
    a translation asked for: `box_sql` prunes a FROM item's files, `relation` names the
    temp view each FROM item reads (query.adql.spark.Relation). `known` gives the
    statistics a warm catalogue already holds for this release (pricing only: no Delta
    schema is kept then, which reading with Spark needs)."""

    def __init__(self, archive: Archive, release: releases.Release,
                 known: Callable[[str], FileStats | None] | None = None):
        self.archive, self.release, self.known = archive, release, known
        self.tables: dict[str, TableFiles] = {}
        self.pruned: dict[str, Pruned] = {}  # alias -> its files (boxed FROM items)
        self.reads: dict[str, tuple[str, str | None]] = {}  # view -> (served table, alias)

    def table(self, physical: str) -> TableFiles:
        if physical not in self.tables:
            stats = self.known(physical) if self.known is not None else None
            self.tables[physical] = load_table(self.archive, self.release, physical) \
                if stats is None else _visible(self.archive.path(f"tables/{physical}"),
                                               self.release, physical, stats)
        return self.tables[physical]

    def max_footprint_radius(self) -> float:
        stats = self.table(schema.TABLES["ivoa.obscore"].physical).stats
        return stats.largest("s_rmax", 180.0) if stats is not None else 0.0

    def box_sql(self, ra_col: str, dec_col: str, ra: float, dec: float, radius: float,
                footprint: bool, table: str | None = None, alias: str | None = None,
                own: bool = False) -> BoxSql:
        """The RA/Dec box of a cap (Catalogue.box_sql's, without its file and row
        filters); when it is a conjunct of the block holding `alias`, that FROM item
        reads only the files whose statistics meet the box and the cap's cells."""
        r = radius + (self.max_footprint_radius() if footprint else 0.0) + 1e-9
        lo, hi, ranges = sky.cap_bounds(ra, dec, r)
        if table and alias and own:
            tf = self.table(schema.TABLES[table].physical)
            keep = []
            if tf.stats is not None:
                hit = tf.stats.touching_cap(bare_name(ra_col), bare_name(dec_col), ra, dec, r,
                                            (lo, hi, ranges), footprint)
                visible = set(tf.files)
                keep = [u for u, h in zip(tf.stats.uris, hit, strict=True) if h and u in visible]
            before = self.pruned.get(alias)
            if before is not None:  # two boxes on one FROM item: both must hold
                earlier = set(before.files)
                keep = [u for u in keep if u in earlier]
            self.pruned[alias] = Pruned(table, keep)
        return BoxSql(ra_col, dec_col, lo, hi, ranges)

    def relation(self, schema_name: str, table: str, alias: str | None) -> str:
        """The view a FROM item reads: its pruned files' own view, or the whole table."""
        served = f"{schema_name}.{table}"
        name = f"_p_{alias}" if alias in self.pruned else view_name(schema_name, table)
        self.reads[name] = (served, alias if alias in self.pruned else None)
        return name

    def files_of(self, view: str) -> tuple[TableFiles, list[str]] | None:
        """The physical table and files behind a view `relation` named (None: no files,
        e.g. TAP_SCHEMA)."""
        served, alias = self.reads[view]
        if served not in schema.TABLES:
            return None
        tf = self.table(schema.TABLES[served].physical)
        return tf, self.pruned[alias].files if alias else tf.files

    def estimate(self) -> dict[str, int]:
        """Files and bytes the translated query reads (each view once)."""
        files = bytes_ = 0
        for view in self.reads:
            got = self.files_of(view)
            if got is not None:
                files += len(got[1])
                bytes_ += got[0].bytes(got[1])
        return {"files": files, "bytes": bytes_}
