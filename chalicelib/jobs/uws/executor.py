"""Running jobs: the Executor protocol, the runner context, and the local worker pool.

A service plugs in a runner `run(job, ctx)`: it reads ctx.params, reports
ctx.set_progress(...), stores outputs with ctx.add_result(...) and returns; an exception
puts the job in ERROR. Every state change is a conditional store write, so a runner can
never overwrite ABORTED (or the ERROR of an exceeded executionDuration).
The lifecycle helpers (mark_executing, complete_job, fail_job, run_job) are public so
that Step Functions task Lambdas drive a job exactly like the local pool does.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from ...dali import UsageError
from .model import (
    COMPLETED,
    ERROR,
    EXECUTING,
    QUEUED,
    RUNNING_PHASES,
    HandedOff,
    Job,
    JobAborted,
    TransientJobError,
    error_summary,
    utcnow,
)
from .store import JobStore

log = logging.getLogger(__name__)

# (job, result id, content, MIME type) -> href where the result can be fetched later.
ResultSink = Callable[[Job, str, bytes, str], str]


class Executor(Protocol):
    """start() hands a QUEUED job over and returns a handle (stored as execution_arn);
    abort() stops its work. starts_immediately (optional, default False): start() has
    already begun execution, so the service itself marks the job EXECUTING."""

    starts_immediately: bool

    def start(self, job: Job) -> str | None: ...

    def abort(self, job: Job) -> None: ...


class RunContext:
    """What a runner sees. Writes raise JobAborted once the job left QUEUED/EXECUTING."""

    def __init__(self, store: JobStore, job: Job, result_sink: ResultSink | None = None,
                 cancel: threading.Event | None = None, recheck_seconds: float = 1.0) -> None:
        self.store = store
        self.job = job
        self.result_sink = result_sink
        self.cancel = cancel or threading.Event()
        self.recheck_seconds = recheck_seconds
        self._checked = time.monotonic()

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def params(self) -> dict[str, list[str]]:
        """Parameters, names lower-cased, each a list of values."""
        return self.job.parameters

    def param(self, name: str, default: str | None = None) -> str | None:
        return self.job.param(name, default)

    def is_aborted(self) -> bool:
        """Cooperative cancellation: the local flag, or (every recheck_seconds) the store,
        which also sees an ABORT handled by another process."""
        if self.cancel.is_set():
            return True
        if time.monotonic() - self._checked >= self.recheck_seconds:
            self._checked = time.monotonic()
            job = self.store.get(self.job_id)
            if job is None or job.phase not in RUNNING_PHASES:
                self.cancel.set()
        return self.cancel.is_set()

    def check_aborted(self) -> None:
        if self.is_aborted():
            raise JobAborted(self.job_id)

    def _mutate(self, change: Callable[[Job], dict[str, Any]]) -> None:
        """Optimistic read-modify-write, retried on version conflicts (parallel workers)."""
        while True:
            job = self.store.get(self.job_id)
            if job is None or job.phase not in RUNNING_PHASES:
                self.cancel.set()
                raise JobAborted(self.job_id)
            if self.store.update_if(self.job_id, RUNNING_PHASES,
                                    expected_version=job.version, **change(job)):
                return

    def set_progress(self, fraction: float | None = None, text: str | None = None,
                     **info: Any) -> None:
        """Record progress in jobInfo (fraction 0..1, a message, anything JSON-able)."""
        updates = dict(info)
        if fraction is not None:
            updates["progress"] = round(float(fraction), 4)
        if text is not None:
            updates["message"] = text
        self._mutate(lambda job: {"job_info": {**job.job_info, **updates}})

    def add_result(self, result_id: str, content: bytes | str,
                   mime_type: str = "application/octet-stream",
                   size: int | None = None) -> dict[str, Any]:
        """Store bytes through the result sink, or register an existing href (str)."""
        self.check_aborted()
        if isinstance(content, bytes):
            if self.result_sink is None:
                raise RuntimeError("no result sink configured for byte results")
            href, size = self.result_sink(self.job, result_id, content, mime_type), len(content)
        else:
            href = content
        result = {"id": result_id, "href": href, "size": size, "mime_type": mime_type}

        def change(job: Job) -> dict[str, Any]:
            kept = [r for r in job.results if r["id"] != result_id]
            return {"results": [*kept, result]}

        self._mutate(change)
        return result


def mark_executing(store: JobStore, job_id: str) -> Job | None:
    """QUEUED -> EXECUTING; returns the job, or None if it may not run (aborted, gone)."""
    store.update_if(job_id, QUEUED, phase=EXECUTING, start_time=utcnow())
    job = store.get(job_id)
    return job if job is not None and job.phase == EXECUTING else None


def complete_job(store: JobStore, job_id: str) -> bool:
    job = store.get(job_id)
    now = utcnow()
    start = job.start_time if job and job.start_time else now
    return store.update_if(job_id, RUNNING_PHASES, phase=COMPLETED, end_time=now,
                           start_time=start)


def fail_job(store: JobStore, job_id: str, message: str, kind: str = "fatal",
             detail: str | None = None) -> bool:
    """-> ERROR with an errorSummary, unless the job already left QUEUED/EXECUTING."""
    return store.update_if(job_id, RUNNING_PHASES, phase=ERROR, end_time=utcnow(),
                           error_summary=error_summary(message, kind, detail))


INTERNAL = "InternalError: the job failed on our side; please report it with the job id"


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(message, errorSummary type) for a runner exception. A caller's mistake says what
    was wrong; our own failure says only that it happened (its text may name paths,
    buckets or settings: it goes to the log, not to the caller)."""
    if isinstance(exc, UsageError):
        return str(exc), "fatal"
    if isinstance(exc, TransientJobError):
        return str(exc) or "temporary failure, try again later", "transient"
    return INTERNAL, "fatal"


