"""Table maintenance that never blocks readers: spatial re-clustering and compaction.

Weekly appends leave each delivery's rows in their own files, each spanning the whole
sky, so a cone query must open every week. Re-clustering rewrites released ObsCore rows
sorted by HEALPix into a *tier*: a `_compacted-<id>` delivery partition whose files are
each a run of the HEALPix order, so the catalogue skips every file a cap cannot touch
from the Delta statistics alone. Like an LSM tree, `merge` turns the weeks delivered
since the last one into a new tier (cheap: only new rows are read), and a full
`compact` merges everything into one tier. `after_ingest` runs the one that is due.

Each rewrite is one Delta commit whose predicate covers exactly the partitions it
replaces. Tiers hold only rows of runs released before the rewrite, so readers need no
per-row visibility test there; rows of unreleased runs stay in their delivery partition
and stay hidden. A concurrent append makes the commit fail and it can simply be rerun.
Readers of older releases keep their files (no vacuum here); a new release pins the
rewritten versions so the next query uses them. Other tables get Delta's optimize.
"""

from __future__ import annotations

import tempfile
import uuid

import duckdb
import pyarrow as pa
from deltalake import WriterProperties, write_deltalake

from ..config import settings
from ..geometry import sky
from ..geometry.sqlfunctions import sql_in, sql_list, sql_str
from ..lake import releases, schema
from ..lake.storage import Archive, duckdb_s3
from ..lake.tables import COMPACTED, COMPACTED_PARTITION, has_column, open_table, table_uri
from . import hatscat
from .delivery import ROW_GROUP_ROWS, current_versions

SPATIAL = ("ivoa.obscore",)  # re-clustered across deliveries
# Each re-clustered file is a run of the HEALPix order, so the catalogue skips whole files
# by their statistics before DuckDB opens them; DuckDB's cost grows with the row groups
# of every file it opens (~10 us each, even pruned), so smaller files answer cones faster.
SPATIAL_FILE_SIZE = 64 << 20
TIER_ROW_GROUP_ROWS = ROW_GROUP_ROWS  # rows a cone decodes per row group its box meets
MERGE_EVERY = 4  # weekly deliveries left unmerged before after_ingest merges them
MAX_TIERS = 6  # tiers before after_ingest compacts them all into one
SORT_MEMORY = "3GB"  # DuckDB's share while re-clustering; it spills the rest to disk


def _released(archive: Archive) -> list[str]:
    latest = releases.numbers(archive)
    return sorted(releases.load(archive, latest[-1]).runs.values()) if latest else []


def _engine(archive: Archive, spill: str) -> duckdb.DuckDBPyConnection:
    """DuckDB sorts out of core: a bounded memory, the rest spilled to local disk (a
    two-year ObsCore table does not fit a Lambda's memory, nor this machine's)."""
    con = duckdb.connect(config={"memory_limit": SORT_MEMORY, "temp_directory": spill,
                                 "preserve_insertion_order": False})
    if archive.is_s3:
        duckdb_s3(con)
    return con


def _in_partitions(uris: list[str], column: str, values: set[str]) -> list[str]:
    return [u for u in uris if any(f"/{column}={v}/" in u for v in values)]


def _recluster(archive: Archive, name: str, dt, props: WriterProperties, target_size: int,
               full: bool) -> str:
    """Write each collection's released rows as a new HEALPix-sorted tier: all of them
    (full) or those still in weekly partitions (then tiers are not even read)."""
    table = schema.PHYSICAL[name]
    coll_col, delivery_col = table.partition_by
    uris = dt.file_uris()
    scope = uris if full else [u for u in uris if f"/{COMPACTED_PARTITION}" not in u]
    released = sql_in(_released(archive))
    tier = f"{COMPACTED}-{uuid.uuid4().hex[:8]}"
    derived = (delivery_col, schema.PACKED_REGION)
    cols = ", ".join(f'"{c.name}"' for c in table.columns if c.name not in derived)
    target = table.arrow_schema()
    with tempfile.TemporaryDirectory(prefix="compact-") as spill:
        con = _engine(archive, spill)
        scan = (f"read_parquet({{files}}, hive_partitioning = true, union_by_name = true, "
                f"hive_types = {{{{'{coll_col}': 'VARCHAR', '{delivery_col}': 'VARCHAR'}}}})")
        parts = con.execute(
            f"SELECT {coll_col}, list(DISTINCT {delivery_col}) FROM "
            f"{scan.format(files=sql_list(scope))} WHERE ingest_id IN ({released}) "
            f"GROUP BY 1").fetchall() if scope else []
        for coll, deliveries in parts:
            files = _in_partitions(scope, coll_col, {coll})
            predicate = f"{coll_col} = {sql_str(coll)}"
            if not full:
                files = _in_partitions(files, delivery_col, set(deliveries))
                predicate += f" AND {delivery_col} IN ({sql_in(deliveries + [tier])})"
            rows = con.execute(
                f"SELECT {cols}, CASE WHEN ingest_id IN ({released}) THEN '{tier}' "
                f"ELSE {delivery_col} END AS {delivery_col} FROM "
                f"{scan.format(files=sql_list(files))} ORDER BY {table.sort_by} NULLS LAST"
            ).fetch_record_batch(ROW_GROUP_ROWS * 16)
            stream = pa.RecordBatchReader.from_batches(
                target, (_complete(b, target) for b in rows))
            write_deltalake(table_uri(archive, name), stream, mode="overwrite",
                            predicate=predicate, partition_by=list(table.partition_by),
                            schema_mode="merge",  # tables older than a derived column
                            target_file_size=target_size,
                            storage_options=archive.storage_options, writer_properties=props)
        con.close()
    return f"{name}: {len(uris)} files -> {len(open_table(archive, name).file_uris())}"


