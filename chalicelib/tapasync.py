"""TAP /async: the shared UWS service running the same query path as /sync."""

from __future__ import annotations

from . import jobs, runtime
from .uws import UWSUsageError
from .web import Params, Reply

SERVICE = "tap"


def _validate(params: dict[str, list[str]]) -> None:
    from .tap import LANGS

    lang = (params.get("lang") or [None])[-1]
    if lang is not None and lang.upper() not in LANGS:
        raise UWSUsageError(f"LANG={lang} is not supported; use ADQL")
    maxrec = (params.get("maxrec") or [None])[-1]
    if maxrec not in (None, "") and not maxrec.isdigit():
        raise UWSUsageError(f"MAXREC must be a non-negative integer, not {maxrec!r}")


def run(job, ctx) -> None:
    """Run the query of a job and store the result named `result` (what pyvo fetches)."""
    from .tap import ASYNC_TIMEOUT, TapUsageError, run_query

    params = Params([(k, v) for k, vs in job.parameters.items() for v in vs])
    cat = runtime.catalogue(runtime.public_base())
    try:
        res = run_query(params, cat, min(ASYNC_TIMEOUT, job.execution_duration or ASYNC_TIMEOUT))
    except TapUsageError as e:
        raise ValueError(str(e)) from None
    ctx.set_progress(1.0, f"{res.rows} rows{' (truncated at MAXREC)' if res.overflow else ''}")
    ctx.add_result("result", res.body, res.content_type)


jobs.register(SERVICE, run, _validate, max_duration=3600)


def handle_async(sub: str, method: str, params: Params, base: str) -> Reply:
    svc = jobs.service(SERVICE, base)
    resp = svc.handle(method, sub, params.to_dict(), None, None, f"{base}/tap/async")
    return Reply(resp.status, resp.body, resp.content_type,
                 {k: v for k, v in resp.headers.items() if k != "Content-Type"})
