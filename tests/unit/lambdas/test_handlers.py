"""Lambda entry points (chalicelib.handlers) and structured logs / EMF (observability).

The ingest tests run against moto's S3 server on 127.0.0.1 (conftest's moto_endpoint, a
port chosen at run time): s3fs and deltalake talk HTTP, which an in-process mock misses.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice import Chalice, Response

from chalicelib import config
from chalicelib.ingest import inbox as s3inbox
from chalicelib.jobs import uws
from chalicelib.lake.storage import Archive
from chalicelib.lambdas import handlers
from chalicelib.query import runtime
from chalicelib.services.registry import JOBS
from chalicelib.web import observability as obs

# ---- observability ------------------------------------------------------------------------


@pytest.fixture
def emitted() -> Iterator[list[dict[str, Any]]]:
    docs: list[dict[str, Any]] = []
    remove = obs.add_sink(docs.append)
    yield docs
    remove()


def assert_valid_emf(doc: dict[str, Any]) -> None:
    """What CloudWatch needs to extract metrics: every named metric and dimension is a
    top-level member, metric values are numbers, the timestamp is epoch ms."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1.6e12
    for directive in meta["CloudWatchMetrics"]:
        assert directive["Namespace"]
        for dims in directive["Dimensions"]:
            assert all(isinstance(doc[d], str) for d in dims)
        for m in directive["Metrics"]:
            assert isinstance(doc[m["Name"]], (int, float)) and m["Unit"] in obs.UNITS


def test_request_log_is_one_emf_line_with_what_services_add(
        emitted: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "prod")
    config.reset()
    with obs.request_log("/tap/{rest+}", request_id="r-1", method="POST") as req:
        obs.add(rows=10, bytes_read=4096)
        obs.add(rows=5, query_ms=3.5)
        req.status = 200
    obs.add(rows=99)  # outside a request: ignored
    [doc] = emitted
    assert_valid_emf(doc)
    assert (doc["event"], doc["request_id"], doc["method"], doc["status"]) == \
        ("request", "r-1", "POST", 200)
    assert (doc["rows"], doc["Rows"], doc["bytes_read"], doc["BytesRead"]) == (15, 15, 4096, 4096)
    assert doc["Endpoint"] == "/tap/{rest+}" and doc["Stage"] == "prod"
    assert doc["query_ms"] == 3.5 and doc["Latency"] == doc["latency_ms"] >= 0
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Stage", "Endpoint"]]


def test_request_log_reports_an_exception_as_500(emitted: list[dict[str, Any]]) -> None:
    with pytest.raises(KeyError), obs.request_log("/sia/query"):
        raise KeyError("boom")
    assert emitted[0]["status"] == 500 and emitted[0]["error"] == "KeyError"


def test_metrics_go_to_stdout_in_lambda(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "spherex-dev-ingest")
    monkeypatch.setenv("METRICS_NAMESPACE", "Test")
    config.reset()
    obs.metric("IngestFailures", 1, "Count", Service="ingest")
    obs.log_event("note", delivery="2025W35")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    doc = json.loads(lines[0])
    assert_valid_emf(doc)
    assert doc["IngestFailures"] == 1 and doc["Service"] == "ingest"
    assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Test"
    assert json.loads(lines[1])["delivery"] == "2025W35"
    with pytest.raises(ValueError, match="unit"):
        obs.metric("Latency", 1, "Parsecs")


def test_outside_lambda_lines_go_to_the_logger(caplog: pytest.LogCaptureFixture,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.delenv("OBSERVABILITY_STDOUT", raising=False)
    config.reset()
    with caplog.at_level(logging.INFO, logger="chalicelib.web.observability"):
        obs.metric("JobFailures", 0)
    assert capsys.readouterr().out == ""
    assert json.loads(caplog.records[0].getMessage())["JobFailures"] == 0


def test_json_log_formatter() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("chalicelib.uws", logging.ERROR, __file__, 1, "job %s",
                                   ("j1",), sys.exc_info())
    record.aws_request_id = "r-9"
    doc = json.loads(obs.JsonFormatter().format(record))
    assert (doc["message"], doc["level"], doc["request_id"]) == ("job j1", "ERROR", "r-9")
    assert "ValueError: bad" in doc["exception"]


# ---- the API function ---------------------------------------------------------------------


def proxy_event(path: str, method: str = "GET", accept: str = "*/*",
                query: dict[str, str] | None = None) -> dict[str, Any]:
    """What API Gateway's greedy {proxy+} resource sends (REST API, Lambda proxy)."""
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": {"Host": "abc.execute-api.us-east-1.amazonaws.com", "Accept": accept},
        "multiValueHeaders": {"Accept": [accept]},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")}, "stageVariables": None,
        "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": method, "stage": "api",
                           "path": "/api" + path, "requestId": "req-42",
                           "domainName": "abc.execute-api.us-east-1.amazonaws.com"},
        "body": None, "isBase64Encoded": False,
    }


