"""Table maintenance that never blocks readers: compaction and spatial re-clustering.

Weekly appends leave each delivery's rows in their own files, each spanning the whole
sky, so a cone query must open every week. Compaction re-clusters ivoa.obscore: all
rows of a collection, sorted by HEALPix, rewritten in one commit into a `_compacted`
delivery partition, so files and row groups become compact on the sky and Parquet
statistics skip nearly all of them. Rows keep their ingest run id, so visibility does
not change (an in-flight ingest's rows stay hidden; a concurrent append makes the
commit fail and compaction can simply be rerun). Other tables get Delta's optimize.
Readers of older versions keep their files (no vacuum here); a new release pins the
compacted versions so the next query uses them.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
from deltalake import WriterProperties, write_deltalake

from . import releases, schema
from .ingest import ROW_GROUP_ROWS, current_versions, open_table, table_uri
from .storage import Archive

COMPACTED = "_compacted"
COMPACTED_PARTITION = f"delivery={COMPACTED}"  # its files hold released rows only
SPATIAL = ("ivoa.obscore",)  # re-clustered across deliveries
# Each re-clustered file is a run of the HEALPix order, so the catalogue skips whole files
# by their statistics before DuckDB opens them; DuckDB's cost grows with the row groups
# of every file it opens (~10 us each, even pruned), so smaller files answer cones faster.
SPATIAL_FILE_SIZE = 64 << 20


def _recluster(archive: Archive, name: str, props: WriterProperties,
               target_size: int) -> str:
    """Rewrite each collection of a table as one HEALPix-sorted partition of released
    rows (so readers need no per-row visibility test there); rows of runs not yet
    released stay in their delivery's partition."""
    table = schema.PHYSICAL[name]
    coll_col, delivery_col = table.partition_by
    dt = open_table(archive, name)
    data = dt.to_pyarrow_dataset()
    files = len(dt.file_uris())
    latest = releases.numbers(archive)
    released = pa.array(sorted(releases.load(archive, latest[-1]).runs.values())
                        if latest else [], pa.string())
    for coll in pc.unique(data.to_table(columns=[coll_col])[coll_col]).to_pylist():
        rows = data.to_table(filter=pds.field(coll_col) == coll)
        done = pc.is_in(rows["ingest_id"], value_set=released)
        delivery = pc.if_else(done, pa.scalar(COMPACTED), rows[delivery_col])
        rows = rows.set_column(rows.schema.get_field_index(delivery_col), delivery_col,
                               delivery)
        write_deltalake(table_uri(archive, name), rows.sort_by(table.sort_by),
                        mode="overwrite", predicate=f"{coll_col} = '{coll}'",
                        partition_by=list(table.partition_by), target_file_size=target_size,
                        storage_options=archive.storage_options, writer_properties=props)
    return f"{name}: {files} files -> {len(open_table(archive, name).file_uris())}"


def compact(archive: Archive, target_size: int = 128 << 20) -> str:
    lines = []
    props = WriterProperties(max_row_group_size=ROW_GROUP_ROWS)  # as ingest writes them
    for name in schema.PHYSICAL:
        dt = open_table(archive, name)
        if dt is None:
            continue
        if name in SPATIAL:
            lines.append(_recluster(archive, name, props, min(target_size, SPATIAL_FILE_SIZE)))
            continue
        m = dt.optimize.compact(target_size=target_size, writer_properties=props)
        lines.append(f"{name}: {m.get('numFilesRemoved', 0)} files -> "
                     f"{m.get('numFilesAdded', 0)}")

    def repin(latest: releases.Release) -> releases.Release | None:
        versions = current_versions(archive)
        if versions == latest.versions:
            return None
        return releases.Release(0, latest.runs, versions)

    rel = releases.commit(archive, repin)
    return "\n".join(lines + [f"release {rel.number}"])
