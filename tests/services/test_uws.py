"""UWS 1.1: job lifecycle, stores (SQLite and DynamoDB in moto), executors, XML, pyvo."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import boto3
import pytest
import requests
import urllib3
from moto.dynamodb.parsing.executors import SetExecutor
from pyvo.dal import AsyncTAPJob
from pyvo.io.uws import parse_job, parse_job_list

from chalicelib.jobs.uws import (
    ANY,
    DirectoryResultSink,
    DynamoJobStore,
    Job,
    JobAborted,
    LocalExecutor,
    LocalJobStore,
    RunContext,
    StepFunctionsExecutor,
    TransientJobError,
    UWSService,
    UWSUsageError,
    create_table,
    dynamo,
    fail_job,
    format_time,
    parse_time,
    run_job,
)
from chalicelib.jobs.uws.executor import INTERNAL
from chalicelib.jobs.uws.model import utcnow
from chalicelib.lambdas import handlers
from tests.support import REPO_ROOT
from tests.support.moto_dynamodb import atomic_requests

BASE = "http://uws.test/tap/async"
ACTIVE = {"PENDING", "QUEUED", "EXECUTING"}


# ---- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto(moto_endpoint: str) -> Iterator[str]:
    """The shared moto server (conftest), with DynamoDB's per-item atomicity restored
    (tests/support/moto_dynamodb.py): two racing UpdateItems cannot both pass their condition,
    and a read never sees half an UpdateItem, so the tests check our ConditionExpressions
    and write grouping rather than moto's threading."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with atomic_requests():
        yield moto_endpoint


def aws_client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


_tables = iter(range(10_000))


