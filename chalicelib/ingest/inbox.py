"""Ingest from the S3 inbox: a delivery uploaded under <prefix>/ with its manifest.json
last is downloaded to scratch space, ingested, merged when due, and its outcome written
to <prefix>_status.json (state ok / rejected / failed).

The Lambda entry point (lambdas.handlers.ingest_from_s3) passes the S3 client and where
events and metrics go (`Events`, web.observability in Lambda)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from ..config import settings
from ..lake import releases
from ..lake.storage import Archive
from . import maintenance
from .delivery import DeliveryError, ingest

MANIFEST = "manifest.json"
STATUS = "_status.json"
TMP_FRACTION = 0.9  # of free /tmp a delivery may fill (ingest needs a little scratch space)


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


class TooBig(RuntimeError):
    """The delivery does not fit this function's /tmp: not the delivery's fault."""


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


def _objects(s3: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [(o["Key"], int(o["Size"])) for page in pages for o in page.get("Contents", [])
            if not o["Key"].endswith("/") and o["Key"] != prefix + STATUS]


def download(s3: Any, bucket: str, prefix: str, folder: Path, workers: int = 16) -> int:
    """Copy every object under prefix into folder (same relative paths); returns bytes."""
    objects = _objects(s3, bucket, prefix)
    total = sum(size for _, size in objects)
    free = shutil.disk_usage(folder).free
    if total > TMP_FRACTION * free:
        raise TooBig(f"the delivery is {total / 1e9:.2f} GB but the ingest function has "
                     f"{free / 1e9:.2f} GB of /tmp; ingest it with `python -m chalicelib "
                     "ingest` from a machine with enough disk")
    targets = {key: local_path(folder, key[len(prefix):]) for key, _ in objects}

    def fetch(key: str) -> None:
        targets[key].parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(targets[key]))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fetch, targets))
    return total


def local_path(folder: Path, relative: str) -> Path:
    """Where an object goes under folder; S3 keys may contain '..', paths may not escape."""
    root = folder.resolve()
    dest = (root / relative).resolve()
    if not dest.is_relative_to(root) or dest == root:
        raise DeliveryError(f"object key {relative!r} points outside the delivery")
    return dest


def _released_as(s3: Any, bucket: str, prefix: str) -> tuple[str, int] | None:
    """(delivery, release) if the manifest names a delivery the archive already has."""
    try:
        body = s3.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read()
        delivery = json.loads(body)["delivery"]
    except (ClientError, ValueError, KeyError, TypeError):
        return None  # let ingest() say what is wrong with the manifest
    latest = releases.load(Archive.from_env())
    return (delivery, latest.number) if delivery in latest.runs else None


def _run_ingest(s3: Any, bucket: str, prefix: str, status: dict[str, Any], start: float,
                events: Events) -> None:
    """Fill status with the outcome of a successful (or skipped) ingest."""
    released = _released_as(s3, bucket, prefix)
    if released is not None:  # a duplicate event or a re-upload: skip the download
        status.update(state="ok", skipped=True, delivery=released[0], release=released[1],
                      message=f"{released[0]}: already in release {released[1]}; nothing "
                      "changed")
        return
    workdir = Path(tempfile.mkdtemp(prefix="delivery-"))
    try:
        status["bytes_downloaded"] = download(s3, bucket, prefix, workdir)
        fetched = round(time.perf_counter() - start, 3)
        summary = ingest(workdir, Archive.from_env())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    status.update(state="ok", message=summary.text(), delivery=summary.delivery,
                  release=summary.release, skipped=summary.skipped, rows=summary.rows,
                  files=summary.files, bytes=summary.bytes,
                  timings={"download": fetched,
                           **{k: round(v, 3) for k, v in summary.seconds.items()}})
    status["maintenance"] = maintain(events)


def maintain(events: Events = QUIET) -> str | None:
    """Merge the new weeks into a sky-sorted tier when due. The delivery is committed
    whatever happens here: a failure is reported and the next ingest tries again."""
    try:
        return maintenance.after_ingest(Archive.from_env(), settings().merge_every)
    except Exception as exc:  # noqa: BLE001 - reported in the status, retried next time
        events.log_event("maintenance", state="failed", error=f"{type(exc).__name__}: {exc}")
        return f"failed, retried after the next delivery: {type(exc).__name__}: {exc}"


def ingest_delivery(s3: Any, bucket: str, prefix: str, request_id: str | None,
                    events: Events = QUIET) -> dict[str, Any]:
    """Ingest the delivery under s3://bucket/prefix; its status is written when it starts
    and when it ends. A rejected delivery committed nothing, so uploading its manifest
    again retries it; an unexpected failure is re-raised after the status is written."""
    status: dict[str, Any] = {"source": f"s3://{bucket}/{prefix}", "state": "running",
                              "started": _now(), "request_id": request_id}
    write_status(s3, bucket, prefix, status)
    start = time.perf_counter()
    try:
        _run_ingest(s3, bucket, prefix, status, start, events)
    except DeliveryError as exc:
        status.update(state="rejected", message=f"{exc}. Nothing was committed; fix the "
                      f"delivery and upload {MANIFEST} again to retry.")
    except TooBig as exc:
        status.update(state="failed", message=str(exc))
    except Exception as exc:  # infrastructure or a bug: report, then let Lambda retry
        status.update(state="failed", message=f"{type(exc).__name__}: {exc}. Nothing was "
                      f"committed; upload {MANIFEST} again to retry.")
        _finish(s3, bucket, prefix, status, start, events)
        raise
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
