"""Which engine runs a TAP async job: ENGINE=auto|duckdb|spark.

auto prices the query before running it: the ADQL is translated for Spark over the
job's release, whose boxes prune each FROM item's files exactly as the DuckDB catalogue
does, and the files and bytes left are summed from the Delta add actions. A scan above
SPARK_ROUTE_BYTES goes to Spark (when one is available), the rest stays on DuckDB.
Spark runs here (SPARK_MASTER, or local[2] where Java and pyspark are installed) or, on
AWS, as an EMR Serverless job run started by the SPARK state machine.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass

from ...config import Settings
from ...jobs.uws import HandedOff, UWSUsageError
from ...lake.current import archive
from ...query import adql
from ...query.catalogue import Catalogue
from ...query.spark.engine import SparkCatalogue, java_available
from ...query.spark.files import ReleaseFiles
from ...query.uploads import UploadUsageError, load_uploads
from ...web.params import Params
from . import meta as tapmeta
from .errors import UPLOAD_LIMIT

ENGINES = ("auto", "duckdb", "spark")


@dataclass
class Choice:
    engine: str  # duckdb | spark
    where: str  # here | emr
    estimate: dict | None  # files, bytes after pruning (None: the query does not translate)
    reason: str


def estimate(params: Params, cat: Catalogue) -> dict | None:
    """Files and bytes the query reads in the catalogue's release (None: it does not
    translate; the engine then reports why)."""
    release = cat.release  # the statistics the catalogue holds for it, no log replay
    plan = ReleaseFiles(cat.archive, release,
                        known=lambda physical: cat.file_stats(physical, release.number))
    try:
        _, upload_tables = load_uploads(params, UPLOAD_LIMIT)
        adql.translate(params.get("QUERY") or "", tapmeta.all_tables(), box_sql=plan.box_sql,
                       uploads=upload_tables, dialect="spark", relation=plan.relation)
    except (adql.AdqlError, UploadUsageError):
        return None
    return plan.estimate()


def local_spark(conf: Settings) -> bool:
    """Spark can run in this process: a master is configured, or (not on Lambda) Java
    and pyspark are installed for local[2]."""
    if conf.spark_master:
        return True
    return not conf.in_lambda and java_available() and \
        importlib.util.find_spec("pyspark") is not None


def emr_spark(conf: Settings) -> bool:
    return bool(conf.emr_application_id and conf.state_machine_arn("spark"))


def choose(params: Params, cat: Catalogue, conf: Settings) -> Choice:
    want = (params.get("ENGINE") or "auto").lower()
    if want not in ENGINES:
        raise UWSUsageError(f"ENGINE={params.get('ENGINE')} is not one of "
                            f"{', '.join(ENGINES)}")
    est = estimate(params, cat)
    where = "here" if local_spark(conf) else "emr" if emr_spark(conf) else None
    if want == "spark":
        if where is None:
            raise UWSUsageError("ENGINE=spark: no Spark engine is available on this service "
                                "(no SPARK_MASTER, no local Java, no EMR Serverless "
                                "application configured); use ENGINE=duckdb or auto")
        return Choice("spark", where, est, "asked for")
    if want == "duckdb":
        return Choice("duckdb", "here", est, "asked for")
    big = est is not None and est["bytes"] > conf.spark_route_bytes
    if big and where is not None:
        return Choice("spark", where, est, f"scan above SPARK_ROUTE_BYTES "
                                           f"({conf.spark_route_bytes:,} bytes)")
    reason = "no Spark available" if big else "scan within SPARK_ROUTE_BYTES"
    return Choice("duckdb", "here", est, reason)


def spark_catalogue(cat: Catalogue, ctx) -> SparkCatalogue:
    """A Spark catalogue on the job's release that reports stages to jobInfo and stops
    when the job is aborted."""
    def progress(p: dict) -> None:
        frac = p["tasks_done"] / p["tasks_total"] if p["tasks_total"] else 0.0
        ctx.set_progress(min(frac, 0.99), f"Spark: {p['stages_done']}/{p['stages_total']} "
                         "stages done", spark=p)
    return SparkCatalogue(cat.archive, cat.release, cat.base_url, progress=progress,
                          check=ctx.check_aborted)


def hand_to_emr(job, params: Params, cat: Catalogue, conf: Settings) -> None:
    """Start the SPARK state machine (EMR Serverless startJobRun.sync, then the finish
    Lambda) for this job, its execution named by the job id (so ABORT finds and stops it:
    Step Functions then cancels the job run); the EMR driver updates the job itself."""
    import boto3  # deferred: AWS path only

    payload = {"job_id": job.job_id, "release": cat.release.number,
               "base_url": cat.base_url, "archive_url": archive().url,
               "parameters": params.to_dict()}
    boto3.client("stepfunctions").start_execution(
        stateMachineArn=conf.state_machine_arn("spark"), name=job.job_id,
        input=json.dumps({"job_id": job.job_id, "driver_args": [json.dumps(payload)]}))
    raise HandedOff(job.job_id)