@pytest.fixture(params=["local", "dynamo"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "local":
        return LocalJobStore(tmp_path / "jobs")
    client = aws_client("dynamodb", request.getfixturevalue("moto"))
    name = f"uws-jobs-{next(_tables)}"
    create_table(client, name)
    return DynamoJobStore(name, client)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalJobStore:
    return LocalJobStore(tmp_path / "jobs.sqlite3")


class Harness:
    """A UWSService on a LocalExecutor, plus HTTP-less request helpers."""

    def __init__(self, store: Any, tmp_path: Path, runner: Callable[..., Any] | None,
                 **options: Any) -> None:
        self.store = store
        self.sink = DirectoryResultSink(tmp_path / "results", "http://uws.test/store")
        self.executor = LocalExecutor(store, {"tap": runner or (lambda job, ctx: None)},
                                      self.sink, recheck_seconds=0.05)
        self.service = UWSService(store, self.executor, service_name="tap", **options)

    def call(self, method: str, path: str = "", params: dict[str, Any] | None = None,
             form: dict[str, Any] | None = None, owner: str | None = None) -> Any:
        return self.service.handle(method, path, params or {}, form or {}, owner, BASE)

    def create(self, form: dict[str, Any] | None = None, owner: str | None = None) -> str:
        response = self.call("POST", "", form=form or {"QUERY": "SELECT 1"}, owner=owner)
        assert response.status == 303, response.body
        location = response.headers["Location"]
        assert location.startswith(BASE + "/")
        return location.rsplit("/", 1)[1]

    def job(self, job_id: str, **params: Any) -> Any:
        response = self.call("GET", job_id, params)
        assert response.status == 200, response.body
        assert response.content_type == "application/xml"
        return parse_job(io.BytesIO(response.body))

    def wait_final(self, job_id: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id, WAIT="1")
            if job.phase not in ACTIVE:
                return job
        raise AssertionError(f"job {job_id} still active after {timeout} s")


@pytest.fixture
def harness(local_store: LocalJobStore, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(runner: Callable[..., Any] | None = None, store: Any = None,
             **options: Any) -> Harness:
        made.append(Harness(store or local_store, tmp_path, runner, **options))
        return made[-1]

    yield make
    for h in made:
        h.executor.shutdown(wait=True)


def stilts_validate(tmp_path: Path, documents: dict[str, bytes]) -> None:
    """XSD-validate against the UWS 1.1 schema shipped in STILTS (skip without it)."""
    stilts = shutil.which("stilts")
    if stilts is None:
        pytest.skip("STILTS not installed (apt-get install stilts)")
    procs = {}
    for name, body in documents.items():
        path = tmp_path / f"{name}.xml"
        path.write_bytes(body)
        procs[name] = subprocess.Popen([stilts, "xsdvalidate", "uselocals=true", str(path)],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for name, proc in procs.items():
        output = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 0, f"{name}: {output}"


def result_runner(job: Job, ctx: RunContext) -> None:
    ctx.set_progress(0.5, "half way")
    ctx.add_result("result", f"rows for {ctx.param('QUERY')}".encode(), "text/plain")
    ctx.add_result("log", "http://elsewhere.test/log.txt", "text/plain")


# ---- lifecycle ----------------------------------------------------------------------------

def test_creation_redirects_to_a_pending_job(harness: Callable[..., Harness]) -> None:
    h = harness()
    job_id = h.create({"Query": "SELECT 1", "LANG": "ADQL", "RUNID": "run-7",
                       "EXECUTIONDURATION": "60"})
    job = h.job(job_id)
    assert (job.jobid, job.phase, job.runid) == (job_id, "PENDING", "run-7")
    assert job.ownerid is None and job.starttime is None and job.endtime is None
    assert int(job.executionduration.value) == 60
    assert {p.id_: p.content for p in job.parameters} == {"Query": "SELECT 1", "LANG": "ADQL"}
    assert h.call("GET", f"{job_id}/phase").body == b"PENDING"
    assert h.call("GET", f"{job_id}/executionduration").body == b"60"
    assert h.call("GET", f"{job_id}/owner").body == b""
    assert h.call("GET", f"{job_id}/quote").body == b""
    stored = h.store.get(job_id)
    assert stored.param("query") == "SELECT 1" and "phase" not in stored.parameters


def test_run_at_creation_completes_with_results(harness: Callable[..., Harness]) -> None:
    h = harness(result_runner)
    job_id = h.create({"QUERY": "SELECT 2", "PHASE": "RUN"})
    job = h.wait_final(job_id)
    assert job.phase == "COMPLETED"
    assert job.starttime is not None and job.endtime >= job.starttime >= job.creationtime
    assert str(job.jobinfo.get("progress")) == "0.5"
    results = {r.id_: r for r in job.results}
    assert set(results) == {"result", "log"}
    assert results["result"].href == f"{BASE}/{job_id}/results/result"
    assert (results["result"].size, results["result"].mimetype) == (len(b"rows for SELECT 2"),
                                                                    "text/plain")
    redirect = h.call("GET", f"{job_id}/results/result")
    assert redirect.status == 303
    assert redirect.headers["Location"] == f"http://uws.test/store/{job_id}/result"
    assert (h.sink.root / job_id / "result").read_bytes() == b"rows for SELECT 2"
    assert h.call("GET", f"{job_id}/results/log").headers["Location"] == \
        "http://elsewhere.test/log.txt"
    listed = parse_job_list(io.BytesIO(h.call("GET", "").body))
    assert [(j.jobid, j.phase) for j in listed] == [(job_id, "COMPLETED")]


def test_post_phase_run_and_abort_idempotent(harness: Callable[..., Harness]) -> None:
    h = harness()
    job_id = h.create()
    for _ in range(2):
        response = h.call("POST", f"{job_id}/phase", form={"phase": "RUN"})
        assert response.status == 303 and response.headers["Location"] == f"{BASE}/{job_id}"
    assert h.wait_final(job_id).phase == "COMPLETED"
    assert h.call("POST", f"{job_id}/phase", form={"PHASE": "ABORT"}).status == 303
    assert h.job(job_id).phase == "COMPLETED"  # aborting a finished job changes nothing


@pytest.mark.parametrize("error, kind, message", [
    (ValueError("no such column: /srv/x"), "fatal", INTERNAL),  # our failure: no detail
    (UWSUsageError("MAXREC must be positive"), "fatal", "MAXREC must be positive"),
    (TransientJobError("archive busy"), "transient", "archive busy"),
])
def test_runner_exception_gives_error_summary(harness: Callable[..., Harness],
                                              error: Exception, kind: str,
                                              message: str) -> None:
    def fail(job: Job, ctx: RunContext) -> None:
        raise error

    h = harness(fail)
    job_id = h.create({"QUERY": "x", "PHASE": "RUN"})
    job = h.wait_final(job_id)
    assert job.phase == "ERROR"
    assert job.errorsummary.type_ == kind
    assert job.errorsummary.message.content == message
    assert h.call("GET", f"{job_id}/error").body.decode() == message


def test_abort_really_stops_a_long_runner(harness: Callable[..., Harness]) -> None:
    started, stopped = threading.Event(), threading.Event()
    late_writes: list[str] = []

    def long_runner(job: Job, ctx: RunContext) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while not ctx.is_aborted() and time.monotonic() < deadline:
            time.sleep(0.01)
        stopped.set()
        try:  # whatever the runner still tries to write is refused
            ctx.add_result("result", b"too late", "text/plain")
        except JobAborted:
            late_writes.append("refused")

    h = harness(long_runner)
    job_id = h.create({"QUERY": "x", "PHASE": "RUN"})
    assert started.wait(5)
    t0 = time.monotonic()
    assert h.call("POST", f"{job_id}/phase", form={"PHASE": "ABORT"}).status == 303
    assert stopped.wait(3) and time.monotonic() - t0 < 2.0
    h.executor.shutdown(wait=True)  # the runner has returned: nothing may overwrite ABORTED
    job = h.job(job_id)
    assert job.phase == "ABORTED" and job.endtime is not None
    assert late_writes == ["refused"] and list(job.results) == []


def test_abort_reaches_a_runner_that_only_reports_progress(
        harness: Callable[..., Harness]) -> None:
    steps: list[int] = []

    def busy(job: Job, ctx: RunContext) -> None:
        for step in range(1000):  # never looks at is_aborted(): progress writes stop it
            steps.append(step)
            ctx.set_progress(step / 1000)
            time.sleep(0.01)

    h = harness(busy)
    job_id = h.create({"PHASE": "RUN"})
    while len(steps) < 3:
        time.sleep(0.01)
    h.call("POST", f"{job_id}/phase", form={"PHASE": "ABORT"})
    h.executor.shutdown(wait=True)
    assert len(steps) < 100 and h.job(job_id).phase == "ABORTED"


def test_execution_duration_exceeded_is_an_error(harness: Callable[..., Harness]) -> None:
    stopped = threading.Event()

    def endless(job: Job, ctx: RunContext) -> None:
        deadline = time.monotonic() + 10
        while not ctx.is_aborted() and time.monotonic() < deadline:
            time.sleep(0.01)
        stopped.set()

    h = harness(endless)
    job_id = h.create({"PHASE": "RUN", "EXECUTIONDURATION": "1"})
    job = h.wait_final(job_id, timeout=5)
    assert job.phase == "ERROR"
    assert "execution duration of 1 s exceeded" in job.errorsummary.message.content
    assert stopped.wait(2)


def test_execution_duration_enforced_without_a_timer(local_store: LocalJobStore) -> None:
    """Step Functions has no local timer: reading an overrun job ends it and stops the work."""
    class Recorder:
        starts_immediately = True
        aborted: list[str] = []

        def start(self, job: Job) -> str:
            return f"arn:{job.job_id}"

        def abort(self, job: Job) -> None:
            self.aborted.append(job.job_id)

    executor = Recorder()
    service = UWSService(local_store, executor, service_name="tap", max_duration=5)
    job = service.create_job({"PHASE": "RUN", "EXECUTIONDURATION": "2"})
    assert job.phase == "EXECUTING" and job.execution_arn == f"arn:{job.job_id}"
    local_store.update_if(job.job_id, "EXECUTING", start_time=utcnow() - timedelta(seconds=3))
    body = service.handle("GET", job.job_id, {}, {}, None, BASE).body
    parsed = parse_job(io.BytesIO(body))
    assert parsed.phase == "ERROR" and "2 s exceeded" in parsed.errorsummary.message.content
    assert executor.aborted == [job.job_id]


def test_clamping_of_duration_and_destruction(harness: Callable[..., Harness]) -> None:
    h = harness(max_duration=100, max_destruction=timedelta(days=2))
    job_id = h.create({"EXECUTIONDURATION": "0", "DESTRUCTION": "2999-01-01T00:00:00Z"})
    job = h.store.get(job_id)
    assert job.execution_duration == 100
    assert job.destruction <= utcnow() + timedelta(days=2)
    assert h.call("POST", f"{job_id}/executionduration",
                  form={"EXECUTIONDURATION": "30"}).status == 303
    assert h.call("GET", f"{job_id}/executionduration").body == b"30"
    when = format_time(utcnow() + timedelta(hours=1))
    assert h.call("POST", f"{job_id}/destruction", form={"DESTRUCTION": when}).status == 303
    assert h.call("GET", f"{job_id}/destruction").body.decode() == when


# ---- WAIT -------------------------------------------------------------------------------------

def test_wait_returns_early_on_phase_change(harness: Callable[..., Harness]) -> None:
    release = threading.Event()
    h = harness(lambda job, ctx: release.wait(5))
    job_id = h.create()
    threading.Timer(0.3, lambda: h.call("POST", f"{job_id}/phase", form={"PHASE": "RUN"})).start()
    t0 = time.monotonic()
    job = h.job(job_id, WAIT="5")
    assert job.phase in ("QUEUED", "EXECUTING") and 0.25 < time.monotonic() - t0 < 3
    release.set()
    assert h.wait_final(job_id).phase == "COMPLETED"


def test_wait_respects_timeout_phase_and_maximum(harness: Callable[..., Harness]) -> None:
    h = harness(max_wait=1.3)
    job_id = h.create()
    t0 = time.monotonic()
    assert h.job(job_id, WAIT="1").phase == "PENDING"  # PENDING is active: blocks
    assert 0.95 < time.monotonic() - t0 < 2.5
    t0 = time.monotonic()
    h.job(job_id, WAIT="-1")  # server maximum (and WAIT=30 is clamped to it)
    assert 1.25 < time.monotonic() - t0 < 3.0
    t0 = time.monotonic()
    assert h.job(job_id, WAIT="30", PHASE="EXECUTING").phase == "PENDING"
    assert h.job(job_id, WAIT="0").phase == "PENDING"
    assert time.monotonic() - t0 < 0.9  # other phase than PHASE, or WAIT=0: no blocking
    h.call("POST", f"{job_id}/phase", form={"PHASE": "RUN"})
    h.wait_final(job_id)
    t0 = time.monotonic()
    assert h.job(job_id, WAIT="30").phase == "COMPLETED"
    assert time.monotonic() - t0 < 0.9  # final phases never block
    assert h.call("GET", f"{job_id}/phase", {"WAIT": "1"}).body == b"COMPLETED"


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, params, status", [
    ("GET", "nosuchjob", {}, 404),
    ("GET", "{id}/nosuchchild", {}, 404),
    ("GET", "{id}/results/nosuchresult", {}, 404),
    ("GET", "{id}/phase/extra", {}, 404),
    ("POST", "{id}/phase", {"PHASE": "FLY"}, 400),
    ("POST", "{id}/phase", {}, 400),
    ("POST", "{id}", {"ACTION": "EXPLODE"}, 400),
    ("GET", "{id}", {"WAIT": "soon"}, 400),
    ("GET", "{id}", {"WAIT": "-5"}, 400),
    ("GET", "{id}", {"WAIT": "1", "PHASE": "RUNNING"}, 400),
    ("GET", "", {"PHASE": "FINISHED"}, 400),
    ("GET", "", {"AFTER": "yesterday"}, 400),
    ("GET", "", {"LAST": "-1"}, 400),
    ("POST", "{id}/executionduration", {"EXECUTIONDURATION": "long"}, 400),
    ("POST", "{id}/destruction", {"DESTRUCTION": "2024-13-45"}, 400),
    ("POST", "", {"PHASE": "ABORT"}, 400),
    ("PUT", "{id}", {}, 405),
    ("DELETE", "{id}/phase", {}, 405),
])
def test_bad_requests(harness: Callable[..., Harness], method: str, path: str,
                      params: dict[str, str], status: int) -> None:
    h = harness()
    job_id = h.create()
    form = params if method == "POST" else {}
    query = {} if method == "POST" else params
    response = h.call(method, path.format(id=job_id), query, form)
    assert response.status == status, response.body
    assert response.content_type.startswith("text/plain") and response.body.strip()


def test_validator_rejects_before_creation_and_on_update(
        harness: Callable[..., Harness]) -> None:
    seen: list[dict[str, list[str]]] = []

    def validate(params: dict[str, list[str]]) -> dict[str, list[str]]:
        seen.append(params)
        if "query" not in params:
            raise UWSUsageError("QUERY is required")
        return {**params, "lang": params.get("lang", ["ADQL"])}

    h = harness(params_validator=validate)
    response = h.call("POST", "", form={"LANG": "ADQL"})
    assert (response.status, response.body) == (400, b"UsageError: QUERY is required\n")
    assert h.store.list() == []
    job_id = h.create({"query": "SELECT 1"})
    assert h.store.get(job_id).parameters == {"query": ["SELECT 1"], "lang": ["ADQL"]}
    assert h.call("POST", f"{job_id}/parameters", form={"QUERY": "SELECT 3"}).status == 303
    assert h.store.get(job_id).param("query") == "SELECT 3"
    assert seen[-1]["query"] == ["SELECT 3"]
    h.call("POST", f"{job_id}/phase", form={"PHASE": "RUN"})
    h.wait_final(job_id)
    response = h.call("POST", f"{job_id}/parameters", form={"QUERY": "SELECT 4"})
    assert response.status == 400 and b"PENDING" in response.body


def test_other_owners_jobs_are_not_found_and_unlisted(harness: Callable[..., Harness]) -> None:
    h = harness()
    mine = h.create(owner="alice")
    assert h.call("GET", mine, owner="bob").status == 404
    assert h.call("GET", mine, owner="alice").status == 200
    assert parse_job(io.BytesIO(h.call("GET", mine, owner="alice").body)).ownerid == "alice"
    assert h.call("GET", "", owner="bob").body.count(b"<uws:jobref") == 0
    assert h.call("GET", "", owner="alice").body.count(b"<uws:jobref") == 1


# ---- deletion and destruction -----------------------------------------------------------------

@pytest.mark.parametrize("how", ["DELETE", "ACTION"])
def test_delete_redirects_to_the_list_and_then_404(harness: Callable[..., Harness],
                                                   how: str) -> None:
    deleted: list[str] = []
    h = harness(on_delete=lambda job: deleted.append(job.job_id))
    job_id = h.create()
    if how == "DELETE":
        response = h.call("DELETE", job_id)
    else:
        response = h.call("POST", job_id, form={"action": "DELETE"})
    assert response.status == 303 and response.headers["Location"] == BASE
    assert response.body == b""  # the list is not embedded
    assert h.call("GET", job_id).status == 404
    assert h.call("GET", f"{job_id}/phase").status == 404
    assert deleted == [job_id]


def test_destruction_in_the_past_removes_the_job(harness: Callable[..., Harness]) -> None:
    h = harness()
    job_id = h.create()
    past = format_time(utcnow() - timedelta(seconds=1))
    assert h.call("POST", f"{job_id}/destruction", form={"DESTRUCTION": past}).status == 303
    assert h.call("GET", job_id).status == 404
    assert h.store.list() == []


def test_store_semantics(store: Any) -> None:
    """Create/get/update_if/delete and expiry behave alike in SQLite and DynamoDB."""
    job = Job(job_id="j1", service="tap", parameters={"query": ["SELECT 1"]},
              job_info={"progress": 0.25}, destruction=utcnow() + timedelta(hours=1))
    store.create(job)
    assert store.get("j1") == job
    assert store.update_if("j1", "PENDING", phase="QUEUED", start_time=utcnow())
    assert not store.update_if("j1", "PENDING", phase="QUEUED")
    assert not store.update_if("j1", ["QUEUED"], expected_version=0, phase="EXECUTING")
    assert store.update_if("j1", ["QUEUED"], expected_version=1, phase="EXECUTING",
                           results=[{"id": "result", "href": "s3://b/k", "size": 3,
                                     "mime_type": "text/csv"}], error_summary=None)
    got = store.get("j1")
    assert (got.phase, got.version, got.results[0]["href"]) == ("EXECUTING", 2, "s3://b/k")
    assert got.job_info == {"progress": 0.25}
    assert store.update_if("j1", None, destruction=utcnow() - timedelta(seconds=1))
    assert store.get("j1") is None and store.list() == []
    assert not store.update_if("j1", None, phase="COMPLETED")
    store.create(Job(job_id="j2", service="tap"))
    assert store.delete("j2") and store.get("j2") is None and not store.delete("j2")


def test_the_base_url_is_stored_with_the_job(store: Any, tmp_path: Path) -> None:
    """Job.base_url is set at creation from the service's base and survives both stores;
    a record written before the field existed reads back with base_url None."""
    service = UWSService(store, LocalExecutor(store, {}, None), service_name="tap",
                         public_base="https://archive.example.org")
    job = service.create_job({"QUERY": ["SELECT 1"]})
    assert store.get(job.job_id).base_url == "https://archive.example.org"
    old = Job(job_id="old-1", service="tap")
    if isinstance(store, LocalJobStore):  # the JSON document of an old record
        doc = {k: v for k, v in old.to_dict().items() if k != "base_url"}
        with store._transaction() as con:
            con.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (old.job_id, old.service, None, old.phase, doc["creation_time"],
                         None, 0, json.dumps(doc)))
    else:  # an old DynamoDB item has no base_url attribute
        item = {k: v for k, v in dynamo.to_item(old).items() if k != "base_url"}
        store.client.put_item(TableName=store.table, Item=item)
    assert store.get("old-1").base_url is None and store.get("old-1").service == "tap"


def test_job_list_filters_match_brute_force(store: Any, harness: Callable[..., Harness]) -> None:
    h = harness(store=store)
    now = utcnow()
    phases = ["PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "ARCHIVED"]
    jobs = []
    for i in range(21):
        jobs.append(Job(job_id=f"job{i:02d}", service="tap", phase=phases[i % len(phases)],
                        creation_time=now - timedelta(minutes=60 - 3 * i),
                        destruction=now + timedelta(days=1)))
    jobs.append(Job(job_id="other-service", service="soda", creation_time=now))
    jobs.append(Job(job_id="other-owner", service="tap", owner_id="carol", creation_time=now))
    jobs.append(Job(job_id="expired", service="tap", creation_time=now,
                    destruction=now - timedelta(seconds=1)))
    for job in jobs:
        store.create(job)
    mine = [j for j in jobs[:21]]

    def expected(phase_set: set[str] | None = None, after: Any = None,
                 last: int | None = None) -> list[str]:
        chosen = [j for j in sorted(mine, key=lambda j: j.creation_time, reverse=True)
                  if (j.phase in phase_set if phase_set else j.phase != "ARCHIVED")
                  and (after is None or j.creation_time > after)]
        return [j.job_id for j in chosen][:last]

    def listed(**params: Any) -> list[str]:
        response = h.call("GET", "", params)
        assert response.status == 200
        return [j.jobid for j in parse_job_list(io.BytesIO(response.body))]

    after = now - timedelta(minutes=30)
    assert listed() == expected()
    assert listed(PHASE="ARCHIVED") == expected({"ARCHIVED"})
    assert listed(PHASE=["EXECUTING", "ERROR"]) == expected({"EXECUTING", "ERROR"})
    assert listed(AFTER=format_time(after)) == expected(after=after)
    assert listed(LAST="4") == expected(last=4)
    assert listed(LAST="0") == []
    assert listed(phase="COMPLETED", after=format_time(after), last="2") == \
        expected({"COMPLETED"}, after, 2)
    assert listed(AFTER=format_time(jobs[10].creation_time)) == \
        expected(after=jobs[10].creation_time)  # strictly after
    assert [j.job_id for j in store.list(owner=ANY)] == [
        j.job_id for j in sorted(jobs[:-1], key=lambda j: (j.creation_time, j.job_id),
                                 reverse=True)]


# ---- concurrency --------------------------------------------------------------------------

def concurrent_runs(store: Any, tmp_path: Path, threads: int = 8) -> tuple[int, int, str]:
    """PHASE=RUN from `threads` threads at once: (executions started, runner calls, phase)."""
    calls: list[str] = []
    h = Harness(store, tmp_path, lambda job, ctx: calls.append(job.job_id))
    starts: list[str] = []
    original = h.executor.start
    h.executor.start = lambda job: starts.append(job.job_id) or original(job)  # type: ignore
    job_id = h.create()
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait()
        assert h.call("POST", f"{job_id}/phase", form={"PHASE": "RUN"}).status == 303

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    phase = h.wait_final(job_id).phase
    h.executor.shutdown(wait=True)
    return len(starts), len(calls), phase


def test_concurrent_run_starts_one_execution(store: Any, tmp_path: Path) -> None:
    for _ in range(3):
        assert concurrent_runs(store, tmp_path) == (1, 1, "COMPLETED")


def test_a_reader_never_sees_error_without_its_summary(
        store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """fail_job makes phase ERROR and errorSummary visible together, however a reader
    interleaves. moto gets a wide window between the SET actions of one UpdateItem: without
    DynamoDB's atomicity (tests/support/moto_dynamodb.py) a poll read ERROR and no errorSummary,
    which is how test_infra's job machine test once failed."""
    set_one = SetExecutor.execute

    def slow_set(self: SetExecutor, item: Any) -> None:
        set_one(self, item)
        time.sleep(0.005)

    monkeypatch.setattr(SetExecutor, "execute", slow_set)
    created: list[str] = []
    done = threading.Event()
    torn: list[Job] = []
    errors_seen = 0

    def poll() -> None:
        nonlocal errors_seen
        while True:
            finished = done.is_set()
            for job_id in list(created):
                job = store.get(job_id)
                if job is not None and job.phase == "ERROR":
                    errors_seen += 1
                    if not job.error_summary:
                        torn.append(job)
            if finished:
                return

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(8):
            store.create(Job(job_id=f"f{i}", service="tap", phase="EXECUTING",
                             start_time=utcnow()))
            created.append(f"f{i}")
            assert fail_job(store, f"f{i}", f"failure {i}")
    finally:
        done.set()
        reader.join()
    assert not torn, f"phase ERROR without errorSummary: {torn[0]}"
    assert errors_seen >= 8


class InvariantStore:
    """A store that, after every write, checks what any reader would now see: a job
    in ERROR has its errorSummary (a two-step write would show ERROR alone)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update_if(self, job_id: str, *args: Any, **kwargs: Any) -> bool:
        changed = self.inner.update_if(job_id, *args, **kwargs)
        job = self.inner.get(job_id)
        self.writes += 1
        assert job is None or job.phase != "ERROR" or job.error_summary, job
        return changed


def test_every_failure_path_writes_phase_and_summary_together(
        local_store: LocalJobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = InvariantStore(local_store)
    monkeypatch.setattr(handlers, "job_store", lambda: store)

    def executing(job_id: str, **fields: Any) -> Job:
        job = Job(job_id=job_id, service="tap", phase="EXECUTING", start_time=utcnow(),
                  **fields)
        local_store.create(job)
        return job

    def boom(job: Job, ctx: RunContext) -> None:
        raise ValueError("no such column: foo")

    run_job(RunContext(store, executing("runner")), boom)
    handlers.fail_job({"job_id": executing("catch").job_id,
                       "error": {"Error": "States.Timeout", "Cause": ""}})
    cancel = threading.Event()
    deadline = type("Context", (), {"get_remaining_time_in_millis":
                                    lambda self: handlers.DEADLINE_MARGIN_S * 1000})()
    handlers._watchdog(executing("watchdog"), deadline, cancel)
    assert cancel.wait(5)
    long_ago = utcnow() - timedelta(seconds=5)
    local_store.create(Job(job_id="overran", service="tap", phase="EXECUTING",
                           start_time=long_ago, execution_duration=1,
                           destruction=utcnow() + timedelta(hours=1)))
    executor = LocalExecutor(store)
    UWSService(store, executor, service_name="tap")._enforce(local_store.get("overran"))
    executor.shutdown()
    jobs = {job.job_id: job for job in local_store.list()}
    assert {job.phase for job in jobs.values()} == {"ERROR"}, jobs
    assert all(job.error_summary["message"] for job in jobs.values())
    assert store.writes >= 4


def test_local_store_is_shared_across_processes(local_store: LocalJobStore) -> None:
    """Two processes race to claim the same jobs: each job is claimed exactly once."""
    for i in range(20):
        local_store.create(Job(job_id=f"p{i}", service="tap"))
    script = (
        "import sys\nfrom chalicelib.jobs.uws import LocalJobStore\n"
        "s = LocalJobStore(sys.argv[1])\n"
        "print(sum(s.update_if(f'p{i}', 'PENDING', phase='QUEUED') for i in range(20)))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script,
                               str(local_store.path)], stdout=subprocess.PIPE,
                              cwd=REPO_ROOT) for _ in range(2)]
    claimed = sum(int(p.communicate(timeout=30)[0]) for p in procs)
    assert claimed == 20
    assert {j.phase for j in local_store.list()} == {"QUEUED"}


def test_shutdown_leaves_no_job_active(local_store: LocalJobStore) -> None:
    def cooperative(job: Job, ctx: RunContext) -> None:
        while not ctx.is_aborted():
            time.sleep(0.01)

    executor = LocalExecutor(local_store, {"tap": cooperative}, max_workers=1,
                             recheck_seconds=0.05)
    service = UWSService(local_store, executor, service_name="tap")
    running = service.create_job({"PHASE": "RUN"})
    queued = service.create_job({"PHASE": "RUN"})
    while local_store.get(running.job_id).phase != "EXECUTING":
        time.sleep(0.01)
    executor.shutdown(wait=True)
    for job_id in (running.job_id, queued.job_id):
        job = local_store.get(job_id)
        assert job.phase == "ERROR" and job.error_summary["type"] == "transient"
        assert "interrupted" in job.error_summary["message"]


# ---- Step Functions ----------------------------------------------------------------------------

def test_step_functions_executor_start_and_stop(moto: str, tmp_path: Path) -> None:
    sfn = aws_client("stepfunctions", moto)
    machine = sfn.create_state_machine(
        name=f"uws-{time.monotonic_ns()}", roleArn="arn:aws:iam::123456789012:role/uws",
        definition=json.dumps({"StartAt": "Plan", "States": {"Plan": {"Type": "Pass",
                                                                      "End": True}}}))
    store = LocalJobStore(tmp_path / "sfn")
    executor = StepFunctionsExecutor(machine["stateMachineArn"], sfn)
    service = UWSService(store, executor, service_name="spectrophotometry")
    response = service.handle("POST", "", {}, {"ID": ["a", "b"], "PHASE": "RUN"}, None, BASE)
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    job = store.get(job_id)
    assert job.phase == "EXECUTING" and job.start_time is not None
    assert job.execution_arn == executor.execution_arn(job)
    execution = sfn.describe_execution(executionArn=job.execution_arn)
    assert execution["name"] == job_id and execution["status"] == "RUNNING"
    assert json.loads(execution["input"])["parameters"] == {"id": ["a", "b"]}
    service.handle("POST", f"{job_id}/phase", {}, {"PHASE": "ABORT"}, None, BASE)
    assert store.get(job_id).phase == "ABORTED"
    assert sfn.describe_execution(executionArn=job.execution_arn)["status"] == "ABORTED"
    executor.abort(store.get(job_id))  # stopping twice is harmless


def test_abort_stops_the_execution_a_job_was_handed_on_to(moto: str, tmp_path: Path) -> None:
    """A TAP job handed to Spark runs on as an execution of the spark machine named by
    the job id (services/tap/engines.hand_to_emr): ABORT stops that one too."""
    sfn = aws_client("stepfunctions", moto)
    wait = json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600,
                                                          "End": True}}})
    own, spark = (sfn.create_state_machine(
        name=f"{n}-{time.monotonic_ns()}", roleArn="arn:aws:iam::123456789012:role/uws",
        definition=wait)["stateMachineArn"] for n in ("uws", "spark"))
    store = LocalJobStore(tmp_path / "sfn")
    executor = StepFunctionsExecutor(own, sfn, handoffs=(spark,))
    service = UWSService(store, executor, service_name="tap")
    response = service.handle("POST", "", {}, {"QUERY": ["SELECT 1"], "PHASE": "RUN"}, None,
                              BASE)
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    handed = sfn.start_execution(stateMachineArn=spark, name=job_id)["executionArn"]
    assert handed == executor.execution_arn(store.get(job_id), spark)
    service.handle("POST", f"{job_id}/phase", {}, {"PHASE": "ABORT"}, None, BASE)
    assert store.get(job_id).phase == "ABORTED"
    assert sfn.describe_execution(executionArn=handed)["status"] == "ABORTED"
    assert sfn.describe_execution(executionArn=store.get(job_id).execution_arn)[
        "status"] == "ABORTED"
    # a job that was never handed on: its missing spark execution is no error
    other = service.handle("POST", "", {}, {"QUERY": ["SELECT 2"], "PHASE": "RUN"}, None, BASE)
    other_id = other.headers["Location"].rsplit("/", 1)[1]
    service.handle("POST", f"{other_id}/phase", {}, {"PHASE": "ABORT"}, None, BASE)
    assert store.get(other_id).phase == "ABORTED"


def test_tap_jobs_name_spark_as_their_hand_off_machine(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    from chalicelib import config
    from chalicelib.jobs import runtime
    from chalicelib.services.tap.asyncjobs import JOB

    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:"
    monkeypatch.setenv("TAP_STATE_MACHINE_ARN", arn + "uws")
    monkeypatch.setenv("SPARK_STATE_MACHINE_ARN", arn + "spark")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config.reset()
    executor = runtime._executor(JOB)
    assert isinstance(executor, StepFunctionsExecutor)
    assert executor.handoffs == (arn + "spark",)


# ---- documents: pyvo and the UWS 1.1 schema ---------------------------------------------------

def test_documents_validate_against_uws_schema(harness: Callable[..., Harness],
                                               tmp_path: Path) -> None:
    def failing(job: Job, ctx: RunContext) -> None:
        ctx.set_progress(0.1, "started <&> \x01", stage={"n": 1})
        ctx.add_result("result", b"partial", "text/csv")
        raise RuntimeError("disk full")

    h = harness(failing)
    job_id = h.create({"QUERY": "SELECT * FROM t WHERE a < 'x&y'", "PHASE": "RUN",
                       "RUNID": "r"}, owner="dave")
    while h.store.get(job_id).phase in ACTIVE:
        time.sleep(0.02)
    h.create(owner="dave")
    docs = {
        "job": h.call("GET", job_id, owner="dave").body,
        "jobs": h.call("GET", "", owner="dave").body,
        "results": h.call("GET", f"{job_id}/results", owner="dave").body,
        "parameters": h.call("GET", f"{job_id}/parameters", owner="dave").body,
    }
    job = parse_job(io.BytesIO(docs["job"]))
    assert job.phase == "ERROR" and job.ownerid == "dave" and job.version == "1.1"
    assert job.errorsummary.message.content == INTERNAL
    check_structure(docs)
    stilts_validate(tmp_path, docs)


UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
JOB_ORDER = ["jobId", "runId", "ownerId", "phase", "quote", "creationTime", "startTime",
             "endTime", "executionDuration", "destruction", "parameters", "results",
             "errorSummary", "jobInfo"]


def check_structure(docs: dict[str, bytes]) -> None:
    """Schema order and nils checked directly, so CI without STILTS still covers them."""
    job = ElementTree.fromstring(docs["job"])
    assert job.tag == f"{UWS}job" and job.get("version") == "1.1"
    assert [child.tag.removeprefix(UWS) for child in job] == JOB_ORDER
    assert job.find(f"{UWS}quote").get(XSI_NIL) == "true"
    error = job.find(f"{UWS}errorSummary")
    assert (error.get("type"), error.get("hasDetail")) == ("fatal", "false")
    result = job.find(f"{UWS}results/{UWS}result")
    assert result.get("{http://www.w3.org/1999/xlink}href").endswith("/results/result")
    assert ElementTree.fromstring(docs["results"]).tag == f"{UWS}results"
    assert ElementTree.fromstring(docs["parameters"]).tag == f"{UWS}parameters"
    jobs = ElementTree.fromstring(docs["jobs"])
    assert jobs.tag == f"{UWS}jobs" and jobs.get("version") == "1.1"
    for ref in jobs:
        assert ref.tag == f"{UWS}jobref" and ref.get("id")
        names = [c.tag.removeprefix(UWS) for c in ref]
        assert names in (["phase", "runId", "ownerId", "creationTime"],
                         ["phase", "ownerId", "creationTime"])
    assert len(jobs) == 2


class ServiceAdapter(requests.adapters.BaseAdapter):
    """Routes requests for http://uws.test/ to the UWSService (and the result files)."""

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.h = harness
        self.builder = requests.adapters.HTTPAdapter()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url)
        body = request.body.decode() if isinstance(request.body, bytes) else request.body or ""
        if url.path.startswith("/store/"):
            _, _, job_id, name = url.path.split("/")
            status, headers, data = 200, {}, (self.h.sink.root / job_id / name).read_bytes()
        else:
            sub = url.path[len("/tap/async"):]
            r = self.h.service.handle(request.method, sub, parse_qs(url.query),
                                      parse_qs(body), None, BASE)
            status, headers, data = r.status, r.headers, r.body
        raw = urllib3.HTTPResponse(body=io.BytesIO(data), headers=headers, status=status,
                                   preload_content=False)
        return self.builder.build_response(request, raw)

    def close(self) -> None:
        pass


VOTABLE = b"""<?xml version="1.0"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">
<RESOURCE type="results"><INFO name="QUERY_STATUS" value="OK"/>
<TABLE><FIELD name="x" datatype="int"/><DATA><TABLEDATA><TR><TD>42</TD></TR></TABLEDATA></DATA>
</TABLE></RESOURCE></VOTABLE>"""


def test_pyvo_async_tap_job_round_trip(harness: Callable[..., Harness]) -> None:
    def tap(job: Job, ctx: RunContext) -> None:
        assert ctx.param("query") == "SELECT 42 AS x" and ctx.param("lang") == "ADQL"
        ctx.add_result("result", VOTABLE, "application/x-votable+xml")

    h = harness(tap)
    session = requests.Session()
    session.mount("http://uws.test/", ServiceAdapter(h))
    job = AsyncTAPJob.create("http://uws.test/tap", "SELECT 42 AS x", session=session)
    assert job.phase == "PENDING" and job.url.startswith(BASE + "/")
    job.run().wait(timeout=10)
    assert job.phase == "COMPLETED"
    assert job.result_uri == f"{job.url}/results/result"
    assert list(job.fetch_result().to_table()["x"]) == [42]
    url = job.url
    job.delete()
    assert session.get(url).status_code == 404


def test_time_parsing() -> None:
    assert format_time(parse_time("2025-09-01")) == "2025-09-01T00:00:00.000Z"
    assert format_time(parse_time("2025-09-01T12:00:00+02:00")) == "2025-09-01T10:00:00.000Z"
    assert format_time(parse_time("2025-09-01T10:00:00.5Z")) == "2025-09-01T10:00:00.500Z"
    with pytest.raises(UWSUsageError):
        parse_time("next week")
