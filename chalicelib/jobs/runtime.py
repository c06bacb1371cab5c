"""The async job runtime shared by TAP async, SODA async and spectrophotometry.

On AWS (JOBS_TABLE set) jobs live in DynamoDB and run in Step Functions (one state
machine ARN per service, <SERVICE>_STATE_MACHINE_ARN); locally they live in a SQLite
store next to the archive and run in a local worker pool. Results are archive objects
under results/<service>/<job>/<id>, handed out by presigned URL on S3.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable

from ..query import runtime
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
_runners: dict[str, Runner] = {}
_validators: dict[str, Callable] = {}
_limits: dict[str, int] = {}
_state: dict[str, object] = {}
RESULT_PREFIX = "archive:"


def register(service: str, runner: Runner, validator: Callable | None = None,
             max_duration: int = 3600) -> None:
    """Declare an async service: its runner (run(job, ctx)) and parameter validator."""
    _runners[service] = runner
    if validator:
        _validators[service] = validator
    _limits[service] = max_duration


def store():
    with _lock:
        if "store" not in _state:
            table = os.environ.get("JOBS_TABLE")
            if table:
                import boto3

                _state["store"] = DynamoJobStore(table, boto3.client("dynamodb"))
            else:
                folder = os.environ.get("JOBS_DIR") or _local_jobs_dir()
                _state["store"] = LocalJobStore(folder)
        return _state["store"]


def _local_jobs_dir() -> str:
    arch = runtime.archive()
    return os.path.join(arch.url, "_jobs") if not arch.is_s3 else "./jobs"


def result_sink(job: Job, result_id: str, content: bytes, mime_type: str) -> str:
    key = f"results/{job.service}/{job.job_id}/{result_id}"
    runtime.archive().write_bytes(key, content)
    return RESULT_PREFIX + key


def _executor(service: str):
    arn = os.environ.get(f"{service.upper()}_STATE_MACHINE_ARN")
    if arn:
        import boto3

        return StepFunctionsExecutor(arn, boto3.client("stepfunctions"))
    with _lock:
        if "local" not in _state:
            _state["local"] = LocalExecutor(store(), dict(_runners), result_sink=result_sink,
                                            max_workers=2)
        ex = _state["local"]
    for name, run in _runners.items():
        ex.register(name, run)
    return ex


def result_url(base: str) -> Callable[[Job, dict], str]:
    def resolve(job: Job, result: dict) -> str:
        href = result["href"]
        if not href.startswith(RESULT_PREFIX):
            return href
        key = href[len(RESULT_PREFIX):]
        arch = runtime.archive()
        if arch.is_s3:
            return arch.presign(key, content_type=result.get("mime_type"))
        return f"{base}/{key}"
    return resolve


def service(name: str, base: str) -> UWSService:
    """The UWS service for `name` as seen from `base` (its result URLs point there)."""
    st = store()
    key = (name, base)
    with _lock:
        svc = _services.get(key)
    if svc is None:
        svc = UWSService(st, _executor(name), service_name=name,
                         params_validator=_validators.get(name),
                         max_duration=_limits.get(name, 3600), result_url_fn=result_url(base))
        with _lock:
            _services[key] = svc
    return svc


def reset() -> None:
    """Forget stores and executors (tests switch archives)."""
    with _lock:
        ex = _state.pop("local", None)
        _state.clear()
        _services.clear()
    if ex is not None:
        ex.shutdown(wait=False)


def local_result(path: str):
    """Serve results/<service>/<job>/<id> from a local archive (S3 uses presigned URLs)
    to whoever may see the job."""
    from ..web.params import Reply, current_caller
    from .uws.service import may_see

    parts = path.split("/")
    arch = runtime.archive()
    if arch.is_s3 or len(parts) != 3 or any(p in ("", ".", "..") for p in parts):
        return Reply.text("Not found", 404)
    key = "results/" + path
    job = store().get(parts[1])
    if job is None or not may_see(job, current_caller()) or not arch.exists(key):
        return Reply.text("Not found", 404)
    mime = next((r.get("mime_type") for r in job.results
                 if r.get("href", "").endswith(key)), None)
    return Reply(200, arch.read_bytes(key), mime or "application/octet-stream")


def keep_uploads(params) -> dict[str, list[str]]:
    """Inline UPLOAD parts outlive the request: store each in the archive and point the
    job's UPLOAD parameter at it (read back by tapupload as archive:uploads/...)."""
    values = params.to_dict()
    if not params.files or "upload" not in values:
        return values
    arch = runtime.archive()
    prefix = f"uploads/{uuid.uuid4().hex}"
    for name, part in params.files.items():
        arch.write_bytes(f"{prefix}/{name}", part.content)
    values["upload"] = [v.replace("param:", f"archive:{prefix}/") for v in values["upload"]]
    return values


def handle_uws(name: str, method: str, sub: str, params, base: str, list_url: str):
    """One async service's UWS request, as a web Reply, on behalf of the current caller.
    A caller without an identity creating a job gets an owner token (a cookie) so that
    its job list shows its own jobs."""
    from ..web.params import Reply, anonymous_owner, current_caller, new_owner_token, owner_cookie

    owner, token = current_caller(), None
    if owner is None and method.upper() == "POST" and not sub.strip("/"):
        token = new_owner_token()
        owner = anonymous_owner(token)
    resp = service(name, base).handle(method, sub, keep_uploads(params), None, owner, list_url)
    headers = {k: v for k, v in resp.headers.items() if k != "Content-Type"}
    if token and resp.status < 400:
        headers["Set-Cookie"] = owner_cookie(token, base)
    return Reply(resp.status, resp.body, resp.content_type, headers)
