"""The spectrophotometry UWS service: /spectrophotometry/async (+ /capabilities).

Locally a job runs plan -> measure (batches on 2 threads) -> assemble in one worker; on AWS
the SPECTROPHOTOMETRY_STATE_MACHINE_ARN state machine runs the same steps as Lambdas.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from ..jobs import runtime as jobs
from ..jobs.runtime import JobKind
from ..photometry import steps
from ..query import runtime
from ..web.replies import Reply
from ..web.request import Request
from ..web.routes import Handler, dispatch
from . import uws
from .tap.meta import vosi_capabilities

SERVICE = steps.SERVICE
LOCAL_THREADS = 2


def validate(params: dict[str, list[str]]) -> None:
    """Reject bad or over-limit parameters at creation (HTTP 400), not later in the job."""
    steps.parse(params)


def run(job, ctx) -> None:
    """Local runner: plan, measure every batch (progress and ABORT checked per batch), then
    write the results."""
    req = steps.parse(job.parameters)
    ctx.set_progress(0.0, f"planning {len(req.sources)} sources")
    base = jobs.job_base(job.base_url)
    items, notes = steps.plan_items(runtime.catalogue(base), req)
    batches = steps.batches_of(items)
    arch = runtime.archive()
    done = [0]
    lock = threading.Lock()

    def one(batch: list[list]) -> list[dict]:
        ctx.check_aborted()
        try:
            rows = steps.measure_items(arch, req.sources, batch, req.half, threads=1)
        except Exception as e:  # an unexpected failure flags its batch, not the job
            rows = steps.failed_items(batch, f"{type(e).__name__}: {e}")
        with lock:
            done[0] += 1
            n = done[0]
        if n % 5 == 0 or n == len(batches):
            ctx.set_progress(0.95 * n / len(batches), f"{n}/{len(batches)} batches measured")
        return rows

    with ThreadPoolExecutor(LOCAL_THREADS) as pool:
        rows = [r for batch_rows in pool.map(one, batches) for r in batch_rows]
    ctx.check_aborted()
    summary = steps.assemble_results(req.sources, rows, notes, ctx.add_result, base=base)
    ctx.set_progress(1.0, f"{summary['measurements']} measurements of "
                          f"{summary['sources']} sources", **summary)


JOB = JobKind(SERVICE, run, validate, max_duration=3600)


def capabilities(base: str) -> str:
    return vosi_capabilities(f"{base}/spectrophotometry", [
        ("ivo://ivoa.net/std/UWS#async-1.1", "async", ' role="std" version="1.1"'),
        ("ivo://ivoa.net/std/VOSI#capabilities", "capabilities", "")])


ROUTES: dict[str, Handler] = {
    "capabilities": lambda rest, req: Reply.xml(capabilities(req.base)),
}
PREFIXES: dict[str, Handler] = {
    "async": lambda rest, req: uws.handle_uws(JOB, req, rest[len("async"):],
                                              f"{req.base}/spectrophotometry/async"),
}


def handle(req: Request) -> Reply:
    """Route /spectrophotometry/{rest+}: async/... to UWS, capabilities to VOSI."""
    return dispatch(req, ROUTES,
                    lambda rest: Reply.text(f"Not found: /spectrophotometry/{rest}", 404),
                    PREFIXES)
