"""The Spark side of a TAP async job on AWS: the driver EMR Serverless runs, and the
Lambda that finishes the UWS job after it (infra/spark.yaml's state machine).

EMR runs `spark-submit spark_driver.py '<payload JSON>'` (services/tap/engines.py
writes the payload: job id, release, base URL, the job's parameters) with this code
base on its Python path (spark.submit.pyFiles, README "The Spark engine"). The driver
runs the same TAP query path as the local engine over the job's release, reports
Spark stages to the job's jobInfo, cancels its job group when the job is aborted (it
rechecks the store), and stores the result as TAP async does. `finish` then completes
the job, or fails it with the state machine's error.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..config import settings
from ..dali import UsageError
from ..jobs import runtime as jobs
from ..jobs.uws import RunContext, complete_job, fail_job
from ..lake import releases
from ..lake.storage import Archive
from ..query.spark.engine import SparkCatalogue
from ..services.tap.sync import run_query
from ..web.params import Params
from .handlers import describe_error, job_store


def drive(payload: dict[str, Any], session=None) -> None:
    """Run one job's query on Spark and store its result (the job stays EXECUTING)."""
    store = job_store()
    job = store.get(payload["job_id"])
    if job is None:
        return
    ctx = RunContext(store, job, result_sink=jobs.result_sink, recheck_seconds=5.0)
    archive = Archive.from_env(payload["archive_url"])
    release = releases.load(archive, payload["release"])

    def progress(p: dict) -> None:
        ctx.set_progress(None, f"Spark: {p['stages_done']}/{p['stages_total']} stages done",
                         spark=p)

    cat = SparkCatalogue(archive, release, payload["base_url"], session=session,
                         progress=progress, check=ctx.check_aborted)
    conf = settings()
    try:
        res = run_query(Params.from_dict(payload["parameters"]), cat,
                        conf.tap_async_timeout, conf)
    except UsageError as e:  # the caller's mistake: the job's errorSummary says what
        fail_job(store, job.job_id, str(e))
        return
    ctx.add_result("result", res.body, res.content_type)


def finish(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """After the EMR job run: COMPLETED, or ERROR with the run's failure (a job the
    driver already failed or that was aborted stays as it is)."""
    job_id = event["job_id"]
    if event.get("error"):
        message, kind = describe_error(event["error"])
        changed = fail_job(job_store(), job_id, f"Spark job failed: {message}", kind)
    else:
        changed = complete_job(job_store(), job_id)
    job = job_store().get(job_id)
    return {"job_id": job_id, "phase": job.phase if job else None, "changed": changed}


def main(argv: list[str]) -> None:
    from pyspark.sql import SparkSession  # deferred: only EMR's driver has it

    from ..query.spark import session as spark  # deferred: see above

    s = spark.adopt(SparkSession.builder.appName("archive-adql").getOrCreate())
    drive(json.loads(argv[0]), session=spark.job_session_of(s))


if __name__ == "__main__":
    main(sys.argv[1:])
