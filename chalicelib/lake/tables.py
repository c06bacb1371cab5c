"""Delta table access shared by the read path (query/) and the write path (ingest/):
where a table lives, opening it at a version, what its schema has, and the partition
naming that compaction writes and the catalogue's file pruning relies on."""

from __future__ import annotations

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from .storage import Archive

COMPACTED = "_compacted"  # prefix of tier partitions
COMPACTED_PARTITION = f"delivery={COMPACTED}"  # their files hold released rows only


def table_uri(archive: Archive, name: str) -> str:
    return archive.path(f"tables/{name}")


def has_column(dt: DeltaTable, name: str) -> bool:
    """Does the table's schema (as of its loaded version) have this column yet?"""
    return any(f.name == name for f in dt.schema().fields)


def open_table(archive: Archive, name: str, version: int | None = None) -> DeltaTable | None:
    try:
        return DeltaTable(table_uri(archive, name), version=version,
                          storage_options=archive.storage_options)
    except TableNotFoundError:
        return None
