"""Lambda entry points (one container image; ImageConfig.Command picks the function).

- api: the Chalice app behind API Gateway's greedy {proxy+} resource
- run_job / fail_job: the UWS worker and the error path of infra/statemachines/*.asl.json
- photometry_plan / photometry_measure / photometry_assemble: spectrophotometry steps
- ingest_from_s3: a manifest.json landing in the inbox bucket ingests that delivery
- vacuum_releases: on a schedule, removes what no kept release can read (retention)

Everything a function needs comes from its environment (see infra/template.yaml):
ARCHIVE_URL, JOBS_TABLE, PUBLIC_URL, STAGE, METRICS_NAMESPACE (chalicelib.jobs keeps job
results in the archive under results/<service>/<job id>/).
"""

from __future__ import annotations

import base64
import importlib.machinery
import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import unquote_plus

from ..config import settings
from ..web import observability as obs
from ..web.routes import resolve_route


@cache
def _configure_logging() -> None:
    """In Lambda every log line is JSON; done once, by the first entry point called."""
    if settings().in_lambda:
        obs.configure_logging()

# ---- AWS clients and the job store -------------------------------------------------------


@cache
def _client(service: str) -> Any:
    import boto3  # deferred: AWS path only

    # from the settings, not lake.storage: importing that loads fsspec (~0.3 s of cold start)
    conf = settings()
    endpoint = conf.s3_endpoint_url if service == "s3" else None
    return boto3.client(service, region_name=conf.aws_region, endpoint_url=endpoint)


def job_store() -> Any:
    """The UWS job store the API uses too (DynamoDB when JOBS_TABLE is set)."""
    from ..jobs import runtime as jobs  # deferred: per function

    return jobs.store()


def reset() -> None:
    """Forget cached clients and stores (tests switch endpoints and tables)."""
    from ..jobs import runtime as jobs  # deferred: per function
    from ..query import runtime  # deferred: per function

    _client.cache_clear()
    jobs.reset()
    runtime.reset()


# ---- the API function --------------------------------------------------------------------