def _complete(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """A batch in the table's schema, derived columns recomputed (so rewriting a table
    written before one existed fills it in)."""
    cols = {n: batch[n] for n in batch.schema.names}
    if schema.PACKED_REGION in target.names:
        cols[schema.PACKED_REGION] = sky.pack(batch["s_region"])
    return pa.RecordBatch.from_arrays([cols[n] for n in target.names],
                                      schema=target.remove_metadata()).cast(target)


def _repin(archive: Archive) -> releases.Release:
    def repin(latest: releases.Release) -> releases.Release | None:
        versions = current_versions(archive)
        if versions == latest.versions:
            return None
        return releases.Release(0, latest.runs, versions)

    return releases.commit(archive, repin)


def _after_rewrite(archive: Archive, lines: list[str]) -> str:
    """Pin the rewritten versions in a release, then publish that release as HATS
    (hatscat: the LSDB copy follows the tiers; HATS_PUBLISH=0 skips it)."""
    rel = _repin(archive)
    lines = lines + [f"release {rel.number}"]
    if settings().hats_publish:
        lines.append(hatscat.publish(archive, rel.number))
    return "\n".join(lines)


def compact(archive: Archive, target_size: int = 128 << 20) -> str:
    """Everything: ObsCore into one tier per collection, Delta optimize elsewhere."""
    lines = []
    props = WriterProperties(max_row_group_size=ROW_GROUP_ROWS)  # as ingest writes them
    tiers = WriterProperties(max_row_group_size=TIER_ROW_GROUP_ROWS)
    for name in schema.PHYSICAL:
        dt = open_table(archive, name)
        if dt is None:
            continue
        if name in SPATIAL:
            lines.append(_recluster(archive, name, dt, tiers,
                                    min(target_size, SPATIAL_FILE_SIZE), full=True))
            continue
        m = dt.optimize.compact(target_size=target_size, writer_properties=props)
        lines.append(f"{name}: {m.get('numFilesRemoved', 0)} files -> "
                     f"{m.get('numFilesAdded', 0)}")
    return _after_rewrite(archive, lines)


def merge(archive: Archive) -> str:
    """Only the weeks delivered since the last merge: a new ObsCore tier per collection.
    A table written before a derived column existed is compacted whole instead, so every
    file has it again."""
    tables = {name: dt for name in SPATIAL if (dt := open_table(archive, name)) is not None}
    if not all(has_column(dt, schema.PACKED_REGION) for dt in tables.values()):
        return compact(archive)
    props = WriterProperties(max_row_group_size=TIER_ROW_GROUP_ROWS)
    lines = [_recluster(archive, name, dt, props, SPATIAL_FILE_SIZE, full=False)
             for name, dt in tables.items()]
    return _after_rewrite(archive, lines)


def layout(archive: Archive, name: str = "ivoa.obscore") -> tuple[int, int]:
    """(weekly partitions not yet merged, tiers) of a table, from its file paths."""
    dt = open_table(archive, name)
    parts = {seg for uri in (dt.file_uris() if dt is not None else [])
             for seg in uri.split("/") if seg.startswith("delivery=")}
    tiers = sum(p.startswith(COMPACTED_PARTITION) for p in parts)
    return len(parts) - tiers, tiers


def after_ingest(archive: Archive, every: int | None = None,
                 max_tiers: int = MAX_TIERS) -> str | None:
    """Keep cone queries to a few files per tier: merge new weeks into a tier once
    `every` (default MERGE_EVERY) are waiting, compact past max_tiers tiers."""
    every = MERGE_EVERY if every is None else every
    weekly, tiers = layout(archive)
    if every <= 0 or weekly < every:
        return None
    if tiers + 1 > max_tiers:
        return compact(archive)
    return merge(archive)
