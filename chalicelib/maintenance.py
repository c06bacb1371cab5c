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

import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
from deltalake import WriterProperties, write_deltalake

from . import releases, schema
from .ingest import ROW_GROUP_ROWS, current_versions, open_table, table_uri
from .storage import Archive

COMPACTED = "_compacted"  # prefix of tier partitions
COMPACTED_PARTITION = f"delivery={COMPACTED}"  # their files hold released rows only
SPATIAL = ("ivoa.obscore",)  # re-clustered across deliveries
# Each re-clustered file is a run of the HEALPix order, so the catalogue skips whole files
# by their statistics before DuckDB opens them; DuckDB's cost grows with the row groups
# of every file it opens (~10 us each, even pruned), so smaller files answer cones faster.
SPATIAL_FILE_SIZE = 64 << 20
MERGE_EVERY = 4  # weekly deliveries left unmerged before after_ingest merges them
MAX_TIERS = 6  # tiers before after_ingest compacts them all into one


def _released(archive: Archive) -> pa.Array:
    latest = releases.numbers(archive)
    runs = releases.load(archive, latest[-1]).runs.values() if latest else []
    return pa.array(sorted(runs), pa.string())


def _sql_in(values) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _recluster(archive: Archive, name: str, props: WriterProperties, target_size: int,
               full: bool) -> str:
    """Write each collection's released rows as a new HEALPix-sorted tier: all of them
    (full) or those still in weekly partitions."""
    table = schema.PHYSICAL[name]
    coll_col, delivery_col = table.partition_by
    dt = open_table(archive, name)
    data = dt.to_pyarrow_dataset()
    files = len(dt.file_uris())
    released = _released(archive)
    tier = f"{COMPACTED}-{uuid.uuid4().hex[:8]}"
    keys = data.to_table(columns=[coll_col, delivery_col, "ingest_id"])
    if not full:  # weekly partitions holding a released row
        weekly = pc.invert(pc.starts_with(keys[delivery_col], COMPACTED))
        keys = keys.filter(pc.and_(weekly, pc.is_in(keys["ingest_id"], value_set=released)))
    for coll in pc.unique(keys[coll_col]).to_pylist():
        where = pds.field(coll_col) == coll
        predicate = f"{coll_col} = '{coll}'"
        if not full:
            mine = keys.filter(pc.equal(keys[coll_col], coll))
            deliveries = pc.unique(mine[delivery_col]).to_pylist()
            where &= pds.field(delivery_col).isin(deliveries)
            predicate += f" AND {delivery_col} IN ({_sql_in(deliveries + [tier])})"
        rows = data.to_table(filter=where)
        done = pc.is_in(rows["ingest_id"], value_set=released)
        delivery = pc.if_else(done, pa.scalar(tier), rows[delivery_col])
        rows = rows.set_column(rows.schema.get_field_index(delivery_col), delivery_col,
                               delivery)
        write_deltalake(table_uri(archive, name), rows.sort_by(table.sort_by),
                        mode="overwrite", predicate=predicate,
                        partition_by=list(table.partition_by), target_file_size=target_size,
                        storage_options=archive.storage_options, writer_properties=props)
    return f"{name}: {files} files -> {len(open_table(archive, name).file_uris())}"


def _repin(archive: Archive) -> releases.Release:
    def repin(latest: releases.Release) -> releases.Release | None:
        versions = current_versions(archive)
        if versions == latest.versions:
            return None
        return releases.Release(0, latest.runs, versions)

    return releases.commit(archive, repin)


def compact(archive: Archive, target_size: int = 128 << 20) -> str:
    """Everything: ObsCore into one tier per collection, Delta optimize elsewhere."""
    lines = []
    props = WriterProperties(max_row_group_size=ROW_GROUP_ROWS)  # as ingest writes them
    for name in schema.PHYSICAL:
        dt = open_table(archive, name)
        if dt is None:
            continue
        if name in SPATIAL:
            lines.append(_recluster(archive, name, props, min(target_size, SPATIAL_FILE_SIZE),
                                    full=True))
            continue
        m = dt.optimize.compact(target_size=target_size, writer_properties=props)
        lines.append(f"{name}: {m.get('numFilesRemoved', 0)} files -> "
                     f"{m.get('numFilesAdded', 0)}")
    return "\n".join(lines + [f"release {_repin(archive).number}"])


def merge(archive: Archive) -> str:
    """Only the weeks delivered since the last merge: a new ObsCore tier per collection."""
    props = WriterProperties(max_row_group_size=ROW_GROUP_ROWS)
    lines = [_recluster(archive, name, props, SPATIAL_FILE_SIZE, full=False)
             for name in SPATIAL if open_table(archive, name) is not None]
    return "\n".join(lines + [f"release {_repin(archive).number}"])


def layout(archive: Archive, name: str = "ivoa.obscore") -> tuple[int, int]:
    """(weekly partitions not yet merged, tiers) of a table, from its file paths."""
    dt = open_table(archive, name)
    parts = {seg for uri in (dt.file_uris() if dt is not None else [])
             for seg in uri.split("/") if seg.startswith("delivery=")}
    tiers = sum(p.startswith(COMPACTED_PARTITION) for p in parts)
    return len(parts) - tiers, tiers


def after_ingest(archive: Archive, every: int = MERGE_EVERY,
                 max_tiers: int = MAX_TIERS) -> str | None:
    """Keep cone queries to a few files per tier: merge new weeks into a tier once
    `every` are waiting, compact once there are more than max_tiers tiers."""
    weekly, tiers = layout(archive)
    if every <= 0 or weekly < every:
        return None
    if tiers + 1 > max_tiers:
        return compact(archive)
    return merge(archive)