@pytest.fixture
def stub_app(monkeypatch: pytest.MonkeyPatch) -> Chalice:
    app = Chalice(app_name="stub")
    app.api.binary_types.append("application/fits")

    @app.route("/")
    def index() -> Response:
        return Response("home", headers={"Content-Type": "text/plain"})

    @app.route("/coverage/{collection}")
    def coverage(collection: str) -> dict[str, str]:
        return {"collection": collection}

    @app.route("/votable")
    def votable() -> Response:  # services answer bytes; this type is not a binary one
        return Response(b"<VOTABLE>\xc3\xa9</VOTABLE>",
                        headers={"Content-Type": "application/x-votable+xml"})

    @app.route("/raw")
    def raw() -> Response:
        return Response(b"\xff\xfe\x00", headers={"Content-Type": "text/plain"})

    @app.route("/data/{path+}")
    def data() -> Response:  # Chalice passes no greedy parameter: app.py reads uri_params
        path = app.current_request.uri_params["path"]
        return Response(b"SIMPLE  =   T" + path.encode(),
                        headers={"Content-Type": "application/fits"})

    monkeypatch.setattr(handlers, "_chalice_app", lambda: app)
    return app


def test_api_routes_greedy_proxy_events_to_chalice_routes(
        stub_app: Chalice, emitted: list[dict[str, Any]]) -> None:
    reply = handlers.api(proxy_event("/data/qr2/level2/x.fits"))
    assert reply["statusCode"] == 200 and reply["isBase64Encoded"] is True
    assert base64.b64decode(reply["body"]).endswith(b"qr2/level2/x.fits")
    reply = handlers.api(proxy_event("/coverage/spherex_qr2"))
    assert json.loads(reply["body"]) == {"collection": "spherex_qr2"}
    assert handlers.api(proxy_event("/"))["body"] == "home"
    # what awslambdaric posts back is json.dumps of the answer: no bytes may remain
    reply = json.loads(json.dumps(handlers.api(proxy_event("/votable"))))
    assert reply["body"] == "<VOTABLE>\u00e9</VOTABLE>" and not reply.get("isBase64Encoded")
    reply = json.loads(json.dumps(handlers.api(proxy_event("/raw"))))
    assert reply["isBase64Encoded"] is True and base64.b64decode(reply["body"]) == b"\xff\xfe\x00"
    assert handlers.api(proxy_event("/coverage/a/b"))["statusCode"] == 404
    assert handlers.api(proxy_event("/coverage/x", method="DELETE"))["statusCode"] == 405
    endpoints = [(d["Endpoint"], d["status"], d["request_id"]) for d in emitted]
    endpoints = [e for e in endpoints if e[0] not in ("/votable", "/raw")]
    assert endpoints == [("/data/{path+}", 200, "req-42"), ("/coverage/{collection}", 200,
                         "req-42"), ("/", 200, "req-42"), ("unmatched", 404, "req-42"),
                         ("/coverage/{collection}", 405, "req-42")]


def test_api_serves_the_real_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVE_URL", str(tmp_path / "archive"))
    runtime.reset()
    try:
        reply = handlers.api(proxy_event("/tap/availability"))
    finally:
        runtime.reset()
    assert reply["statusCode"] == 200 and "availability" in reply["body"]


# ---- UWS job functions --------------------------------------------------------------------


@pytest.fixture
def jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[uws.LocalJobStore]:
    """The handlers on a local job store and a local archive (where results go)."""
    store = uws.LocalJobStore(tmp_path / "jobs")
    monkeypatch.setattr(handlers, "job_store", lambda: store)
    monkeypatch.setenv("ARCHIVE_URL", str(tmp_path / "archive"))
    runtime.reset()
    yield store
    runtime.reset()


