"""A read-only Delta log reader for the catalogue: each log object fetched once.

deltalake (1.6) opening a table on S3 GETs `_last_checkpoint`, LISTs the log and GETs
every JSON commit twice. The catalogue knows the version it wants (the release names
it) and our writers checkpoint every `CHECKPOINT_INTERVAL` commits, so the objects
to read are known without listing: the checkpoint at or below the version (when one
is due) and the JSON commits after it, one GET each. Moving forward to a newer
version reads only the new commits.

Only what the catalogue uses is kept: the live files (path, size, partition values,
statistics) and the schema. Anything this reader does not handle (a missing log
object, a checkpoint in parts or with sidecars, deletion vectors, a newer protocol)
raises `Unsupported`, and the caller falls back to deltalake.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import Archive

CHECKPOINT_INTERVAL = 10  # delivery.TABLE_CONFIG "delta.checkpointInterval"
_NUMERIC = {"long", "integer", "short", "byte", "double", "float"}


class Unsupported(Exception):
    """The log has something this reader does not replay; use deltalake."""


@dataclass
class AddFile:
    path: str  # as in the log: relative to the table (URL-encoded) or absolute
    size: int
    partition: dict[str, str | None]
    stats: dict


@dataclass
class TableLog:
    """The state of one Delta table at `version`, replayed from its log."""

    archive: Archive
    name: str
    version: int = -1
    files: dict[str, AddFile] = field(default_factory=dict)
    schema: dict = field(default_factory=dict)  # the metaData schemaString, parsed
    partition_columns: list[str] = field(default_factory=list)
    requests: int = 0  # log objects read (tests and benchmarks count them)

    @classmethod
    def open(cls, archive: Archive, name: str, version: int) -> TableLog:
        log = cls(archive, name)
        # the last checkpoint at or below version: (c + 1) % interval == 0, as delta-rs
        # writes them; version 9 is the first one
        c = (version + 1) // CHECKPOINT_INTERVAL * CHECKPOINT_INTERVAL - 1
        start = 0
        if c >= 0:
            log._checkpoint(c)
            start = c + 1
        log.version = start - 1
        log.advance(version)
        return log

    def advance(self, version: int) -> None:
        """Apply the commits after the loaded version up to `version`."""
        if version < self.version:
            raise Unsupported("going back needs a fresh replay")
        todo = range(self.version + 1, version + 1)
        if len(todo) > 1 and self.archive.is_s3:  # one round trip, not one per commit
            with ThreadPoolExecutor(min(8, len(todo))) as pool:
                blobs = list(pool.map(lambda v: self._fetch(f"{v:020d}.json"), todo))
            self.requests += len(todo)  # counted here: += from the pool's threads races
        else:
            blobs = (self._read(f"{v:020d}.json") for v in todo)
        for v, data in zip(todo, blobs, strict=False):
            self._commit(data)
            self.version = v

    # ---- what the catalogue asks ------------------------------------------------------
    def uris(self) -> list[str]:
        root = self.archive.path(f"tables/{self.name}")
        return [p if "://" in p or p.startswith("/") else f"{root}/{unquote(p)}"
                for p in self.files]

    def has_column(self, name: str) -> bool:
        return any(f["name"] == name for f in self.schema.get("fields", []))

    def numeric_columns(self) -> list[str]:
        return [f["name"] for f in self.schema.get("fields", [])
                if isinstance(f["type"], str) and f["type"] in _NUMERIC]

    # ---- replay -----------------------------------------------------------------------
    def _read(self, name: str) -> bytes:
        self.requests += 1
        return self._fetch(name)

    def _fetch(self, name: str) -> bytes:
        try:
            return self.archive.read_bytes(f"tables/{self.name}/_delta_log/{name}")
        except FileNotFoundError:
            raise Unsupported(f"{self.name}: {name} is missing") from None

    def _commit(self, data: bytes) -> None:
        for line in data.splitlines():
            if line.strip():
                self._action(json.loads(line))

    def _action(self, action: dict) -> None:
        if "add" in action:
            a = action["add"]
            if a.get("deletionVector"):
                raise Unsupported("deletion vectors")
            stats = a.get("stats")
            self.files[a["path"]] = AddFile(a["path"], int(a.get("size") or 0),
                                            a.get("partitionValues") or {},
                                            json.loads(stats) if stats else {})
        elif "remove" in action:
            self.files.pop(action["remove"]["path"], None)
        elif "metaData" in action:
            m = action["metaData"]
            self.schema = json.loads(m["schemaString"])
            self.partition_columns = list(m.get("partitionColumns") or [])
        elif "protocol" in action:
            p = action["protocol"]
            features = set(p.get("readerFeatures") or [])
            if p.get("minReaderVersion", 1) > 3 or features - {"timestampNtz"}:
                raise Unsupported(f"reader protocol {p}")

    def _checkpoint(self, version: int) -> None:
        table = pq.read_table(io.BytesIO(self._read(f"{version:020d}.checkpoint.parquet")))
        if "sidecar" in table.column_names and table["sidecar"].null_count < len(table):
            raise Unsupported("V2 checkpoint with sidecars")
        for col in ("protocol", "metaData", "add"):
            if col not in table.column_names:
                continue
            for row in table[col].to_pylist():
                if row is None:
                    continue
                if col == "add":
                    row = {**row, "partitionValues": dict(row.get("partitionValues") or [])}
                self._action({col: row})


def arrow_schema(schema: dict, partition_columns: list[str]) -> pa.Schema:
    """The Arrow schema of the table's data files: the Delta schema without the
    partition columns (they live in the paths)."""
    import deltalake  # deferred: ~13 ms of a cold start; bind files are seeded in the image

    full = pa.schema(deltalake.Schema.from_json(json.dumps(schema)).to_arrow())
    return pa.schema([f for f in full if f.name not in partition_columns])


def table_schema(dt) -> tuple[dict, list[str]]:
    """The Delta schema (parsed schemaString) and partition columns of a table, whether
    this reader replayed its log (TableLog) or deltalake opened it (the fallback)."""
    if isinstance(dt, TableLog):
        return dt.schema, dt.partition_columns
    return json.loads(dt.schema().to_json()), list(dt.metadata().partition_columns)


def delta_schema(arrow: pa.Schema) -> dict:
    """The Delta schema (parsed schemaString) deltalake writes for an Arrow schema."""
    import deltalake  # deferred: with arrow_schema

    return json.loads(deltalake.Schema.from_arrow(arrow).to_json())