def run_job(ctx: RunContext, runner: Callable[[Job, RunContext], Any]) -> None:
    """Run one EXECUTING job to COMPLETED or ERROR (never over ABORTED).

    A runner that returns after its cancel flag was raised did not finish its work:
    unless ABORT or the duration limit already ended the job, that is an interruption
    (e.g. the local server shutting down), reported as a transient error.
    """
    try:
        runner(ctx.job, ctx)
    except JobAborted:
        pass
    except HandedOff:  # finished by the worker it was handed to
        return
    except Exception as exc:  # a runner bug or bad data: the job fails, the pool lives on
        if isinstance(exc, UsageError):  # the caller's mistake: one line, no traceback
            log.info("UWS job %s: usage error: %s", ctx.job_id, exc)
        else:
            log.exception("UWS job %s failed", ctx.job_id)
        message, kind = describe_failure(exc)
        fail_job(ctx.store, ctx.job_id, message, kind)
        return
    if ctx.cancel.is_set():
        fail_job(ctx.store, ctx.job_id, INTERRUPTED, "transient")
    else:
        complete_job(ctx.store, ctx.job_id)


INTERRUPTED = "the job was interrupted before it finished (service restart); please resubmit"


Runner = Callable[[Job, RunContext], Any]


class LocalExecutor:
    """A thread pool running registered runners, one per service name.

    ABORT raises the job's cancel flag (runners see it through ctx.is_aborted() and on
    their next ctx write); executionDuration is enforced by a timer that moves the job
    to ERROR and raises the same flag. Python threads cannot be killed: a runner that
    never looks at its context runs on, but its writes and its completion are refused.
    """

    starts_immediately = False

    def __init__(self, store: JobStore, runners: dict[str, Runner] | None = None,
                 result_sink: ResultSink | None = None, max_workers: int = 4,
                 recheck_seconds: float = 1.0) -> None:
        self.store = store
        self.runners: dict[str, Runner] = dict(runners or {})
        self.result_sink = result_sink
        self.recheck_seconds = recheck_seconds
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="uws")
        self._flags: dict[str, threading.Event] = {}
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()

    def register(self, service: str, runner: Runner) -> None:
        self.runners[service] = runner

    def start(self, job: Job) -> str:
        if job.service not in self.runners:
            raise LookupError(f"no runner registered for service {job.service!r}")
        with self._lock:
            self._flags[job.job_id] = threading.Event()
            self._futures[job.job_id] = self._pool.submit(self._work, job.job_id)
        return f"local:{job.job_id}"

    def abort(self, job: Job) -> None:
        self._raise_flag(job.job_id)

    def _raise_flag(self, job_id: str) -> None:
        with self._lock:
            flag = self._flags.get(job_id)
        if flag is not None:
            flag.set()

    def shutdown(self, wait: bool = True) -> None:
        """Stop: flag every running job and drop queued ones; both end in a transient
        ERROR, so no job is left QUEUED or EXECUTING for ever."""
        with self._lock:
            for flag in self._flags.values():
                flag.set()
            futures = list(self._futures.items())
        self._pool.shutdown(wait=wait, cancel_futures=True)
        for job_id, future in futures:
            if future.cancelled():
                fail_job(self.store, job_id, INTERRUPTED, "transient")

    def _work(self, job_id: str) -> None:
        with self._lock:
            flag = self._flags.get(job_id, threading.Event())
        job = mark_executing(self.store, job_id)
        timer = self._watch(job) if job is not None else None
        try:
            if job is not None:
                ctx = RunContext(self.store, job, self.result_sink, flag, self.recheck_seconds)
                run_job(ctx, self.runners[job.service])
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._flags.pop(job_id, None)
                self._futures.pop(job_id, None)

    def _watch(self, job: Job) -> threading.Timer | None:
        """A timer that ends the job when its executionDuration is used up."""
        if job.execution_duration <= 0:
            return None
        timer = threading.Timer(job.execution_duration, self._overran,
                                (job.job_id, job.execution_duration))
        timer.daemon = True
        timer.start()
        return timer

    def _overran(self, job_id: str, seconds: int) -> None:
        fail_job(self.store, job_id, overran_message(seconds))
        self._raise_flag(job_id)


def overran_message(seconds: int) -> str:
    return f"execution duration of {seconds} s exceeded; the job was stopped"


class DirectoryResultSink:
    """Result sink writing <root>/<job_id>/<result_id>; href = url_prefix/<job_id>/<result_id>
    (a file: URI when no prefix is given, e.g. for tests and the CLI)."""

    def __init__(self, root: str | Path, url_prefix: str | None = None) -> None:
        self.root = Path(root)
        self.url_prefix = url_prefix.rstrip("/") if url_prefix else None

    def __call__(self, job: Job, result_id: str, content: bytes, mime_type: str) -> str:
        path = self.root / job.job_id / (re.sub(r"[^A-Za-z0-9._-]", "_", result_id) or "result")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(content)
        tmp.replace(path)  # readers never see a half-written result
        if self.url_prefix:
            return f"{self.url_prefix}/{job.job_id}/{path.name}"
        return path.resolve().as_uri()

    def delete(self, job: Job) -> None:
        folder = self.root / job.job_id
        if folder.is_dir():
            for path in folder.iterdir():
                path.unlink(missing_ok=True)
            folder.rmdir()