def executing_job(store: uws.LocalJobStore, service: str = "tap", duration: int = 0) -> str:
    job = uws.Job(job_id=uws.model.new_job_id(), service=service, phase="EXECUTING",
                  start_time=uws.model.utcnow(), execution_duration=duration,
                  parameters={"query": ["SELECT 1"]})
    store.create(job)
    return job.job_id


def use_runner(monkeypatch: pytest.MonkeyPatch, runner: Callable[..., Any]) -> None:
    monkeypatch.setitem(JOBS, "tap", replace(JOBS["tap"], runner=runner))


def test_run_job_stores_results_and_counts_failures(
        jobs: uws.LocalJobStore, monkeypatch: pytest.MonkeyPatch,
        emitted: list[dict[str, Any]], tmp_path: Path) -> None:
    use_runner(monkeypatch, lambda job, ctx: ctx.add_result("result", b"rows", "text/csv"))
    job_id = executing_job(jobs)
    out = handlers.run_job({"service": "tap", "job_id": job_id})
    assert out == {"job_id": job_id, "service": "tap", "phase": "COMPLETED", "ran": True}
    href = jobs.get(job_id).results[0]["href"]
    assert href == f"archive:results/tap/{job_id}/result"  # where chalicelib.jobs looks
    assert (tmp_path / "archive/results/tap" / job_id / "result").read_bytes() == b"rows"
    assert emitted[-1]["JobFailures"] == 0 and emitted[-1]["Service"] == "tap"

    jobs.update_if(job_id, None, phase="ABORTED")  # an aborted job is not run again
    assert handlers.run_job({"service": "tap", "job_id": job_id})["ran"] is False


