"""UWS 1.1 job model: phases, the Job record, time formatting, errors."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ...dali import UsageError

PENDING = "PENDING"
QUEUED = "QUEUED"
EXECUTING = "EXECUTING"
COMPLETED = "COMPLETED"
ERROR = "ERROR"
ABORTED = "ABORTED"
UNKNOWN = "UNKNOWN"
HELD = "HELD"
SUSPENDED = "SUSPENDED"
ARCHIVED = "ARCHIVED"

PHASES = (PENDING, QUEUED, EXECUTING, COMPLETED, ERROR, ABORTED,
          UNKNOWN, HELD, SUSPENDED, ARCHIVED)
# Phases in which a job may still change by itself or by RUN: WAIT blocks only here.
ACTIVE_PHASES = frozenset({PENDING, QUEUED, EXECUTING, HELD, SUSPENDED})
# Phases in which the executor owns the job (ABORT must stop real work).
RUNNING_PHASES = frozenset({QUEUED, EXECUTING})
# Phases from which PHASE=RUN is accepted.
STARTABLE_PHASES = frozenset({PENDING, HELD})
# Phases from which PHASE=ABORT is accepted (UWS: aborting a finished job is a no-op).
ABORTABLE_PHASES = frozenset({PENDING, QUEUED, EXECUTING, HELD, SUSPENDED})


class UWSUsageError(UsageError):
    """The caller's mistake: becomes HTTP 400 with this message."""


class TransientJobError(RuntimeError):
    """A runner failure worth retrying later (errorSummary type 'transient')."""


class JobAborted(Exception):
    """Raised inside a runner when its job was aborted or timed out: stop working."""


class HandedOff(Exception):  # noqa: N818 (not an error: a hand-over)
    """Raised by a runner whose work goes on elsewhere (a Spark job on EMR Serverless):
    the job stays EXECUTING; whoever finishes the work completes or fails it."""


def utcnow() -> datetime:
    """Now in UTC, truncated to milliseconds so that what we print is what we compare."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_time(value: datetime | None) -> str | None:
    """xs:dateTime / DALI timestamp in UTC with milliseconds and a 'Z'."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    # the year by hand: strftime's %Y does not pad years before 1000 ('341-12-11'), which
    # parse_time (ISO 8601) then refuses, leaving a stored job unreadable
    return f"{value.year:04d}" + value.strftime("-%m-%dT%H:%M:%S.") + \
        f"{value.microsecond // 1000:03d}Z"


def parse_time(text: str | None) -> datetime | None:
    """Parse ISO 8601 (date or datetime, 'Z' or offset; naive means UTC)."""
    if text is None or text == "":
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UWSUsageError(f"invalid ISO 8601 timestamp: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00, 9999-12-31T23:59-12:00
        raise UWSUsageError(f"timestamp out of range: {text!r}") from None


def new_job_id() -> str:
    """Opaque, URL-safe, and a legal Step Functions execution name."""
    return uuid.uuid4().hex


@dataclass
class Job:
    """One UWS job. parameters: lower-cased name -> values; param_names keeps the case seen."""

    job_id: str
    service: str
    owner_id: str | None = None
    run_id: str | None = None
    phase: str = PENDING
    quote: datetime | None = None
    creation_time: datetime = field(default_factory=utcnow)
    start_time: datetime | None = None
    end_time: datetime | None = None
    execution_duration: int = 0
    destruction: datetime | None = None
    parameters: dict[str, list[str]] = field(default_factory=dict)
    param_names: dict[str, str] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    error_summary: dict[str, Any] | None = None
    job_info: dict[str, Any] = field(default_factory=dict)
    execution_arn: str | None = None
    version: int = 0
    # the public base URL of the API the job was created through: its results (access
    # URLs, service descriptors) point there; None in records older than the field
    base_url: str | None = None

    def param(self, name: str, default: str | None = None) -> str | None:
        """First value of a parameter, names case-insensitive."""
        values = self.parameters.get(name.lower())
        return values[0] if values else default

    def expired(self, now: datetime | None = None) -> bool:
        return self.destruction is not None and self.destruction <= (now or utcnow())

    def overran(self, now: datetime | None = None) -> bool:
        """EXECUTING for longer than executionDuration (0 = unlimited)."""
        if self.phase != EXECUTING or not self.execution_duration or not self.start_time:
            return False
        limit = self.start_time + timedelta(seconds=self.execution_duration)
        return (now or utcnow()) > limit

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (timestamps as strings); inverse of from_dict."""
        out = dataclasses.asdict(self)
        for name in TIME_FIELDS:
            out[name] = format_time(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in TIME_FIELDS:
            if isinstance(values.get(name), str):
                values[name] = parse_time(values[name])
        return cls(**values)


TIME_FIELDS = ("quote", "creation_time", "start_time", "end_time", "destruction")
FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Job))


def error_summary(message: str, kind: str = "fatal", detail: str | None = None) -> dict[str, Any]:
    """The stored errorSummary: type 'fatal' or 'transient', message, optional detail text."""
    return {"type": kind, "message": message, "has_detail": bool(detail), "detail": detail}
