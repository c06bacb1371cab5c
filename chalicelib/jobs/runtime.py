"""The async job runtime shared by TAP async, SODA async and spectrophotometry.

On AWS (JOBS_TABLE set) jobs live in DynamoDB and run in Step Functions (one state
machine ARN per service, <SERVICE>_STATE_MACHINE_ARN); locally they live in a SQLite
store next to the archive and run in a local worker pool. Results are archive objects
under results/<service>/<job>/<id>, handed out by presigned URL on S3.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..config import settings
from ..lake import current
from .uws import (
    DynamoJobStore,
    Job,
    LocalExecutor,
    LocalJobStore,
    StepFunctionsExecutor,
    UWSService,
)
from .uws.executor import Runner

_lock = threading.RLock()  # store() is called while holding it
_services: dict[tuple[str, str], UWSService] = {}
_state: dict[str, object] = {}
RESULT_PREFIX = "archive:"
LOCAL_BASE = "http://127.0.0.1:8000"  # the local server's default address


@dataclass(frozen=True)
class JobKind:
    """An async service as the job runtime sees it: its runner (run(job, ctx)), the
    validator of its parameters at creation, and its longest executionDuration. Every
    kind is listed once, in services/registry.py."""
    name: str
    runner: Runner
    validator: Callable | None = None
    max_duration: int = 3600
    # state machines (settings().state_machine_arn names) its runner may hand a job on to
    handoffs: tuple[str, ...] = ()


def store():
    with _lock:
        if "store" not in _state:
            conf = settings()
            table = conf.jobs_table
            if table:
                import boto3  # deferred: AWS path only

                _state["store"] = DynamoJobStore(table, boto3.client("dynamodb"))
            else:
                folder = conf.jobs_dir or _local_jobs_dir()
                _state["store"] = LocalJobStore(folder)
        return _state["store"]


def _local_jobs_dir() -> str:
    arch = current.archive()
    return os.path.join(arch.url, "_jobs") if not arch.is_s3 else "./jobs"


def result_sink(job: Job, result_id: str, content: bytes, mime_type: str) -> str:
    key = f"results/{job.service}/{job.job_id}/{result_id}"
    current.archive().write_bytes(key, content)
    return RESULT_PREFIX + key


def _executor(kind: JobKind):
    conf = settings()
    arn = conf.state_machine_arn(kind.name)
    if arn:
        import boto3  # deferred: AWS path only

        return StepFunctionsExecutor(arn, boto3.client("stepfunctions"), handoffs=tuple(
            conf.state_machine_arn(m) or "" for m in kind.handoffs))
    with _lock:
        if "local" not in _state:
            _state["local"] = LocalExecutor(store(), result_sink=result_sink, max_workers=2)
        ex = _state["local"]
    ex.register(kind.name, kind.runner)
    return ex


def result_url(base: str) -> Callable[[Job, dict], str]:
    def resolve(job: Job, result: dict) -> str:
        href = result["href"]
        if not href.startswith(RESULT_PREFIX):
            return href
        key = href[len(RESULT_PREFIX):]
        arch = current.archive()
        if arch.is_s3:
            return arch.presign(key, content_type=result.get("mime_type"))
        return f"{base}/{key}"
    return resolve


def service(kind: JobKind, base: str) -> UWSService:
    """The UWS service of `kind` as seen from `base` (its result URLs point there)."""
    st = store()
    key = (kind.name, base)
    with _lock:
        svc = _services.get(key)
    if svc is None:
        svc = UWSService(st, _executor(kind), service_name=kind.name,
                         params_validator=kind.validator,
                         max_duration=kind.max_duration, result_url_fn=result_url(base),
                         public_base=base)
        with _lock:
            _services[key] = svc
    return svc


def job_base(stored: str | None) -> str:
    """The base URL a job's results point at: the one stored with the job (Job.base_url);
    for a record older than that field, PUBLIC_URL, else the local server's address."""
    return (stored or settings().public_url or LOCAL_BASE).rstrip("/")


def reset() -> None:
    """Forget stores and executors (tests switch archives)."""
    with _lock:
        ex = _state.pop("local", None)
        _state.clear()
        _services.clear()
    if ex is not None:
        ex.shutdown(wait=False)