def test_a_worker_answers_with_the_base_url_the_job_was_created_with(
        archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No process-wide 'last base URL': the TAP runner's DataLink descriptors point at
    the base stored in the job record, whatever another request used meanwhile."""
    store = uws.LocalJobStore(tmp_path / "jobs")
    monkeypatch.setattr(handlers, "job_store", lambda: store)
    monkeypatch.setenv("ARCHIVE_URL", archive.url)
    runtime.reset()
    try:
        job = uws.Job(job_id=uws.model.new_job_id(), service="tap", phase="EXECUTING",
                      start_time=uws.model.utcnow(), base_url="https://one.example/api",
                      parameters={"lang": ["ADQL"], "query": [
                          "SELECT TOP 1 obs_publisher_did FROM ivoa.obscore"]})
        store.create(job)
        assert handlers.run_job({"service": "tap", "job_id": job.job_id})["phase"] == \
            "COMPLETED"
        href = store.get(job.job_id).results[0]["href"]
        body = runtime.archive().read_bytes(href.removeprefix("archive:"))
    finally:
        runtime.reset()
    assert b"https://one.example/api/datalink/links" in body


class FakeContext:
    aws_request_id = "lambda-req-1"

    def __init__(self, seconds_left: float) -> None:
        self.deadline = time.monotonic() + seconds_left

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def test_run_job_ends_the_job_before_lambda_times_out(
        jobs: uws.LocalJobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = threading.Event()

    def slow(job: Any, ctx: Any) -> None:
        while not ctx.cancel.wait(0.02):
            pass
        stopped.set()

    use_runner(monkeypatch, slow)
    job_id = executing_job(jobs)
    context = FakeContext(handlers.DEADLINE_MARGIN_S + 0.3)
    out = handlers.run_job({"service": "tap", "job_id": job_id}, context)
    assert stopped.is_set() and out["phase"] == "ERROR"
    assert "ran out of worker time" in jobs.get(job_id).error_summary["message"]


def test_fail_job_turns_a_caught_error_into_an_error_summary(
        jobs: uws.LocalJobStore, emitted: list[dict[str, Any]]) -> None:
    job_id = executing_job(jobs)
    cause = json.dumps({"errorType": "OSError", "errorMessage": "truncated FITS",
                        "stackTrace": ["..."]})
    out = handlers.fail_job({"service": "tap", "job_id": job_id,
                             "error": {"Error": "OSError", "Cause": cause}})
    assert out["phase"] == "ERROR" and out["changed"] is True
    summary = jobs.get(job_id).error_summary
    assert (summary["type"], summary["message"]) == ("fatal", "OSError: truncated FITS")
    assert emitted[-1]["JobFailures"] == 1
    again = handlers.fail_job({"service": "tap", "job_id": job_id, "error": {}})
    assert again["changed"] is False  # an ended job keeps its first error


@pytest.mark.parametrize("error, message, kind", [
    ({"Error": "Lambda.TooManyRequestsException", "Cause": "Rate exceeded"},
     "temporary service failure (Lambda.TooManyRequestsException); please resubmit",
     "transient"),
    ({"Error": "States.Timeout", "Cause": ""}, "a step of the job ran out of time",
     "transient"),
    ({"Error": "States.Runtime", "Cause": "bad JSONPath"}, "States.Runtime: bad JSONPath",
     "fatal"),
    ({}, "States.Runtime", "fatal"),
])
def test_describe_error(error: dict[str, str], message: str, kind: str) -> None:
    text, got = handlers.describe_error(error)
    assert text.startswith(message) and got == kind


# ---- ingest from the S3 inbox -------------------------------------------------------------


@pytest.mark.parametrize("key, prefix", [
    ("2025W35/manifest.json", "2025W35/"),
    ("deliveries/2025W36/manifest.json", "deliveries/2025W36/"),
    ("manifest.json", None),  # a delivery needs its own prefix
    ("2025W35/data/qr2/manifest.json", None),  # a data file, not the delivery's manifest
    ("2025W35/old-manifest.json", None),
])
def test_delivery_prefix(key: str, prefix: str | None) -> None:
    assert s3inbox.delivery_prefix(key) == prefix


def test_object_keys_cannot_escape_the_delivery() -> None:
    from chalicelib.ingest import streaming
    from chalicelib.ingest.delivery import DeliveryError

    ok = {"files": [{"key": "qr2/level2/x.fits", "size": 1}]}
    assert streaming._files(ok) == ok["files"]
    for bad in ("../../etc/passwd", "qr2/../../x", "", "/abs/x", "a//b", "a\\..\\b"):
        with pytest.raises(DeliveryError, match="outside the delivery"):
            streaming._files({"files": [{"key": bad, "size": 1}]})


@pytest.fixture
def inbox(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """A fresh inbox and archive bucket on the session's moto server (conftest.py);
    yields (s3 client, inbox bucket)."""
    n = uuid.uuid4().hex[:10]
    env = {"S3_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "ARCHIVE_URL": f"s3://archive-{n}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    handlers.reset()
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=f"archive-{n}")
    s3.create_bucket(Bucket=f"inbox-{n}")
    yield s3, f"inbox-{n}"
    handlers.reset()


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        from chalicelib.devtools.synth import synthesize
    except ImportError as exc:  # written in parallel by another engineer
        pytest.skip(f"chalicelib.synth not available yet: {exc}")
    [folder] = synthesize(tmp_path_factory.mktemp("synth"), weeks=1, image_size=64,
                          images_per_week=6)
    return Path(folder)


def upload(s3: Any, bucket: str, folder: Path, prefix: str,
           manifest: Path | None = None) -> dict[str, Any]:
    """Upload a delivery, manifest last (its arrival triggers ingest); returns the event."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != s3inbox.MANIFEST]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: s3.upload_file(
            str(p), bucket, prefix + p.relative_to(folder).as_posix()), files))
    return drop_manifest(s3, bucket, manifest or folder / s3inbox.MANIFEST, prefix)


