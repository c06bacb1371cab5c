"""Job stores: the JobStore protocol and the local SQLite implementation.

Every store has the same semantics:
- expired jobs (destruction passed) are gone: get() returns None, list() skips them,
  update_if() refuses them;
- update_if() is atomic: it applies the changes only if the job is (still) in one of
  the expected phases (and at the expected version, if given), so two concurrent
  PHASE=RUN requests let exactly one of them start an execution.
"""

from __future__ import annotations

import enum
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from .model import FIELD_NAMES, Job, utcnow


class _Any(enum.Enum):
    ANY = "any"


ANY = _Any.ANY
"""owner filter meaning 'jobs of every owner' (None means 'jobs without an owner')."""

OwnerFilter = str | None | _Any
PhaseSpec = str | Iterable[str] | None


class JobStore(Protocol):
    def create(self, job: Job) -> None: ...

    def get(self, job_id: str) -> Job | None: ...

    def list(self, service: str | None = None, owner: OwnerFilter = ANY,
             phases: Iterable[str] | None = None, after: datetime | None = None,
             last: int | None = None) -> list[Job]: ...

    def update_if(self, job_id: str, expected_phase: PhaseSpec = None, *,
                  expected_version: int | None = None, **changes: Any) -> bool: ...

    def delete(self, job_id: str) -> bool: ...


def phase_set(expected: PhaseSpec) -> frozenset[str] | None:
    if expected is None:
        return None
    if isinstance(expected, str):
        return frozenset({expected})
    return frozenset(expected)


def check_changes(changes: dict[str, Any]) -> None:
    bad = set(changes) - (FIELD_NAMES - {"job_id", "version"})
    if bad:
        raise TypeError(f"not updatable job fields: {sorted(bad)}")


def select_jobs(jobs: Iterable[Job], owner: OwnerFilter = ANY,
                phases: Iterable[str] | None = None, after: datetime | None = None,
                last: int | None = None) -> list[Job]:
    """The UWS list filters, shared by every store: newest first, LAST applied last."""
    wanted = None if phases is None else set(phases)
    now = utcnow()
    chosen = [
        job for job in jobs
        if not job.expired(now)
        and (owner is ANY or job.owner_id == owner)
        and (wanted is None or job.phase in wanted)
        and (after is None or job.creation_time > after)
    ]
    chosen.sort(key=lambda job: (job.creation_time, job.job_id), reverse=True)
    return chosen if last is None else chosen[:last]


def apply_changes(job: Job, changes: dict[str, Any]) -> Job:
    for name, value in changes.items():
        setattr(job, name, value)
    job.version += 1
    return job


class LocalJobStore:
    """Jobs in one SQLite file (WAL): safe across threads and processes.

    `path` is either a .sqlite/.sqlite3/.db file or a folder (jobs.sqlite3 inside).
    Each update runs in a BEGIN IMMEDIATE transaction, which takes SQLite's write
    lock before reading, so read-check-write is atomic for every process.
    """

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS jobs (
            job_id TEXT PRIMARY KEY,
            service TEXT NOT NULL,
            owner_id TEXT,
            phase TEXT NOT NULL,
            creation_time TEXT NOT NULL,
            destruction REAL,
            version INTEGER NOT NULL,
            doc TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS jobs_by_service ON jobs (service, creation_time);
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        if path.suffix not in (".sqlite", ".sqlite3", ".db"):
            path.mkdir(parents=True, exist_ok=True)
            path = path / "jobs.sqlite3"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._connection().executescript(self.SCHEMA)

    # Connections are per thread and per process: sqlite3 objects must not cross either.
    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None or getattr(self._local, "pid", None) != os.getpid():
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con, self._local.pid = con, os.getpid()
        return con

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._local = threading.local()

    @staticmethod
    def _row(job: Job) -> tuple[Any, ...]:
        destruction = job.destruction.timestamp() if job.destruction else None
        doc = json.dumps(job.to_dict())
        return (job.job_id, job.service, job.owner_id, job.phase,
                job.to_dict()["creation_time"], destruction, job.version, doc)

    def create(self, job: Job) -> None:
        with self._transaction() as con:
            con.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._row(job))

    def _read(self, con: sqlite3.Connection, job_id: str) -> Job | None:
        row = con.execute("SELECT doc FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return Job.from_dict(json.loads(row[0])) if row else None

    def get(self, job_id: str) -> Job | None:
        job = self._read(self._connection(), job_id)
        if job is not None and job.expired():
            self.delete(job_id)
            return None
        return job

    def list(self, service: str | None = None, owner: OwnerFilter = ANY,
             phases: Iterable[str] | None = None, after: datetime | None = None,
             last: int | None = None) -> list[Job]:
        self.purge_expired()
        sql, args = "SELECT doc FROM jobs", []
        if service is not None:
            sql, args = sql + " WHERE service = ?", [service]
        rows = self._connection().execute(sql, args).fetchall()
        jobs = (Job.from_dict(json.loads(row[0])) for row in rows)
        return select_jobs(jobs, owner, phases, after, last)

    def update_if(self, job_id: str, expected_phase: PhaseSpec = None, *,
                  expected_version: int | None = None, **changes: Any) -> bool:
        check_changes(changes)
        phases = phase_set(expected_phase)
        with self._transaction() as con:
            job = self._read(con, job_id)
            if (job is None or job.expired()
                    or (phases is not None and job.phase not in phases)
                    or (expected_version is not None and job.version != expected_version)):
                return False
            row = self._row(apply_changes(job, changes))
            con.execute(
                "UPDATE jobs SET service=?, owner_id=?, phase=?, creation_time=?,"
                " destruction=?, version=?, doc=? WHERE job_id=?", (*row[1:], job_id))
        return True

    def delete(self, job_id: str) -> bool:
        with self._transaction() as con:
            return con.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,)).rowcount > 0

    def purge_expired(self) -> int:
        """Delete every job whose destruction time has passed; returns how many."""
        now = utcnow().timestamp()
        with self._transaction() as con:
            cur = con.execute("DELETE FROM jobs WHERE destruction IS NOT NULL AND destruction <= ?",
                              (now,))
            return cur.rowcount
