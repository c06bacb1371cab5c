"""Spark sessions for ADQL jobs: the same geometry functions and one release's tables.

One SparkContext per process (its master from SPARK_MASTER, else local[2]); each job
gets its own session (`newSession`: own temp views and functions, shared executors), in
which the Arrow UDFs of geometry.sqlfunctions are registered under the names DuckDB
knows them by, calling the same Python kernels, and each archive table the query names
is a temp view over exactly the Parquet files its release lists (files.ReleaseFiles).
"""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import arrow_udf
from pyspark.sql.pandas.types import from_arrow_schema

from ...config import settings
from ...geometry.sqlfunctions import BIGINT, BOOL, DOUBLE, LIST, PACKED, UDFS
from ...lake import deltalog, schema
from ..catalogue import tap_schema_tables
from .files import ReleaseFiles, TableFiles

_SPARK_TYPES = {DOUBLE: "double", BOOL: "boolean", BIGINT: "bigint", LIST: "array<double>"}
_lock = threading.Lock()
_base: list[SparkSession] = []

# Spark settings for ADQL semantics: ANSI mode, so that an integer overflow or a bad
# cast is an error as in DuckDB (the translator keeps DuckDB's NULL for x DIV 0 and
# mod(x, 0), its IEEE infinities for x / 0); timestamps never in a session zone; the UI
# and its port are of no use to a job
CONF = {
    "spark.sql.ansi.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
    "spark.driver.memory": "1g",
}


def base_session(master: str | None = None) -> SparkSession:
    """The process's Spark session (started on first use; stop() ends it)."""
    with _lock:
        if not _base:
            builder = SparkSession.builder.master(
                master or settings().spark_master or "local[2]").appName("archive-adql")
            # executors of a cluster on this machine import chalicelib from this checkout
            # (EMR ships it as spark.submit.pyFiles instead)
            code = str(Path(__file__).resolve().parents[3])
            for k, v in {**CONF, "spark.pyspark.python": sys.executable,
                         "spark.executorEnv.PYTHONPATH": code}.items():
                builder = builder.config(k, v)
            _base.append(builder.getOrCreate())
            # the Python workers run this interpreter (its venv has the kernels' packages):
            # the UDFs take it from here (pyspark reads only $PYSPARK_PYTHON otherwise)
            _base[0].sparkContext.pythonExec = sys.executable
            _base[0].sparkContext.setLogLevel("ERROR")
        return _base[0]


def stop() -> None:
    with _lock:
        if _base:
            _base.pop().stop()


def adopt(session: SparkSession) -> SparkSession:
    """Use a session made elsewhere (EMR's spark-submit driver) as the process's."""
    with _lock:
        if not _base:
            _base.append(session)
        return _base[0]


def job_session(master: str | None = None) -> SparkSession:
    """A fresh session for one job: its own temp views, the functions registered."""
    return job_session_of(base_session(master))


def job_session_of(base: SparkSession) -> SparkSession:
    session = base.newSession()
    register_functions(session)
    return session


def _hasword(haystack: pa.Array, needle: pa.Array) -> pa.Array:
    """ivo_hasword as the DuckDB macro: needle a whole word of haystack, any case."""
    out = [None if h is None or n is None else
           re.search(r"(^|[^a-z0-9])" + re.escape(n.lower()) + r"($|[^a-z0-9])",
                     h.lower()) is not None
           for h, n in zip(haystack.to_pylist(), needle.to_pylist(), strict=True)]
    return pa.array(out, pa.bool_())


def _nullable(fn):
    """Spark hands the Arrow UDF chunk-free arrays; the kernels take them as DuckDB's."""
    def call(*arrays: pa.Array) -> pa.Array:
        arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays]
        return fn(*arrays)
    return call


def register_functions(session: SparkSession) -> None:
    """The Arrow UDFs of sqlfunctions.UDFS (not sky_pack: Spark reads the list column)."""
    for name, (fn, _, ret) in UDFS.items():
        if name == "sky_pack":
            continue
        session.udf.register(name, arrow_udf(_nullable(fn), _SPARK_TYPES[ret]))
    session.udf.register("ivo_hasword", arrow_udf(_hasword, "boolean"))
    assert not set(PACKED) - set(UDFS)  # the _bin twins are rewritten to these


def _arrow_schema(tf: TableFiles) -> pa.Schema:
    """The data files' schema plus the partition columns (strings, from the paths)."""
    files = deltalog.arrow_schema(tf.schema, tf.partition_columns)
    return pa.schema([*files, *(pa.field(c, pa.string()) for c in tf.partition_columns)])


def physical_frame(session: SparkSession, tf: TableFiles, files: list[str],
                   runs: set[str]) -> DataFrame:
    """The rows of a physical table in `files`: released ones only."""
    table = schema.PHYSICAL[tf.name]
    if not tf.schema:  # no Delta table yet: no rows, the declared columns
        return session.createDataFrame(pa.table({c.name: pa.array([], c.arrow)
                                                 for c in table.columns}))
    sch = from_arrow_schema(_arrow_schema(tf))
    released = set(tf.clean)
    clean = [u for u in files if u in released]
    mixed = [u for u in files if u not in released]
    reader = session.read.schema(sch).option("basePath", tf.root)
    parts = []
    if clean:
        parts.append(reader.parquet(*clean))
    if mixed:
        parts.append(reader.parquet(*mixed).where(F.col("ingest_id").isin(sorted(runs))))
    if not parts:
        return session.createDataFrame([], sch)
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def served_frame(phys: DataFrame, served: str, base_url: str) -> DataFrame:
    """A served table over its physical rows (access_url made absolute, as DuckDB's)."""
    cols = []
    for c in schema.TABLES[served].served:
        if c.name == "access_url":
            cols.append(F.concat(F.lit(base_url), F.col("access_url")).alias("access_url"))
        else:
            cols.append(F.col(f"`{c.name}`"))
    return phys.select(*cols)


def register_views(session: SparkSession, plan: ReleaseFiles, base_url: str) -> None:
    """A temp view for each table the translated query reads (plan.reads)."""
    runs = set(plan.release.runs.values())
    for view, (served, _) in plan.reads.items():
        got = plan.files_of(view)
        if got is None:
            _tap_schema_view(session, view, served)
            continue
        tf, files = got
        phys = physical_frame(session, tf, files, runs)
        served_frame(phys, served, base_url).createOrReplaceTempView(view)


def _tap_schema_view(session: SparkSession, view: str, served: str) -> None:
    rows = tap_schema_tables().get(served.split(".", 1)[1])
    if rows is not None:
        session.createDataFrame(rows).createOrReplaceTempView(view)


def register_uploads(session: SparkSession, uploads: dict[str, pa.Table]) -> None:
    """TAP_UPLOAD tables travel to Spark as DataFrames (the translator names them
    _upload_<name>)."""
    for name, table in uploads.items():
        session.createDataFrame(table).createOrReplaceTempView(f"_upload_{name}")


def to_arrow(df: DataFrame, max_rows: int | None) -> pa.Table:
    """The rows as Arrow, with the types DuckDB gives (string, list, not large_*)."""
    if max_rows is not None:
        df = df.limit(max_rows)
    table = df.toArrow()
    return table.cast(pa.schema([_plain(f) for f in table.schema]))


def _plain(f: pa.Field) -> pa.Field:
    t = f.type
    if pa.types.is_large_string(t):
        t = pa.string()
    elif pa.types.is_large_list(t):
        t = pa.list_(t.value_type)
    return f.with_type(t)