def drop_manifest(s3: Any, bucket: str, manifest: Path, prefix: str) -> dict[str, Any]:
    key = prefix + s3inbox.MANIFEST
    s3.upload_file(str(manifest), bucket, key)
    return {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": bucket}, "object": {"key": key.replace(" ", "+")}}}]}


def status_of(s3: Any, bucket: str, prefix: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=prefix + s3inbox.STATUS)["Body"].read()
    return json.loads(body)


def releases_in(s3: Any) -> list[str]:
    bucket = Archive.from_env().bucket
    found = s3.list_objects_v2(Bucket=bucket, Prefix="tables/_releases/").get("Contents", [])
    return [o["Key"] for o in found if o["Key"].endswith(".json")]  # not the pointer


def test_ingest_from_s3_rejects_then_commits_and_reports(
        inbox: tuple[Any, str], delivery: Path, tmp_path: Path,
        emitted: list[dict[str, Any]]) -> None:
    s3, bucket = inbox
    prefix = "weekly/2025W35/"
    broken = tmp_path / "manifest.json"
    manifest = json.loads((delivery / "manifest.json").read_text())
    manifest["tables"]["plane"]["md5"] = "0" * 32
    broken.write_text(json.dumps(manifest))

    # A corrupt checksum: rejected, nothing committed, the failure counted.
    event = upload(s3, bucket, delivery, prefix, manifest=broken)
    [status] = handlers.ingest_from_s3(event, FakeContext(900))["deliveries"]
    assert status == status_of(s3, bucket, prefix)
    assert status["state"] == "rejected" and "checksum" in status["message"]
    assert "upload manifest.json again" in status["message"]
    assert status["request_id"] == "lambda-req-1"
    assert releases_in(s3) == []
    assert s3.list_objects_v2(Bucket=Archive.from_env().bucket)["KeyCount"] == 0
    assert [d["IngestFailures"] for d in emitted if "IngestFailures" in d] == [1]

    # The operator drops the corrected manifest: the same prefix now ingests.
    event = drop_manifest(s3, bucket, delivery / "manifest.json", prefix)
    [status] = handlers.ingest_from_s3(event)["deliveries"]
    assert status == status_of(s3, bucket, prefix)
    assert (status["state"], status["release"], status["delivery"]) == ("ok", 1, delivery.name)
    assert status["maintenance"] is None  # one week waiting: nothing to merge yet
    assert status["rows"]["ivoa.obscore"] > 0 and status["files"] > 0
    assert set(status["timings"]) >= {"plan", "validate", "files", "tables", "commit"}
    assert status["moved"]["files"] == status["files"]  # checked and copied in place
    assert releases_in(s3) == ["tables/_releases/00000001.json"]
    assert s3.list_objects_v2(Bucket=Archive.from_env().bucket,
                              Prefix="data/")["KeyCount"] == status["files"]
    metric = [d for d in emitted if "IngestFailures" in d][-1]
    assert_valid_emf(metric)
    assert metric["IngestFailures"] == 0 and metric["IngestSeconds"] > 0

    # S3 delivers events at least once: a repeat is recognised without reading files.
    [again] = handlers.ingest_from_s3(event)["deliveries"]
    assert (again["state"], again["skipped"], again["release"]) == ("ok", True, 1)
    assert releases_in(s3) == ["tables/_releases/00000001.json"]


def test_unexpected_failures_are_reported_then_raised(
        inbox: tuple[Any, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        emitted: list[dict[str, Any]]) -> None:
    s3, bucket = inbox
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"delivery": "2025W40"}))
    event = upload(s3, bucket, folder, "2025W40/")

    def broken(*args: Any) -> int:
        raise ConnectionError("S3 went away")

    monkeypatch.setattr(s3inbox.streaming, "plan", broken)
    with pytest.raises(ConnectionError):  # Lambda's async retry runs it again
        handlers.ingest_from_s3(event)
    status = status_of(s3, bucket, "2025W40/")
    assert status["state"] == "failed" and "S3 went away" in status["message"]
    assert emitted[-1]["IngestFailures"] == 1


def test_a_manifest_without_its_tables_is_rejected(inbox: tuple[Any, str],
                                                   tmp_path: Path) -> None:
    s3, bucket = inbox
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(
        {"delivery": "2025W42", "tables": {}, "files": []}))
    event = upload(s3, bucket, folder, "in box/2025W42/")  # spaces arrive URL-encoded
    [status] = handlers.ingest_from_s3(event)["deliveries"]
    assert status["state"] == "rejected" and "observation" in status["message"]
    assert status_of(s3, bucket, "in box/2025W42/")["state"] == "rejected"
    ignored = {"Records": [{"s3": {"bucket": {"name": bucket},
                                   "object": {"key": "in+box/2025W42/data/manifest.json"}}}]}
    assert handlers.ingest_from_s3(ignored) == {"deliveries": []}


def test_ingest_lambda_merges_due_weeks_and_survives_a_failed_merge(tmp_path, deliveries,
                                                                     monkeypatch):
    from chalicelib.ingest import maintenance
    from chalicelib.ingest.delivery import ingest

    arch = Archive.from_env(str(tmp_path / "arch"))
    ingest(deliveries[0], arch)
    monkeypatch.setenv("ARCHIVE_URL", str(tmp_path / "arch"))
    monkeypatch.setenv("MERGE_EVERY", "1")
    config.reset()
    with monkeypatch.context() as m:
        m.setattr(maintenance, "after_ingest", lambda *a, **k: 1 / 0)
        assert s3inbox.maintain().startswith("failed, retried after the next delivery")
    assert maintenance.layout(arch) == (1, 0)  # the delivery itself stays committed
    assert "release 2" in s3inbox.maintain()
    assert maintenance.layout(arch) == (0, 1)
