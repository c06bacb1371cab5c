"""One UWS 1.1 implementation for TAP async, SODA async and spectrophotometry.

Plug a service in with a runner and (optionally) a parameter validator::

    store = LocalJobStore("./jobs")                 # or DynamoJobStore(table, client)
    executor = LocalExecutor(store, {"tap": run_query}, result_sink=sink)
    tap_async = UWSService(store, executor, service_name="tap",
                           params_validator=check_tap_params)
    response = tap_async.handle("POST", "", query, form, owner, "https://host/tap/async")
"""

from .dynamo import DynamoJobStore, create_table
from .executor import (
    DirectoryResultSink,
    Executor,
    LocalExecutor,
    ResultSink,
    RunContext,
    Runner,
    complete_job,
    fail_job,
    mark_executing,
    run_job,
)
from .model import (
    ACTIVE_PHASES,
    PHASES,
    HandedOff,
    Job,
    JobAborted,
    TransientJobError,
    UWSUsageError,
    format_time,
    parse_time,
)
from .service import Forbidden, NotFound, Response, UWSService, normalize
from .stepfunctions import StepFunctionsExecutor
from .store import ANY, JobStore, LocalJobStore

__all__ = [
    "ACTIVE_PHASES", "ANY", "PHASES", "DirectoryResultSink", "DynamoJobStore", "Executor",
    "Forbidden", "HandedOff", "Job", "JobAborted", "JobStore", "LocalExecutor", "LocalJobStore",
    "NotFound", "Response", "ResultSink", "RunContext", "Runner", "StepFunctionsExecutor",
    "TransientJobError", "UWSService", "UWSUsageError", "complete_job", "create_table",
    "fail_job", "format_time", "mark_executing", "normalize", "parse_time", "run_job",
]