class _PandasKeptOut:  # a finder and loader (importlib.abc costs ~15 ms to import)
    """Makes `import pandas` fail as if it were not installed. pyarrow, DuckDB and astropy
    treat it as optional and only probe for it; nothing the API serves needs it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.partition(".")[0] == "pandas":
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec: Any) -> None:
        raise ModuleNotFoundError(f"No module named {spec.name!r} (WITHOUT_PANDAS=1 in "
                                  "this function)", name=spec.name)

    def exec_module(self, module: Any) -> None:  # never reached: create_module raises
        raise AssertionError(module)


@cache
def _keep_pandas_out() -> None:
    if settings().without_pandas and "pandas" not in sys.modules:
        sys.meta_path.insert(0, _PandasKeptOut())


def _chalice_app() -> Any:
    # app.py sits next to chalicelib/ in LAMBDA_TASK_ROOT
    import app  # deferred: app.py imports chalicelib

    return app.app


def route_event(event: dict[str, Any], routes: dict[str, Any]) -> str | None:
    """Point a {proxy+} event at the Chalice route its path matches (Chalice dispatches
    on requestContext.resourcePath, which API Gateway sets to '/{proxy+}')."""
    ctx = event.setdefault("requestContext", {})
    if ctx.get("resourcePath") in routes:
        return ctx["resourcePath"]
    found = resolve_route(routes, event.get("path", "/"))
    if found is None:
        return None
    ctx["resourcePath"], event["pathParameters"] = found
    event["resource"] = found[0]
    return found[0]


def _not_found(path: str) -> dict[str, Any]:
    return {"statusCode": 404, "headers": {"Content-Type": "text/plain; charset=utf-8"},
            "body": f"Not found: {path}\n", "isBase64Encoded": False}


def api(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """API Gateway (REST, Lambda proxy) -> the Chalice app, one JSON log line per request."""
    _configure_logging()
    _keep_pandas_out()
    application = _chalice_app()
    route = route_event(event, application.routes)
    ctx = event.get("requestContext", {})
    with obs.request_log(route or "unmatched", ctx.get("requestId"),
                         event.get("httpMethod")) as req:
        req.fields["lambda_request_id"] = getattr(context, "aws_request_id", None)
        response = _not_found(event.get("path", "")) if route is None else \
            application(event, context)
        req.status = int(response.get("statusCode", 500))
    return json_safe(response)


def json_safe(response: dict[str, Any]) -> dict[str, Any]:
    """The Lambda runtime sends the answer as JSON, which has no bytes: Chalice leaves a
    bytes body of a type outside binary_types (VOTable, XML, text) as it is, so decode it
    (UTF-8), or base64 it when it is not text."""
    body = response.get("body")
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            response["body"] = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            response["body"] = base64.b64encode(bytes(body)).decode("ascii")
            response["isBase64Encoded"] = True
    return response


# ---- UWS jobs ----------------------------------------------------------------------------

# Leave this much of the Lambda time to record the outcome.
DEADLINE_MARGIN_S = 15.0


def runner_for(service: str) -> Callable[..., Any]:
    """The runner run(job, ctx) of a service, from the one registry of async services."""
    from ..services.registry import JOBS  # deferred: only workers load every service

    kind = JOBS.get(service)
    if kind is None:
        raise LookupError(f"no UWS runner for service {service!r}; known: {sorted(JOBS)}")
    return kind.runner


def _limit_seconds(job: Any, context: Any) -> tuple[float, str] | None:
    """Seconds until the job must stop, and why: the Lambda deadline or executionDuration."""
    from ..jobs.uws.executor import overran_message  # deferred: per function

    limits = []
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        left = context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_S
        limits.append((left, f"the job ran out of worker time after {left:.0f} s; ask for "
                             "less or split it"))
    if job.execution_duration and job.start_time:
        used = (datetime.now(UTC) - job.start_time).total_seconds()
        limits.append((job.execution_duration - used, overran_message(job.execution_duration)))
    return min(limits, default=None)


def _watchdog(job: Any, context: Any, cancel: threading.Event) -> threading.Timer | None:
    """End the job (ERROR) and raise its cancel flag before the Lambda is killed."""
    from ..jobs.uws import fail_job as uws_fail  # deferred: per function

    limit = _limit_seconds(job, context)
    if limit is None:
        return None

    def expire() -> None:
        uws_fail(job_store(), job.job_id, limit[1])
        cancel.set()

    timer = threading.Timer(max(0.0, limit[0]), expire)
    timer.daemon = True
    timer.start()
    return timer


def _job_outcome(job_id: str, service: str) -> dict[str, Any]:
    job = job_store().get(job_id)
    phase = job.phase if job is not None else "GONE"
    failed = phase == "ERROR"
    obs.metrics({"JobFailures": (int(failed), "Count")}, {"Service": service},
                event="job", job_id=job_id, phase=phase,
                error=(job.error_summary or {}).get("message") if failed and job else None)
    return {"job_id": job_id, "service": service, "phase": phase}


def run_job(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Step Functions task: run one UWS job to COMPLETED or ERROR (never over ABORTED)."""
    _configure_logging()
    from ..jobs import runtime as jobs  # deferred: per function
    from ..jobs import uws  # deferred: per function

    job_id, store = event["job_id"], job_store()
    job = uws.mark_executing(store, job_id)
    if job is None:  # aborted, deleted or expired before the worker started
        existing = store.get(job_id)
        return {"job_id": job_id, "service": event.get("service"),
                "phase": existing.phase if existing else "GONE", "ran": False}
    runner = runner_for(job.service)
    cancel = threading.Event()
    timer = _watchdog(job, context, cancel)
    try:  # results go where the API's UWS service finds them (chalicelib.jobs)
        uws.run_job(uws.RunContext(store, job, jobs.result_sink, cancel), runner)
    finally:
        if timer is not None:
            timer.cancel()
    return {**_job_outcome(job_id, job.service), "ran": True}


# Errors that mean "the platform, not the job": the errorSummary says try again.
TRANSIENT_ERRORS = frozenset({
    "Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException", "Lambda.Unknown", "States.Timeout",
    "States.HeartbeatTimeout", "TransientJobError",
})


def describe_error(error: dict[str, Any]) -> tuple[str, str]:
    """(user-facing message, 'fatal'|'transient') from a Step Functions Catch output."""
    name = str(error.get("Error") or "States.Runtime")
    cause = error.get("Cause") or ""
    try:  # a Lambda function error: Cause is the JSON the runtime reported
        doc = json.loads(cause)
        text = f"{doc.get('errorType', name)}: {doc.get('errorMessage', '')}".rstrip(": ")
    except (ValueError, AttributeError, TypeError):
        text = f"{name}: {cause}".rstrip(": ") if cause else name
    if name == "States.Timeout":
        text = "a step of the job ran out of time; ask for less or split the job"
    kind = "transient" if name in TRANSIENT_ERRORS or name.startswith("Lambda.") else "fatal"
    if kind == "transient" and name != "States.Timeout":
        text = f"temporary service failure ({name}); please resubmit"
    return text[:1000], kind


