"""A Spark catalogue: what TAP's run_query needs of a catalogue, answered by Spark.

`SparkCatalogue(archive, release, base_url)` has the DuckDB Catalogue's query surface
(box_sql for the translator, query(sql, timeout, max_rows, uploads), release, base_url)
plus `dialect`/`relation`, so the one TAP code path translates ADQL to Spark SQL over
this release's files and runs it here. Each query runs in its own job group: progress
(stages done / total) comes from the status tracker, and an abort or the time limit
cancels the group, which stops its tasks on the executors.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable

import pyarrow as pa

from ...lake import releases
from ...lake.storage import Archive
from ..catalogue import QueryError, QueryTimeout
from .files import ReleaseFiles

Progress = Callable[[dict], None]
POLL_SECONDS = 0.25


def java_available() -> bool:
    """pyspark needs a Java runtime (17 here; .ci/run installs it when missing)."""
    return shutil.which("java") is not None


class SparkCatalogue:
    dialect = "spark"

    def __init__(self, archive: Archive, release: releases.Release, base_url: str = "",
                 session=None, progress: Progress | None = None,
                 check: Callable[[], None] | None = None):
        self.archive, self.base_url = archive, base_url.rstrip("/")
        self.plan = ReleaseFiles(archive, release)
        self.session, self.progress, self.check = session, progress, check
        self.group: str | None = None  # the Spark job group of the running query
        self.last: dict = {}  # the last progress seen (stages, tasks)

    @property
    def release(self) -> releases.Release:
        return self.plan.release

    def box_sql(self, *args, **kwargs):
        return self.plan.box_sql(*args, **kwargs)

    def relation(self, schema_name: str, table: str, alias: str | None) -> str:
        return self.plan.relation(schema_name, table, alias)

    def estimate(self) -> dict[str, int]:
        return self.plan.estimate()

    def query(self, sql: str, timeout: float = 60.0, max_rows: int | None = None,
              uploads: dict[str, pa.Table] | None = None) -> pa.Table:
        """Run one translated Spark SQL SELECT on this release's files."""
        from . import session as spark  # deferred: starts the JVM; DuckDB jobs never do

        s = self.session or spark.job_session()
        spark.register_views(s, self.plan, self.base_url)
        spark.register_uploads(s, uploads or {})
        self.group = f"adql-{uuid.uuid4().hex[:12]}"
        box: dict = {}
        worker = threading.Thread(target=self._work, args=(s, sql, max_rows, box),
                                  daemon=True)
        worker.start()
        self._watch(s, worker, time.monotonic() + timeout)
        if "error" in box:
            raise _query_error(box["error"])
        return box["table"]

    def _work(self, s, sql: str, max_rows: int | None, box: dict) -> None:
        from . import session as spark  # deferred: see query()

        s.sparkContext.setJobGroup(self.group, "ADQL job", interruptOnCancel=True)
        try:
            box["table"] = spark.to_arrow(s.sql(sql), max_rows)
        except Exception as e:  # handed to the caller's thread, which reports it
            box["error"] = e

    def _watch(self, s, worker: threading.Thread, deadline: float) -> None:
        """Wait for the query, reporting progress; cancel it on abort or time out."""
        sc = s.sparkContext
        while worker.is_alive():
            worker.join(POLL_SECONDS)
            self._report(sc)
            try:
                if self.check is not None:
                    self.check()  # raises (JobAborted) when the job was aborted
                if time.monotonic() > deadline:
                    raise QueryTimeout("the Spark query exceeded its time limit")
            except BaseException:
                sc.cancelJobGroup(self.group)
                worker.join(30)
                raise

    def _report(self, sc) -> None:
        now = stage_progress(sc, self.group)
        if now != self.last:
            self.last = now
            if self.progress is not None:
                self.progress(now)


def stage_progress(sc, group: str) -> dict:
    """Stages and tasks done / total of a job group, from Spark's status tracker."""
    tracker = sc.statusTracker()
    stages = [sid for jid in tracker.getJobIdsForGroup(group)
              if (job := tracker.getJobInfo(jid)) is not None for sid in job.stageIds]
    done = tasks = tasks_done = 0
    for sid in stages:
        info = tracker.getStageInfo(sid)
        if info is None:
            continue
        tasks += info.numTasks
        tasks_done += info.numCompletedTasks
        done += info.numTasks > 0 and info.numCompletedTasks >= info.numTasks
    return {"stages_done": int(done), "stages_total": len(stages),
            "tasks_done": tasks_done, "tasks_total": tasks}


def _query_error(e: Exception) -> Exception:
    if isinstance(e, QueryTimeout | QueryError):
        return e
    text = str(e).strip().split("\n")[0]
    if type(e).__name__ in ("AnalysisException", "ParseException", "IllegalArgumentException",
                            "NumberFormatException", "ArithmeticException"):
        return QueryError(text)
    return RuntimeError(f"Spark query failed: {type(e).__name__}: {text}")
