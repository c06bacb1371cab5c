"""TAP /async: the shared UWS service running the same query path as /sync."""

from __future__ import annotations

from ...config import settings
from ...jobs import runtime as jobs
from ...jobs.runtime import JobKind
from ...jobs.uws import UWSUsageError
from ...query import runtime
from ...query.catalogue import QueryTimeout
from ...render.votable import error_document
from ...web.params import Params
from ...web.replies import Reply
from ...web.request import Request
from .. import uws
from . import engines
from .sync import run_query

SERVICE = "tap"


def run(job, ctx) -> None:
    """Run the query of a job and store the result named `result` (what pyvo fetches),
    on the engine ENGINE names or auto routing picks (engines.py); jobInfo says which."""
    params = Params.from_dict(job.parameters)
    cat = runtime.catalogue(jobs.job_base(job.base_url))
    conf = settings()
    limit = min(conf.tap_async_timeout, job.execution_duration or conf.tap_async_timeout)
    choice = engines.choose(params, cat, conf)
    ctx.set_progress(0.0, f"running on {choice.engine}", engine=choice.engine,
                     engine_reason=choice.reason, estimate=choice.estimate,
                     release=cat.release.number)
    if choice.engine == "spark" and choice.where == "emr":
        engines.hand_to_emr(job, params, cat, conf)
    run_on = engines.spark_catalogue(cat, ctx) if choice.engine == "spark" else cat
    try:  # a TapUsageError is the caller's mistake: the job's errorSummary is its message
        res = run_query(params, run_on, limit, conf)
    except QueryTimeout:
        raise UWSUsageError(f"The query ran longer than the limit of {limit:g} s; ask for "
                            f"less (TOP, a narrower region) or split it") from None
    ctx.set_progress(1.0, f"{res.rows} rows{' (truncated at MAXREC)' if res.overflow else ''}")
    ctx.add_result("result", res.body, res.content_type)


# No validation at creation: TAP reports a bad query through the job (phase ERROR and a
# VOTable /error), which is what clients and taplint expect after a 303.
# A job handed to Spark on EMR Serverless runs as an execution of the "spark" machine
# named by its job id (engines.hand_to_emr): ABORT stops it, which cancels the job run.
JOB = JobKind(SERVICE, run, None, max_duration=3600, handoffs=("spark",))


def handle_async(sub: str, req: Request) -> Reply:
    reply = uws.handle_uws(JOB, req, sub, f"{req.base}/tap/async")
    if sub.rstrip("/").endswith("/error") and reply.status == 200:  # TAP: a VOTable error
        return Reply(200, error_document(reply.body.decode() or "no error"),
                     "application/x-votable+xml", reply.headers)
    return reply
