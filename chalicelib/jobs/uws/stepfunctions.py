"""Executor running each job as an AWS Step Functions execution.

The execution name is the job id (names are unique per state machine for 90 days,
so a retried start cannot launch a second execution); ABORT is StopExecution.
Task Lambdas drive the job with executor.mark_executing / RunContext / complete_job /
fail_job on the same store.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from .model import Job


def default_input(job: Job) -> dict[str, Any]:
    """Execution input: enough for the first task to load the job from the store."""
    return {"job_id": job.job_id, "service": job.service, "parameters": job.parameters,
            "execution_duration": job.execution_duration, "base_url": job.base_url}


class StepFunctionsExecutor:
    starts_immediately = True

    def __init__(self, state_machine_arn: str, client: Any,
                 input_fn: Callable[[Job], dict[str, Any]] = default_input,
                 handoffs: tuple[str, ...] = ()) -> None:
        self.state_machine_arn = state_machine_arn
        # machines a runner may hand the job on to (TAP: Spark on EMR Serverless), each
        # running it as an execution named by the job id: ABORT stops those too
        self.handoffs = tuple(a for a in handoffs if a)
        self.client = client
        self.input_fn = input_fn

    def execution_arn(self, job: Job, machine: str | None = None) -> str:
        """arn:aws:states:<region>:<account>:execution:<machine>:<job id>."""
        prefix = (machine or self.state_machine_arn).replace(":stateMachine:", ":execution:", 1)
        return f"{prefix}:{job.job_id}"

    def start(self, job: Job) -> str:
        try:
            response = self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=job.job_id,
                input=json.dumps(self.input_fn(job)))
        except self.client.exceptions.ExecutionAlreadyExists:
            return self.execution_arn(job)
        return response["executionArn"]

    def abort(self, job: Job) -> None:
        arns = [job.execution_arn or self.execution_arn(job)]
        arns += [self.execution_arn(job, machine) for machine in self.handoffs]
        for arn in arns:  # stopping a finished or never started execution is harmless
            with contextlib.suppress(self.client.exceptions.ExecutionDoesNotExist):
                self.client.stop_execution(executionArn=arn, error="UWS.Aborted",
                                           cause=f"UWS job {job.job_id} aborted")
