"""SODA 1.0 {sync} and {async}: cutouts of datasets named by ID.

Sync answers one ID and one region (200 with the FITS, 204 when they do not overlap);
async takes several IDs and several shapes and yields one result per combination, made
concurrently by the range-reading cutout engine.
"""

from __future__ import annotations

from ..cutout import CutoutError, MultiValued, NoOverlap, cutout, cutout_many, parse_soda_params
from ..jobs import runtime as jobs
from ..jobs.runtime import JobKind
from ..jobs.uws import UWSUsageError
from ..query import products, runtime
from ..web.params import Params
from ..web.replies import Reply
from ..web.request import Request
from ..web.routes import Handler, dispatch
from . import uws

SERVICE = "soda"
MAX_ASYNC_CUTOUTS = 2000


def _usage(message: str) -> Reply:
    return Reply.text(f"UsageError: {message}", 400)


def sync(params: Params, base: str) -> Reply:
    ids = [v for v in params.getall("ID") if v.strip()]
    if not ids:
        return _usage("ID is required")
    if len(ids) > 1:
        return Reply.text("MultiValuedParamNotSupported: ID may be given once in sync; use "
                          f"{base}/soda/async for several", 400)
    try:
        regions = parse_soda_params(params, sync=True)
    except MultiValued as e:
        return Reply.text(f"MultiValuedParamNotSupported: {e}", 400)
    except CutoutError as e:
        return _usage(str(e))
    found = products.by_ids(runtime.catalogue(base), ids).get(ids[0])
    if found is None:
        return Reply.text(f"NotFoundFault: {ids[0]}", 404)
    r = regions[0]
    if r.shape is None and r.band is None and r.time is None and r.pol is None:
        # no filter at all: the dataset itself
        return Reply.redirect(f"{base}/data/{found['uri']}", 303)
    try:
        res = cutout(runtime.archive(), "data/" + found["uri"], regions[0],
                     psf=params.get("PSF") or "all")
    except NoOverlap:
        return Reply(204, b"", "text/plain")
    except CutoutError as e:
        return _usage(str(e))
    headers = res.http_headers()
    return Reply(200, res.data, headers.pop("Content-Type"), headers)


def _validate(params: dict[str, list[str]]) -> None:
    p = Params.from_dict(params)
    if not p.getall("ID"):
        raise UWSUsageError("ID is required")
    try:
        regions = parse_soda_params(p)
    except CutoutError as e:
        raise UWSUsageError(str(e)) from None
    n = len(p.getall("ID")) * len(regions)
    if n > MAX_ASYNC_CUTOUTS:
        raise UWSUsageError(f"{n} cutouts requested; the limit per job is {MAX_ASYNC_CUTOUTS}")


def run(job, ctx) -> None:
    """One result per (ID, region) combination; a combination without overlap is
    reported in jobInfo, not as a failure."""
    p = Params.from_dict(job.parameters)
    ids = list(dict.fromkeys(p.getall("ID")))
    regions = parse_soda_params(p)
    found = products.by_ids(runtime.catalogue(jobs.job_base(job.base_url)), ids)
    items, names, skipped = [], [], []
    for i, did in enumerate(ids):
        if did not in found:
            skipped.append(f"{did}: not found")
            continue
        for j, region in enumerate(regions):
            items.append(("data/" + found[did]["uri"], region))
            names.append(f"cutout-{i}-{j}")
    for name, res in zip(names, cutout_many(runtime.archive(), items)):
        ctx.check_aborted()
        if isinstance(res, NoOverlap):
            skipped.append(f"{name}: no overlap")
        elif isinstance(res, Exception):
            skipped.append(f"{name}: {res}")
        else:
            ctx.add_result(name, res.data, res.content_type)
    ctx.set_progress(1.0, f"{len(names) - len(skipped)} cutouts", skipped=skipped[:100])


JOB = JobKind(SERVICE, run, _validate, max_duration=3600)


ROUTES: dict[str, Handler] = {"sync": lambda rest, req: sync(req.params, req.base)}
PREFIXES: dict[str, Handler] = {
    "async": lambda rest, req: uws.handle_uws(JOB, req, rest[len("async"):],
                                              f"{req.base}/soda/async"),
}


def handle(req: Request) -> Reply:
    return dispatch(req, ROUTES, lambda rest: Reply.text(f"Not found: /soda/{rest}", 404),
                    PREFIXES)
