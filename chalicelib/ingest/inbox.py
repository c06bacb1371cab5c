"""Ingest from the S3 inbox: a delivery uploaded under <prefix>/ with its manifest.json
last is checked and moved where it lies (streaming.py: nothing lands in /tmp), ingested,
merged when due, and its outcome written to <prefix>_status.json (state running / ok /
rejected / failed). A delivery of more than one batch of files fans out to the ingest
state machine when one is configured (INGEST_STATE_MACHINE_ARN); its steps are `step`.

The Lambda entry point (lambdas.handlers.ingest_from_s3) passes the S3 client and where
events and metrics go (`Events`, web.observability in Lambda)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from ..config import settings
from ..lake.storage import Archive
from . import maintenance, streaming
from .delivery import DeliveryError, Summary

MANIFEST = "manifest.json"
STATUS = "_status.json"
FanOut = Callable[[dict[str, Any]], str]  # start the ingest state machine -> execution


class Events(Protocol):
    """Where the inbox reports: one event line, and metrics with their event."""

    def log_event(self, event: str, **fields: Any) -> None: ...

    def metrics(self, values: dict[str, tuple[float, str]],
                dims: dict[str, str] | None = None, **properties: Any) -> None: ...


class _Quiet:
    def log_event(self, event: str, **fields: Any) -> None:
        pass

    def metrics(self, values: dict[str, tuple[float, str]],
                dims: dict[str, str] | None = None, **properties: Any) -> None:
        pass


QUIET: Events = _Quiet()


def delivery_prefix(key: str) -> str | None:
    """'2025W35/manifest.json' -> '2025W35/'; None for a key that is not a delivery manifest
    (a file under data/ that happens to be called manifest.json, or one at the top)."""
    if not key.endswith("/" + MANIFEST):
        return None
    prefix = key[: -len(MANIFEST)]
    return None if "/data/" in f"/{prefix}" else prefix


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_status(s3: Any, bucket: str, prefix: str, status: dict[str, Any]) -> None:
    body = json.dumps(status, indent=1, default=str).encode()
    s3.put_object(Bucket=bucket, Key=prefix + STATUS, Body=body,
                  ContentType="application/json")


def source(bucket: str, prefix: str) -> Archive:
    """The delivery where it lies, as a storage location (read in place, never copied
    to /tmp: see streaming.py)."""
    return Archive(f"s3://{bucket}/{prefix}".rstrip("/"))


def _committed(status: dict[str, Any], summary: Summary, stats: streaming.Stats | None,
               events: Events) -> None:
    status.update(state="ok", message=summary.text(), delivery=summary.delivery,
                  release=summary.release, skipped=summary.skipped, rows=summary.rows,
                  files=summary.files, bytes=summary.bytes,
                  timings={k: round(v, 3) for k, v in summary.seconds.items()})
    if stats is not None:
        status["moved"] = stats.to_json()
    if not summary.skipped:
        status["maintenance"] = maintain(events)


def _run_ingest(s3: Any, bucket: str, prefix: str, status: dict[str, Any],
                headers: streaming.HeaderReader, fan_out: FanOut | None,
                events: Events) -> bool:
    """Plan; then either start the fanned-out execution (returns False: the state
    machine finishes the status) or check, copy and commit here (returns True)."""
    src, archive = source(bucket, prefix), Archive.from_env()
    planned = streaming.plan(src, archive)
    if planned["skipped"]:  # a duplicate event or a re-upload
        status.update(state="ok", skipped=True, delivery=planned["delivery"],
                      release=planned["release"], message=f"{planned['delivery']}: "
                      f"already in release {planned['release']}; nothing changed")
        return True
    status.update(delivery=planned["delivery"], files=planned["files"],
                  bytes=planned["bytes"], batches=len(planned["batches"]))
    if fan_out is not None and len(planned["batches"]) > 1:
        status["execution"] = fan_out({"step": "plan", "bucket": bucket, "prefix": prefix,
                                       "request_id": status.get("request_id")})
        status["message"] = (f"{planned['delivery']}: {planned['files']} files in "
                             f"{len(planned['batches'])} batches, fanned out")
        return False
    summary, stats = streaming.ingest_in_place(src, archive, headers)
    _committed(status, summary, stats, events)
    return True


def maintain(events: Events = QUIET) -> str | None:
    """Merge the new weeks into a sky-sorted tier when due. The delivery is committed
    whatever happens here: a failure is reported and the next ingest tries again."""
    try:
        return maintenance.after_ingest(Archive.from_env(), settings().merge_every)
    except Exception as exc:  # noqa: BLE001 - reported in the status, retried next time
        events.log_event("maintenance", state="failed", error=f"{type(exc).__name__}: {exc}")
        return f"failed, retried after the next delivery: {type(exc).__name__}: {exc}"


def ingest_delivery(s3: Any, bucket: str, prefix: str, request_id: str | None,
                    events: Events = QUIET, headers: streaming.HeaderReader | None = None,
                    fan_out: FanOut | None = None) -> dict[str, Any]:
    """Ingest the delivery under s3://bucket/prefix; its status is written when it starts
    and when it ends. A rejected delivery committed nothing, so uploading its manifest
    again retries it; an unexpected failure is re-raised after the status is written.
    With `fan_out` (the ingest state machine) a delivery of more than one batch is
    handed to Step Functions, whose steps (`step`) write the final status."""
    status: dict[str, Any] = {"source": f"s3://{bucket}/{prefix}", "state": "running",
                              "started": _now(), "request_id": request_id}
    write_status(s3, bucket, prefix, status)
    start = time.perf_counter()
    try:
        if not _run_ingest(s3, bucket, prefix, status, _need(headers), fan_out, events):
            write_status(s3, bucket, prefix, status)
            return status
    except DeliveryError as exc:
        status.update(state="rejected", message=f"{exc}. Nothing was committed; fix the "
                      f"delivery and upload {MANIFEST} again to retry.")
    except Exception as exc:  # infrastructure or a bug: report, then let Lambda retry
        status.update(state="failed", message=f"{type(exc).__name__}: {exc}. Nothing was "
                      f"committed; upload {MANIFEST} again to retry.")
        _finish(s3, bucket, prefix, status, start, events)
        raise
    return _finish(s3, bucket, prefix, status, start, events)


def _need(headers: streaming.HeaderReader | None) -> streaming.HeaderReader:
    if headers is None:
        raise TypeError("ingest needs a FITS header reader (cutout.fitsrange.hdu_names)")
    return headers


def _status(s3: Any, bucket: str, prefix: str) -> dict[str, Any]:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=prefix + STATUS)["Body"].read())
    except (ClientError, ValueError):
        return {"source": f"s3://{bucket}/{prefix}", "started": _now()}


def step(s3: Any, event: dict[str, Any], headers: streaming.HeaderReader | None,
         events: Events = QUIET) -> dict[str, Any]:
    """One step of the ingest state machine (infra/statemachines/ingest.asl.json):
    plan -> Map over batches (batch) -> commit; any failure -> failed. The event names
    the delivery (bucket, prefix); plan's answer carries the manifest's MD5 so every
    later step checks that it still reads the same delivery."""
    bucket, prefix, name = event["bucket"], event["prefix"], event["step"]
    src, archive = source(bucket, prefix), Archive.from_env()
    if name == "plan":
        return streaming.plan(src, archive)
    if name == "batch":
        return streaming.run_batch(src, archive, event["manifest"], event["batch"],
                                   _need(headers))
    status = _status(s3, bucket, prefix)
    start = time.perf_counter()
    if name == "commit":
        summary = streaming.commit(src, archive, event["manifest"], event.get("batches"))
        _committed(status, summary, None, events)
    elif name == "failed":
        error = event.get("error") or {}
        try:
            doc = json.loads(error.get("Cause") or "{}")
        except ValueError:
            doc = {}
        kind = doc.get("errorType") or error.get("Error") or "States.Runtime"
        text = doc.get("errorMessage") or error.get("Cause") or kind
        rejected = kind == "DeliveryError"
        status.update(state="rejected" if rejected else "failed", message=(
            f"{text}. Nothing was committed; " + ("fix the delivery and " if rejected
                                                  else "") + f"upload {MANIFEST} again "
            "to retry."))
    else:
        raise ValueError(f"unknown ingest step {name!r}")
    return _finish(s3, bucket, prefix, status, start, events)


def _finish(s3: Any, bucket: str, prefix: str, status: dict[str, Any], start: float,
            events: Events) -> dict[str, Any]:
    seconds = round(time.perf_counter() - start, 3)
    status.update(finished=_now(), seconds=seconds)
    write_status(s3, bucket, prefix, status)
    failed = status["state"] != "ok"
    events.metrics({"IngestSeconds": (seconds, "Seconds"),
                    "IngestFailures": (int(failed), "Count")},
                   event="ingest", source=status["source"], state=status["state"],
                   message=status.get("message"), release=status.get("release"))
    return status