def fail_job(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Catch target of every state machine: the job ends in ERROR with a useful message."""
    _configure_logging()
    from ..jobs.uws import fail_job as uws_fail  # deferred: per function

    job_id = event["job_id"]
    error = event.get("error") or {}
    message, kind = describe_error(error)
    changed = uws_fail(job_store(), job_id, message, kind)
    obs.log_event("job_failed", job_id=job_id, service=event.get("service"), kind=kind,
                  message=message, changed=changed, error=error)
    return {**_job_outcome(job_id, str(event.get("service"))), "changed": changed}


# ---- spectrophotometry steps (logic in chalicelib.photometry.steps) ----------------------


def _step(name: str, event: dict[str, Any]) -> Any:
    _configure_logging()
    from ..photometry import steps  # deferred: per function

    start = time.perf_counter()
    out = getattr(steps, name)(event)
    obs.log_event("photometry_step", step=name, job_id=event.get("job_id"),
                  index=event.get("index"), seconds=round(time.perf_counter() - start, 3))
    return out


def photometry_plan(event: dict[str, Any], context: Any = None) -> Any:
    return _step("plan", event)


def photometry_measure(event: dict[str, Any], context: Any = None) -> Any:
    return _step("measure", event)


def photometry_assemble(event: dict[str, Any], context: Any = None) -> Any:
    return _step("assemble", event)


# ---- ingest from the S3 inbox (logic in chalicelib.ingest.inbox) -------------------------


def _fits_headers() -> Any:
    from ..cutout.fitsrange import hdu_names  # deferred: per function

    return hdu_names


def _fan_out(request_id: str | None) -> Callable[[dict[str, Any]], str] | None:
    """Start the ingest state machine for a delivery of many batches (None: no machine
    configured, the function does every batch itself)."""
    arn = settings().state_machine_arn("ingest")
    if not arn:
        return None

    def start(payload: dict[str, Any]) -> str:
        import uuid  # deferred: only a fan-out names an execution

        name = f"ingest-{int(time.time())}-{uuid.uuid4().hex[:12]}"
        return _client("stepfunctions").start_execution(
            stateMachineArn=arn, name=name[:80], input=json.dumps(payload))["executionArn"]

    return start


def ingest_from_s3(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """S3 ObjectCreated (suffix manifest.json) -> ingest the delivery under that prefix and
    write <prefix>_status.json (state ok / rejected / failed). A rejected delivery
    committed nothing, so uploading its manifest again retries it; an unexpected failure
    is re-raised after the status is written, so Lambda's async retry runs it again.
    An event with a "step" is a step of the ingest state machine (plan, batch, commit,
    failed: infra/statemachines/ingest.asl.json), for a week too big for one function."""
    _configure_logging()
    from ..ingest import inbox  # deferred: per function

    request_id = getattr(context, "aws_request_id", None)
    if "step" in event:
        start = time.perf_counter()
        out = inbox.step(_client("s3"), event, _fits_headers(), obs)
        obs.log_event("ingest_step", step=event["step"], prefix=event.get("prefix"),
                      batch=(event.get("batch") or {}).get("index"),
                      seconds=round(time.perf_counter() - start, 3))
        return out
    done = []
    for record in event.get("Records", []):
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])  # event keys are URL-encoded
        prefix = inbox.delivery_prefix(key)
        if prefix is None:
            obs.log_event("ingest_ignored", bucket=bucket, key=key)
            continue
        done.append(inbox.ingest_delivery(_client("s3"), bucket, prefix, request_id, obs,
                                          _fits_headers(), _fan_out(request_id)))
    return {"deliveries": done}


def vacuum_releases(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """EventBridge schedule -> vacuum the archive under the retention policy
    (RETENTION_KEEP_LAST, RETENTION_PINNED, named pins, RETENTION_GRACE_SECONDS: see
    chalicelib/ingest/retention.py). {"dry_run": true} only reports. With
    RETENTION_KEEP_LAST=0 (the default: keep every release) it does nothing."""
    _configure_logging()
    from ..ingest import retention  # deferred: per function
    from ..lake.storage import Archive  # deferred: per function (fsspec)

    policy = retention.Policy.from_settings()
    if policy.keep_last <= 0:
        obs.log_event("vacuum_skipped", reason="RETENTION_KEEP_LAST=0 keeps every release")
        return {"skipped": "RETENTION_KEEP_LAST=0 keeps every release"}
    start = time.perf_counter()
    report = retention.vacuum(Archive.from_env(), policy,
                              dry_run=bool(event.get("dry_run")))
    out = {"dry_run": report.dry_run, "kept": sorted(report.kept),
           "removed_files": sum(len(t.removed) for t in report.tables.values()),
           "removed_bytes": report.removed_bytes,
           "removed_other": len(report.other_removed)}
    obs.log_event("vacuum", seconds=round(time.perf_counter() - start, 3), **out)
    return out
