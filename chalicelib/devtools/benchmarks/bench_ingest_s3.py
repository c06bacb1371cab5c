"""`bench ingest --s3`: a week ingested where it lies in S3 (see bench_ingest.py)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from ... import config
from ...cutout.fitsrange import hdu_names
from ...ingest import streaming
from ...lake.storage import Archive
from ..loopback import free_port

WEEK_IMAGES = 21_000
WEEK_BYTES = 1.5e12


def start_moto(tmp: Path) -> tuple[subprocess.Popen, str]:
    """A moto server in its own process on a free loopback port (its memory and /tmp are
    not ours); returns the process (the caller stops it) and its endpoint once it answers."""
    import boto3  # deferred: AWS path only

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(tmp)})
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for _ in range(300):
        try:
            client.list_buckets()
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    return proc, endpoint


def _upload(s3, bucket: str, folder: Path, prefix: str, multipart: bool) -> None:
    from boto3.s3.transfer import TransferConfig  # deferred: AWS path only

    cfg = TransferConfig(multipart_threshold=(256 << 10) if multipart else 1 << 40,
                         multipart_chunksize=5 << 20)
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            s3.upload_file(str(p), bucket, prefix + p.relative_to(folder).as_posix(),
                           Config=cfg)
    s3.upload_file(str(folder / "manifest.json"), bucket, prefix + "manifest.json")


def _one(s3, folder: Path, n: int, multipart: bool) -> dict:
    tag = f"{n}-{'mp' if multipart else 'put'}-{os.urandom(3).hex()}"
    s3.create_bucket(Bucket=f"inbox-{tag}")
    s3.create_bucket(Bucket=f"archive-{tag}")
    _upload(s3, f"inbox-{tag}", folder, "w/", multipart)
    src, arch = Archive(f"s3://inbox-{tag}/w"), Archive(f"s3://archive-{tag}")
    manifest = json.loads((folder / "manifest.json").read_text())
    images = sum("/level2/" in f["key"] for f in manifest["files"])
    total = sum(f["size"] for f in manifest["files"])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    summary, stats = streaming.ingest_in_place(src, arch, hdu_names)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"images": images, "files": stats.files, "bytes": total, "seconds": seconds,
            "files_s": summary.seconds.get("files", 0.0), "read": stats.bytes_read,
            "peak": peak, "rss_growth": (rss1 - rss0) * 1024, "checksums": stats.checksums,
            "copies": stats.copies}


def run(images: int, size: int) -> None:
    from ..synth import synthesize

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-s3-"))
    proc, endpoint = start_moto(tmp / "moto")
    env = {"S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "INGEST_BATCH_FILES": "250"}
    os.environ.update(env)
    config.reset()
    try:
        import boto3  # deferred: AWS path only

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        rows = []
        for n in (images // 2, images):
            [folder] = synthesize(tmp / f"in-{n}", 1, image_size=size, images_per_week=n)
            if not rows:  # warm, as a Lambda container is: imports, clients, templates
                _one(s3, Path(folder), 0, False)
            for multipart in (False, True):
                r = _one(s3, Path(folder), n, multipart)
                rows.append((n, multipart, r))
                print(f"{r['images']:5d} images, {r['files']:5d} files, "
                      f"{r['bytes'] / 1e6:8.1f} MB, {'multipart' if multipart else 'plain  '}"
                      f" uploads: {r['seconds']:6.1f} s, read {r['read'] / 1e6:8.1f} MB, "
                      f"peak traced {r['peak'] / 1e6:5.1f} MB, RSS growth "
                      f"{r['rss_growth'] / 1e6:5.1f} MB; checksums {r['checksums']}",
                      flush=True)
            shutil.rmtree(tmp / f"in-{n}", ignore_errors=True)
        print("\nper 1,000 images (full delivery), and a 1.5 TB week of 21,000 images:")
        for n, multipart, r in rows:
            if n != images:
                continue
            k = 1000 / r["images"]
            # headers cost per file, not per byte: full-size files read as many header
            # bytes as these small ones; a streamed checksum reads every byte on top
            streamed = r["checksums"].get("streamed", 0) / r["files"]
            headers = (r["read"] - streamed * r["bytes"]) / r["files"]
            read_week = headers * WEEK_IMAGES + streamed * WEEK_BYTES
            print(f"  {'multipart' if multipart else 'plain'} uploads: {r['seconds'] * k:.1f} s,"
                  f" {r['read'] * k / 1e6:.1f} MB read, peak {r['peak'] / 1e6:.1f} MB per "
                  f"1,000 images; a week reads {read_week / 1e9:,.1f} GB "
                  f"({read_week / WEEK_BYTES:.2%} of its bytes) and takes "
                  f"{r['seconds'] * k * WEEK_IMAGES / 1000 / 60:.0f} min in one process here,"
                  f" {r['seconds'] * k * WEEK_IMAGES / 1000 / 40 / 60:.1f} min over the "
                  "Map's 40 batches at once")
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
