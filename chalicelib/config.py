"""Every setting of the server and its Lambdas, read from the environment in one place.

`settings()` builds a `Settings` from os.environ once per process and keeps it; `reset()`
forgets it (tests change the environment, then reset). No other module reads os.environ
for a setting, and none reads it at import (tests/test_config.py checks both). AWS
credentials are not settings: the SDKs find them in their own chain.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_NAMESPACE = "SpherexArchive"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(env.get(name) or default)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return float(env.get(name) or default)


@dataclass(frozen=True)
class Settings:
    # the archive and its release
    archive_url: str = "./archive"  # ARCHIVE_URL: a folder or an s3:// prefix
    archive_release: int | None = None  # ARCHIVE_RELEASE: pin one release
    s3_endpoint_url: str | None = None  # S3_ENDPOINT_URL (or AWS_ENDPOINT_URL[_S3])
    aws_region: str = "us-east-1"  # AWS_REGION or AWS_DEFAULT_REGION
    # the web front: public URL, proxies, load
    public_url: str | None = None  # PUBLIC_URL, without a trailing slash
    trusted_proxy: bool = False  # TRUSTED_PROXY=1: believe X-Forwarded-Host/-Proto
    rate_limit: float = 50.0  # RATE_LIMIT requests a second per caller; 0 = off
    rate_burst: float = 200.0  # RATE_BURST
    # synchronous queries at once per process (SYNC_SLOTS): twice the cores, since a query
    # spends part of its time waiting on storage
    sync_slots: int = field(default_factory=lambda: 2 * (os.cpu_count() or 2))
    # TAP, SIA, DataLink limits
    tap_sync_timeout: float = 25.0  # TAP_SYNC_TIMEOUT; API Gateway allows 29 s
    tap_async_timeout: float = 600.0  # TAP_ASYNC_TIMEOUT
    tap_default_maxrec: int = 100_000  # TAP_DEFAULT_MAXREC
    tap_hard_maxrec: int = 5_000_000  # TAP_HARD_MAXREC
    sia_default_maxrec: int = 10_000  # SIA_DEFAULT_MAXREC
    sia_hard_maxrec: int = 1_000_000  # SIA_HARD_MAXREC
    sia_timeout: float = 25.0  # SIA_TIMEOUT
    datalink_max_ids: int = 10_000  # DATALINK_MAX_IDS
    # async jobs: DynamoDB table or a local folder, one state machine per service
    jobs_table: str | None = None  # JOBS_TABLE
    jobs_dir: str | None = None  # JOBS_DIR
    state_machine_arns: tuple[tuple[str, str], ...] = ()  # <SERVICE>_STATE_MACHINE_ARN
    catalogue_release_ttl: float | None = None  # CATALOGUE_RELEASE_TTL (s)
    # ingest
    merge_every: int | None = None  # MERGE_EVERY: deliveries per sky-sorted merge
    # ingest from S3 in place (ingest/streaming.py): files per fan-out batch, copy and
    # hashing sizes, threads, and the function's /tmp (the delivery never lands there)
    ingest_batch_files: int = 250  # INGEST_BATCH_FILES
    ingest_copy_threshold: int = 5 << 30  # INGEST_COPY_THRESHOLD: CopyObject up to this
    ingest_part_bytes: int = 512 << 20  # INGEST_PART_BYTES: UploadPartCopy part size
    ingest_hash_chunk: int = 8 << 20  # INGEST_HASH_CHUNK: streamed checksum read size
    ingest_workers: int = 16  # INGEST_WORKERS: files checked and copied at once
    ingest_tmp_bytes: int = 512 << 20  # INGEST_TMP_BYTES: the ingest function's /tmp
    # retention (ingest/retention.py): releases kept, pinned ones, and a grace period
    # covering queries still reading a release that was just superseded
    retention_keep_last: int = 0  # RETENTION_KEEP_LAST: 0 = keep every release
    retention_pinned: tuple[int, ...] = ()  # RETENTION_PINNED: "12,40" release numbers
    retention_grace: float = 3600.0  # RETENTION_GRACE_SECONDS
    hats_publish: bool = True  # HATS_PUBLISH=0: merges do not rewrite the HATS copy
    # the Spark engine for big async TAP jobs (query/spark): a master URL runs them here
    # (local[2], spark://...); on AWS an EMR Serverless application runs them instead
    spark_master: str | None = None  # SPARK_MASTER
    # auto routing: a job whose estimated scan (bytes after pruning) is above this goes to
    # Spark (README "The Spark engine" derives the default from bench engines)
    spark_route_bytes: int = 6 << 30  # SPARK_ROUTE_BYTES
    emr_application_id: str | None = None  # EMR_APPLICATION_ID
    # the state machine starting EMR jobs is SPARK_STATE_MACHINE_ARN (state_machine_arns)
    # observability
    stage: str = "local"  # STAGE
    metrics_namespace: str = DEFAULT_NAMESPACE  # METRICS_NAMESPACE
    in_lambda: bool = False  # AWS_LAMBDA_FUNCTION_NAME is set
    observability_stdout: bool = False  # OBSERVABILITY_STDOUT=1
    # outbound fetches (TAP uploads by URL): host:port pairs allowed although private
    outbound_allow: tuple[tuple[str, int], ...] = ()  # OUTBOUND_ALLOW
    # the portal's name resolver: a Sesame URL (the name is appended as the query, or put
    # where {name} stands), e.g. https://cds.unistra.fr/cgi-bin/nph-sesame/-oxp/SNV;
    # unset: names resolve from the table shipped with the package only
    sesame_url: str | None = None  # SESAME_URL
    # numba kernels compiled at image build (read-only on Lambda), copied once per
    # container into numba's writable cache folder
    numba_cache_seed: str | None = None  # NUMBA_CACHE_SEED
    numba_cache_dir: str | None = None  # NUMBA_CACHE_DIR (numba reads it too)
    # the API function never uses pandas, but pyarrow and DuckDB import it (when it is
    # installed, as the image's HATS step needs) to ask whether an object is a DataFrame:
    # ~170 ms of a cold start there. Set: importing pandas fails in this process.
    without_pandas: bool = False  # WITHOUT_PANDAS=1
    # the catalogue's empty bind files, written at image build (query/catalogue.py)
    catalogue_bind_seed: str | None = None  # CATALOGUE_BIND_SEED

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        suffix = "_STATE_MACHINE_ARN"
        return cls(
            archive_url=env.get("ARCHIVE_URL") or "./archive",
            archive_release=int(env["ARCHIVE_RELEASE"]) if env.get("ARCHIVE_RELEASE") else None,
            s3_endpoint_url=(env.get("S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3")
                             or env.get("AWS_ENDPOINT_URL") or None),
            aws_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            public_url=(env.get("PUBLIC_URL") or "").rstrip("/") or None,
            trusted_proxy=env.get("TRUSTED_PROXY") == "1",
            rate_limit=_float(env, "RATE_LIMIT", 50),
            rate_burst=_float(env, "RATE_BURST", 200),
            sync_slots=_int(env, "SYNC_SLOTS", 2 * (os.cpu_count() or 2)),
            tap_sync_timeout=_float(env, "TAP_SYNC_TIMEOUT", 25),
            tap_async_timeout=_float(env, "TAP_ASYNC_TIMEOUT", 600),
            tap_default_maxrec=_int(env, "TAP_DEFAULT_MAXREC", 100_000),
            tap_hard_maxrec=_int(env, "TAP_HARD_MAXREC", 5_000_000),
            sia_default_maxrec=_int(env, "SIA_DEFAULT_MAXREC", 10_000),
            sia_hard_maxrec=_int(env, "SIA_HARD_MAXREC", 1_000_000),
            sia_timeout=_float(env, "SIA_TIMEOUT", 25),
            datalink_max_ids=_int(env, "DATALINK_MAX_IDS", 10_000),
            jobs_table=env.get("JOBS_TABLE") or None,
            jobs_dir=env.get("JOBS_DIR") or None,
            state_machine_arns=tuple(sorted(
                (k[: -len(suffix)].lower(), v) for k, v in env.items()
                if k.endswith(suffix) and v)),
            catalogue_release_ttl=(float(env["CATALOGUE_RELEASE_TTL"])
                                   if env.get("CATALOGUE_RELEASE_TTL") else None),
            merge_every=int(env["MERGE_EVERY"]) if env.get("MERGE_EVERY") else None,
            ingest_batch_files=_int(env, "INGEST_BATCH_FILES", 250),
            ingest_copy_threshold=_int(env, "INGEST_COPY_THRESHOLD", 5 << 30),
            ingest_part_bytes=_int(env, "INGEST_PART_BYTES", 512 << 20),
            ingest_hash_chunk=_int(env, "INGEST_HASH_CHUNK", 8 << 20),
            ingest_workers=_int(env, "INGEST_WORKERS", 16),
            ingest_tmp_bytes=_int(env, "INGEST_TMP_BYTES", 512 << 20),
            retention_keep_last=_int(env, "RETENTION_KEEP_LAST", 0),
            retention_pinned=tuple(sorted({int(x) for x in env.get(
                "RETENTION_PINNED", "").replace(" ", "").split(",") if x})),
            retention_grace=_float(env, "RETENTION_GRACE_SECONDS", 3600),
            hats_publish=env.get("HATS_PUBLISH", "1") != "0",
            spark_master=env.get("SPARK_MASTER") or None,
            spark_route_bytes=_int(env, "SPARK_ROUTE_BYTES", 6 << 30),
            emr_application_id=env.get("EMR_APPLICATION_ID") or None,
            stage=env.get("STAGE", "local"),
            metrics_namespace=env.get("METRICS_NAMESPACE", DEFAULT_NAMESPACE),
            in_lambda=bool(env.get("AWS_LAMBDA_FUNCTION_NAME")),
            observability_stdout=env.get("OBSERVABILITY_STDOUT") == "1",
            outbound_allow=_host_ports(env.get("OUTBOUND_ALLOW", "")),
            sesame_url=(env.get("SESAME_URL") or "").strip() or None,
            numba_cache_seed=env.get("NUMBA_CACHE_SEED") or None,
            numba_cache_dir=env.get("NUMBA_CACHE_DIR") or None,
            without_pandas=env.get("WITHOUT_PANDAS") == "1",
            catalogue_bind_seed=env.get("CATALOGUE_BIND_SEED") or None,
        )

    def state_machine_arn(self, service: str) -> str | None:
        """The Step Functions state machine running `service`'s jobs, if any."""
        return dict(self.state_machine_arns).get(service.lower())


def _host_ports(text: str) -> tuple[tuple[str, int], ...]:
    out = set()
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if sep and host and port.isdigit():
            out.add((host.strip("[]").lower(), int(port)))
    return tuple(sorted(out))


_lock = threading.Lock()
_current: list[Settings] = []


def settings() -> Settings:
    """This process's settings, read from the environment on first use."""
    with _lock:
        if not _current:
            _current.append(Settings.from_env())
        return _current[0]


def reset() -> None:
    """Forget the settings: the next settings() reads the environment again."""
    with _lock:
        _current.clear()
