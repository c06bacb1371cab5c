"""Structured JSON logs and CloudWatch Embedded Metric Format (EMF), stdlib only.

One JSON line per API request carries the request id, endpoint, status, latency and the
rows and bytes the services read; the same line is an EMF document, so CloudWatch turns
its Latency/Rows/BytesRead fields into metrics without any PutMetricData call.

    with observability.request_log("tap/sync", request_id=rid, method="GET") as req:
        ...                                   # anywhere below: observability.add(rows=n)
        req.status = 200
    observability.metric("IngestFailures", 1, "Count")

In Lambda (AWS_LAMBDA_FUNCTION_NAME set) or with OBSERVABILITY_STDOUT=1 lines go to
stdout, where CloudWatch Logs picks them up; elsewhere they go to the logger
`chalicelib.web.observability` at INFO, so local runs and tests stay quiet.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..config import settings

log = logging.getLogger(__name__)

# Units CloudWatch accepts in EMF (a subset: what this code base uses).
UNITS = frozenset({"Count", "Milliseconds", "Seconds", "Bytes", "None", "Percent"})

_current: contextvars.ContextVar[RequestLog | None] = contextvars.ContextVar(
    "observability_request", default=None)
_cold = True  # the first request of a process pays the container's start-up


def namespace() -> str:
    return settings().metrics_namespace


def stage() -> str:
    return settings().stage


def _to_stdout() -> bool:
    conf = settings()
    return conf.in_lambda or conf.observability_stdout


def _write(line: str) -> None:
    if _to_stdout():
        sys.stdout.write(line + "\n")
        sys.stdout.flush()  # Lambda may freeze the process right after the handler returns
    else:
        log.info("%s", line)


Sink = Callable[[dict[str, Any]], None]
_sinks: list[Sink] = []


def add_sink(sink: Sink) -> Callable[[], None]:
    """Also hand every emitted document to `sink` (tests); returns a remover."""
    _sinks.append(sink)
    return lambda: _sinks.remove(sink)


def emit(doc: dict[str, Any]) -> None:
    """Write one JSON document as one line (default=str: datetimes, paths, numpy scalars)."""
    for sink in list(_sinks):
        sink(doc)
    _write(json.dumps(doc, default=str, separators=(",", ":")))


class JsonFormatter(logging.Formatter):
    """logging records as one JSON object per line (exceptions included)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": round(record.created, 3), "level": record.levelname,
               "logger": record.name, "message": record.getMessage(), "stage": stage(),
               "request_id": getattr(record, "aws_request_id", None)}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Make the root logger's handlers (the Lambda runtime's, or a new stderr one) write
    JSON lines, so log.exception() output is as searchable as the request lines."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    root.setLevel(level)


def log_event(event: str, **fields: Any) -> None:
    """A structured log line that is not a metric (e.g. an ingest status)."""
    emit({"event": event, "stage": stage(), "time": round(time.time(), 3), **fields})


def emf(values: Mapping[str, tuple[float, str]], dims: Mapping[str, str] | None = None,
        **properties: Any) -> dict[str, Any]:
    """An EMF document: `values` name -> (value, unit); Stage is always a dimension.

    `properties` are extra searchable fields that are not dimensions (dimensions are
    billed per combination, so keep them to a few low-cardinality names).
    """
    dimensions = {"Stage": stage(), **{k: str(v) for k, v in (dims or {}).items()}}
    for name, (_, unit) in values.items():
        if unit not in UNITS:
            raise ValueError(f"metric {name}: unit {unit!r} not one of {sorted(UNITS)}")
    meta = {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
        "Namespace": namespace(),
        "Dimensions": [list(dimensions)],
        "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()],
    }]}
    body = {name: value for name, (value, _) in values.items()}
    return {**properties, **dimensions, **body, "_aws": meta}


def metrics(values: Mapping[str, tuple[float, str]], dims: Mapping[str, str] | None = None,
            **properties: Any) -> None:
    """Emit several metrics sharing dimensions in one EMF line."""
    emit(emf(values, dims, **properties))


def metric(name: str, value: float, unit: str = "Count", **dims: str) -> None:
    """Emit one metric, e.g. metric("IngestFailures", 1) or metric("Rows", n, Service="tap")."""
    metrics({name: (value, unit)}, dims)


@dataclass
class RequestLog:
    """What one request did; services add to it through observability.add()."""

    endpoint: str
    request_id: str | None = None
    method: str | None = None
    status: int | None = None
    rows: int = 0
    bytes_read: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    def add(self, rows: int = 0, bytes_read: int = 0, **fields: Any) -> None:
        self.rows += int(rows)
        self.bytes_read += int(bytes_read)
        self.fields.update(fields)

    def document(self, latency_ms: float, cold: bool) -> dict[str, Any]:
        values = {"Latency": (round(latency_ms, 2), "Milliseconds"),
                  "Rows": (self.rows, "Count"), "BytesRead": (self.bytes_read, "Bytes")}
        return emf(values, {"Endpoint": self.endpoint}, event="request",
                   request_id=self.request_id, method=self.method, status=self.status,
                   latency_ms=round(latency_ms, 2), rows=self.rows,
                   bytes_read=self.bytes_read, cold_start=cold, **self.fields)


def current() -> RequestLog | None:
    """The request being served in this context, if any."""
    return _current.get()


def add(rows: int = 0, bytes_read: int = 0, **fields: Any) -> None:
    """Count rows/bytes (and note fields) for the current request; a no-op outside one."""
    req = _current.get()
    if req is not None:
        req.add(rows, bytes_read, **fields)


@contextmanager
def request_log(endpoint: str, request_id: str | None = None,
                method: str | None = None) -> Iterator[RequestLog]:
    """Time a request and emit its line on exit; an exception is logged as status 500
    (with its type) and re-raised. `endpoint` must be a route name, not the raw path:
    it is a metric dimension."""
    global _cold
    req = RequestLog(endpoint, request_id, method)
    token = _current.set(req)
    start = time.perf_counter()
    try:
        yield req
    except BaseException as exc:
        req.status = 500 if req.status is None or req.status < 500 else req.status
        req.fields.setdefault("error", type(exc).__name__)
        raise
    finally:
        _current.reset(token)
        cold, _cold = _cold, False
        emit(req.document((time.perf_counter() - start) * 1000, cold))
