"""Table maintenance that never blocks readers: compaction and spatial re-clustering.

Delta Lake's optimize rewrites small files into large ones in new commits; readers of
older versions keep their files (no vacuum here), and a new release pins the compacted
versions so the next query uses them. Rows and visibility do not change.
"""

from __future__ import annotations

from deltalake import WriterProperties

from . import releases, schema
from .ingest import ROW_GROUP_ROWS, current_versions, open_table
from .storage import Archive


def compact(archive: Archive, target_size: int = 128 << 20) -> str:
    lines = []
    props = WriterProperties(max_row_group_size=ROW_GROUP_ROWS)  # as ingest writes them
    for name, table in schema.PHYSICAL.items():
        dt = open_table(archive, name)
        if dt is None:
            continue
        if table.sort_by:
            # z-order on the HEALPix key alone is a sort: row groups stay compact on the sky
            m = dt.optimize.z_order([table.sort_by], target_size=target_size,
                                    writer_properties=props)
        else:
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
