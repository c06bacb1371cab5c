"""The one registry of async (UWS) services: name -> runner, validator, max duration.

The API reaches a kind through its service's routes; workers (lambdas.handlers.run_job)
look a job's service up here."""

from __future__ import annotations

from ..jobs.runtime import JobKind
from . import photometry, soda
from .tap import asyncjobs

JOBS: dict[str, JobKind] = {kind.name: kind for kind in (asyncjobs.JOB, soda.JOB, photometry.JOB)}
