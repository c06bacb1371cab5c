"""UWS 1.1 protocol logic, framework-free: UWSService.handle(...) -> Response.

The web layer passes the HTTP method, the path below the job list, the query and form
parameters, the caller's identity and the job list's absolute URL; it copies the
Response (status, headers, body, content type) back out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from . import render
from .executor import Executor, fail_job, overran_message
from .model import (
    ABORTABLE_PHASES,
    ABORTED,
    ACTIVE_PHASES,
    ARCHIVED,
    ERROR,
    EXECUTING,
    PENDING,
    PHASES,
    QUEUED,
    RUNNING_PHASES,
    STARTABLE_PHASES,
    Job,
    UWSUsageError,
    error_summary,
    format_time,
    new_job_id,
    parse_time,
    utcnow,
)
from .store import JobStore

log = logging.getLogger(__name__)

Params = dict[str, list[str]]
# Checks (and may normalise) a job's parameters; raises UWSUsageError for bad input.
ParamsValidator = Callable[[Params], Params | None]
XML = "application/xml"
TEXT = "text/plain; charset=utf-8"
# UWS control parameters of the creation POST: not stored as job parameters.
CONTROL = ("phase", "runid", "executionduration", "destruction")


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_type: str = TEXT

    def __post_init__(self) -> None:
        self.headers.setdefault("Content-Type", self.content_type)


class NotFound(LookupError):
    pass


# Owners minted for callers without an identity start with this. A caller that keeps no
# cookie (TOPCAT, taplint) reaches such a job by its unguessable URL alone, like a
# capability; any caller with an identity sees its own jobs only.
ANONYMOUS = "anon:"


def may_see(job: Job, owner: str | None) -> bool:
    if job.owner_id is None or job.owner_id == owner:
        return True
    return owner is None and job.owner_id.startswith(ANONYMOUS)


class Forbidden(PermissionError):
    pass


class MethodNotAllowed(Exception):
    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


def _pairs(source: Any) -> Iterable[tuple[str, list[str]]]:
    """(name, values) from a dict of str/list values or a MultiDict (getlist)."""
    if not source:
        return
    for name in list(source.keys()):
        raw = source.getlist(name) if hasattr(source, "getlist") else source[name]
        if raw is None:
            continue
        values = [raw] if isinstance(raw, (str, bytes)) else list(raw)
        yield str(name), [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def normalize(*sources: Any) -> tuple[Params, dict[str, str]]:
    """Merge parameter sources: names lower-cased; the first spelling seen is kept."""
    values: Params = {}
    names: dict[str, str] = {}
    for source in sources:
        for name, vals in _pairs(source):
            values.setdefault(name.lower(), []).extend(vals)
            names.setdefault(name.lower(), name)
    return values, names


def _one(args: Params, name: str) -> str | None:
    values = args.get(name)
    return values[-1] if values else None


def _text(body: str, status: int = 200) -> Response:
    return Response(status, {}, body.encode(), TEXT)


def _xml(body: bytes) -> Response:
    return Response(200, {"Cache-Control": "no-cache"}, body, XML)


def _redirect(url: str) -> Response:
    return Response(303, {"Location": url}, b"", TEXT)


def _phase_value(value: str) -> str:
    if value not in PHASES:
        raise UWSUsageError(f"unknown PHASE {value!r}; expected one of {', '.join(PHASES)}")
    return value


class UWSService:
    """One UWS job list (e.g. /tap/async) backed by a JobStore and an Executor.

    base_url_fn gives the job list URL when handle() gets none; max_duration caps
    executionDuration (s; 0 = no cap); default_destruction is the job lifetime;
    max_wait caps a blocking GET (WAIT=-1) below API Gateway's 29 s; result_url_fn
    turns a stored result href into the URL /results/<id> redirects to (e.g. presign);
    public_base is stored in each job created (Job.base_url) for its runner.
    """

    def __init__(self, store: JobStore, executor: Executor,
                 base_url_fn: Callable[[], str] | None = None, service_name: str = "uws",
                 params_validator: ParamsValidator | None = None, max_duration: int = 3600,
                 default_destruction: timedelta = timedelta(days=7), *,
                 default_duration: int | None = None,
                 max_destruction: timedelta = timedelta(days=30), max_wait: float = 25.0,
                 result_url_fn: Callable[[Job, dict[str, Any]], str] | None = None,
                 on_delete: Callable[[Job], None] | None = None,
                 public_base: str | None = None) -> None:
        self.store = store
        self.executor = executor
        self.base_url_fn = base_url_fn
        self.service_name = service_name
        self.params_validator = params_validator
        self.max_duration = max_duration
        self.default_duration = max_duration if default_duration is None else default_duration
        self.default_destruction = default_destruction
        self.max_destruction = max_destruction
        self.max_wait = max_wait
        self.result_url_fn = result_url_fn or (lambda job, result: result["href"])
        self.on_delete = on_delete
        self.public_base = public_base

    # ---- programmatic API (also used by handle) -------------------------------------

    def create_job(self, params: Any = None, owner: str | None = None,
                   names: dict[str, str] | None = None) -> Job:
        """Validate and store a PENDING job; PHASE=RUN among params starts it."""
        args, seen = normalize(params)
        names = {**seen, **(names or {})}
        control = {name: _one(args, name) for name in CONTROL}
        for name in CONTROL:
            args.pop(name, None)
        run = control["phase"] is not None
        if run and control["phase"].upper() != "RUN":
            raise UWSUsageError("only PHASE=RUN is allowed when creating a job")
        args = self._validate(args)
        job = Job(
            job_id=new_job_id(), service=self.service_name, owner_id=owner,
            run_id=control["runid"],
            execution_duration=self._duration(control["executionduration"]),
            destruction=self._destruction(control["destruction"]), parameters=args,
            param_names={k: names.get(k, k) for k in args}, base_url=self.public_base)
        self.store.create(job)
        if run:
            self.run(job.job_id)
        return self.store.get(job.job_id) or job

    def get_job(self, job_id: str, owner: str | None = None) -> Job:
        """The job, with executionDuration enforced; NotFound unless the caller may see it
        (another caller's job is not found either: its existence is not disclosed)."""
        job = self.store.get(job_id)
        if job is None or job.service != self.service_name or not may_see(job, owner):
            raise NotFound(f"no job {job_id!r}")
        return self._enforce(job)

    def run(self, job_id: str) -> bool:
        """PHASE=RUN: only the caller whose conditional write wins starts an execution."""
        if not self.store.update_if(job_id, STARTABLE_PHASES, phase=QUEUED):
            return False
        job = self.store.get(job_id)
        if job is None:
            return False
        try:
            handle = self.executor.start(job)
        except Exception as exc:  # the executor is unavailable: tell the user, keep serving
            log.exception("could not start UWS job %s", job_id)
            fail_job(self.store, job_id, f"could not start the job: {exc}", "transient")
            return True
        self._record_start(job_id, handle)
        return True

    def _record_start(self, job_id: str, handle: str | None) -> None:
        if getattr(self.executor, "starts_immediately", False) and self.store.update_if(
                job_id, QUEUED, phase=EXECUTING, start_time=utcnow(), execution_arn=handle):
            return
        self.store.update_if(job_id, None, execution_arn=handle)
        job = self.store.get(job_id)
        if job is not None and job.phase == ABORTED:  # ABORT raced with the start
            self.executor.abort(job)

    def abort(self, job_id: str) -> bool:
        """PHASE=ABORT: ABORTED first (so the runner cannot complete), then stop the work."""
        before = self.store.get(job_id)
        if before is None or not self.store.update_if(job_id, ABORTABLE_PHASES, phase=ABORTED,
                                                      end_time=utcnow()):
            return False
        if before.phase in RUNNING_PHASES:
            self.executor.abort(self.store.get(job_id) or before)
        return True

    def delete_job(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            return
        if job.phase in RUNNING_PHASES:
            self.abort(job_id)
        self.store.delete(job_id)
        if self.on_delete is not None:
            try:
                self.on_delete(job)
            except Exception:  # clean-up is best effort; the job is gone either way
                log.exception("on_delete failed for UWS job %s", job_id)

    def wait(self, job: Job, seconds: float, phase: str | None = None) -> Job:
        """Block while the job is active (and in `phase`, if given) until its phase
        changes or `seconds` pass; polls the store with a growing interval."""
        start_phase = job.phase
        deadline = time.monotonic() + max(0.0, min(seconds, self.max_wait))
        interval = 0.05
        while job.phase in ACTIVE_PHASES and (phase is None or job.phase == phase):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, 0.5)
            fresh = self.store.get(job.job_id)
            if fresh is None:
                raise NotFound(f"job {job.job_id!r} was deleted")
            job = self._enforce(fresh)
            if job.phase != start_phase:
                break
        return job

    def _enforce(self, job: Job) -> Job:
        """executionDuration also holds where no local timer runs (Step Functions)."""
        if not job.overran():
            return job
        if self.store.update_if(job.job_id, EXECUTING, phase=ERROR, end_time=utcnow(),
                                error_summary=error_summary(
                                    overran_message(job.execution_duration))):
            self.executor.abort(job)
        return self.store.get(job.job_id) or job

    def _validate(self, args: Params) -> Params:
        if self.params_validator is None:
            return args
        checked = self.params_validator(args)
        return args if checked is None else {k.lower(): list(v) for k, v in checked.items()}

    def _duration(self, raw: str | None) -> int:
        if raw is None:
            return self.default_duration
        try:
            seconds = int(raw.strip())
        except ValueError:
            raise UWSUsageError(f"EXECUTIONDURATION must be an integer (s), not {raw!r}") from None
        if seconds < 0:
            raise UWSUsageError("EXECUTIONDURATION must not be negative")
        if self.max_duration and (seconds == 0 or seconds > self.max_duration):
            return self.max_duration  # UWS lets the server clamp; 0 would mean unlimited
        return seconds

    def _destruction(self, raw: str | None) -> datetime:
        latest = utcnow() + self.max_destruction
        when = parse_time(raw)
        return min(when or utcnow() + self.default_destruction, latest)

    # ---- HTTP binding -----------------------------------------------------------------

    def handle(self, method: str, subpath: str, params: Any = None, body_form: Any = None,
               owner: str | None = None, base_url: str | None = None) -> Response:
        method = method.upper()
        list_url = (base_url or (self.base_url_fn() if self.base_url_fn else "")).rstrip("/")
        sources = (params,) if method in ("GET", "HEAD") else (params, body_form)
        args, names = normalize(*sources)
        parts = [p for p in subpath.strip("/").split("/") if p]
        try:
            return self._route(method, parts, args, names, owner, list_url)
        except UWSUsageError as exc:
            return _text(f"UsageError: {exc}\n", 400)
        except NotFound as exc:
            return _text(f"NotFound: {exc.args[0] if exc.args else 'no such resource'}\n", 404)
        except Forbidden as exc:
            return _text(f"Forbidden: {exc}\n", 403)
        except MethodNotAllowed as exc:
            response = _text(f"method {method} not allowed here; use {exc.allowed}\n", 405)
            response.headers["Allow"] = exc.allowed
            return response

    def _route(self, method: str, parts: list[str], args: Params, names: dict[str, str],
               owner: str | None, list_url: str) -> Response:
        if not parts:
            return self._job_list(method, args, names, owner, list_url)
        job = self.get_job(parts[0], owner)
        job_url = f"{list_url}/{quote(job.job_id, safe='')}"
        if len(parts) == 1:
            return self._job_resource(method, job, args, names, list_url, job_url)
        if parts[1] == "results" and len(parts) == 3:
            return self._one_result(method, job, parts[2])
        if len(parts) > 2 or parts[1] not in CHILDREN:
            raise NotFound(f"job {job.job_id} has no resource {'/'.join(parts[1:])!r}")
        return CHILDREN[parts[1]](self, method, job, args, names, job_url)

    def _job_list(self, method: str, args: Params, names: dict[str, str],
                  owner: str | None, list_url: str) -> Response:
        if method == "POST":
            job = self.create_job(args, owner, names)
            return _redirect(f"{list_url}/{quote(job.job_id, safe='')}")
        _allow(method, "GET, POST")
        phases = [_phase_value(p) for p in args.get("phase", [])] or [
            p for p in PHASES if p != ARCHIVED]
        last = _one(args, "last")
        # isdigit() alone admits '²' and '١', which int() refuses or reads as digits
        if last is not None and not (last.strip().isascii() and last.strip().isdigit()):
            raise UWSUsageError(f"LAST must be a non-negative integer, not {last!r}")
        after = parse_time(_one(args, "after"))
        jobs = self.store.list(self.service_name, owner, phases, after,
                               int(last) if last is not None else None)
        return _xml(render.jobs_xml(jobs, list_url))

    def _job_resource(self, method: str, job: Job, args: Params, names: dict[str, str],
                      list_url: str, job_url: str) -> Response:
        if method == "DELETE":
            self.delete_job(job.job_id)
            return _redirect(list_url)
        if method == "POST":
            return self._post_to_job(job, args, names, list_url, job_url)
        _allow(method, "GET, POST, DELETE")
        job = self._maybe_wait(job, args)
        return _xml(render.job_xml(job, self._result_href(job_url)))

    def _post_to_job(self, job: Job, args: Params, names: dict[str, str],
                     list_url: str, job_url: str) -> Response:
        action = _one(args, "action")
        if action is not None:
            if action.upper() != "DELETE":
                raise UWSUsageError(f"ACTION must be DELETE, not {action!r}")
            self.delete_job(job.job_id)
            return _redirect(list_url)
        phase = _one(args, "phase")
        if phase is not None:
            self._change_phase(job, phase)
        elif args:
            self._update_parameters(job, args, names)
        return _redirect(job_url)

    def _change_phase(self, job: Job, value: str) -> None:
        wanted = value.strip().upper()
        if wanted == "RUN":
            self.run(job.job_id)
        elif wanted == "ABORT":
            self.abort(job.job_id)
        else:
            raise UWSUsageError(f"PHASE must be RUN or ABORT, not {value!r}")

    def _update_parameters(self, job: Job, args: Params, names: dict[str, str]) -> None:
        """Replace the posted parameters (PENDING jobs only), re-validating the whole set."""
        for _ in range(5):  # retried only on version conflicts with concurrent writers
            if job.phase != PENDING:
                raise UWSUsageError(f"parameters can only change while PENDING, not {job.phase}")
            merged = self._validate({**job.parameters, **args})
            shown = {**job.param_names, **{k: names.get(k, k) for k in args}}
            if self.store.update_if(job.job_id, PENDING, expected_version=job.version,
                                    parameters=merged,
                                    param_names={k: shown.get(k, k) for k in merged}):
                return
            job = self.get_job(job.job_id, job.owner_id)
        raise UWSUsageError("the job changed while its parameters were updated; try again")

    def _maybe_wait(self, job: Job, args: Params) -> Job:
        raw = _one(args, "wait")
        if raw is None:
            return job
        try:
            seconds = int(raw.strip())
        except ValueError:
            raise UWSUsageError(f"WAIT must be an integer number of seconds, not {raw!r}") from None
        if seconds < -1:
            raise UWSUsageError("WAIT must be -1 (server maximum) or >= 0")
        phase = _one(args, "phase")
        if phase is not None:
            phase = _phase_value(phase)
        return self.wait(job, self.max_wait if seconds == -1 else seconds, phase)

    def _result_href(self, job_url: str) -> render.ResultHref:
        return lambda job, result: f"{job_url}/results/{quote(result['id'], safe='')}"

    def _one_result(self, method: str, job: Job, result_id: str) -> Response:
        _allow(method, "GET")
        for result in job.results:
            if result["id"] == result_id:
                return _redirect(self.result_url_fn(job, result))
        raise NotFound(f"job {job.job_id} has no result {result_id!r}")

    # ---- job children -------------------------------------------------------------------

    def _phase(self, method: str, job: Job, args: Params, names: dict[str, str],
               job_url: str) -> Response:
        if method == "POST":
            phase = _one(args, "phase")
            if phase is None:
                raise UWSUsageError("POST to /phase needs PHASE=RUN or PHASE=ABORT")
            self._change_phase(job, phase)
            return _redirect(job_url)
        _allow(method, "GET, POST")
        return _text(self._maybe_wait(job, args).phase)

    def _execution_duration(self, method: str, job: Job, args: Params,
                            names: dict[str, str], job_url: str) -> Response:
        if method == "POST":
            seconds = self._duration(self._required(args, "executionduration"))
            if not self.store.update_if(job.job_id, PENDING, execution_duration=seconds):
                raise UWSUsageError("executionDuration can only change while PENDING")
            return _redirect(job_url)
        _allow(method, "GET, POST")
        return _text(str(job.execution_duration))

    def _destruction_child(self, method: str, job: Job, args: Params,
                           names: dict[str, str], job_url: str) -> Response:
        if method == "POST":
            when = self._destruction(self._required(args, "destruction"))
            if not self.store.update_if(job.job_id, None, destruction=when):
                raise NotFound(f"no job {job.job_id!r}")
            return _redirect(job_url)
        _allow(method, "GET, POST")
        return _text(format_time(job.destruction) or "")

    def _error(self, method: str, job: Job, args: Params, names: dict[str, str],
               job_url: str) -> Response:
        _allow(method, "GET")
        err = job.error_summary or {}
        return _text("\n".join(t for t in (err.get("message"), err.get("detail")) if t))

    def _quote(self, method: str, job: Job, args: Params, names: dict[str, str],
               job_url: str) -> Response:
        _allow(method, "GET")
        return _text(format_time(job.quote) or "")

    def _results(self, method: str, job: Job, args: Params, names: dict[str, str],
                 job_url: str) -> Response:
        _allow(method, "GET")
        return _xml(render.results_document(job, self._result_href(job_url)))

    def _parameters(self, method: str, job: Job, args: Params, names: dict[str, str],
                    job_url: str) -> Response:
        if method == "POST":
            if args:
                self._update_parameters(job, args, names)
            return _redirect(job_url)
        _allow(method, "GET, POST")
        return _xml(render.parameters_document(job))

    def _owner(self, method: str, job: Job, args: Params, names: dict[str, str],
               job_url: str) -> Response:
        _allow(method, "GET")
        return _text(job.owner_id or "")

    @staticmethod
    def _required(args: Params, name: str) -> str:
        value = _one(args, name)
        if value is None or not value.strip():
            raise UWSUsageError(f"missing parameter {name.upper()}")
        return value


def _allow(method: str, allowed: str) -> None:
    if method == "HEAD" and "GET" in allowed:
        return
    if method not in allowed.replace(" ", "").split(","):
        raise MethodNotAllowed(allowed)


Child = Callable[[UWSService, str, Job, Params, dict[str, str], str], Response]
CHILDREN: Mapping[str, Child] = {
    "phase": UWSService._phase,
    "executionduration": UWSService._execution_duration,
    "destruction": UWSService._destruction_child,
    "error": UWSService._error,
    "quote": UWSService._quote,
    "results": UWSService._results,
    "parameters": UWSService._parameters,
    "owner": UWSService._owner,
}
