"""Cutout cost vs downloading: range reads from a full-size MEF on moto's S3 server.

python -m chalicelib bench cutout [--size 0.1] [--batch 20] [--image-size 2040]
                                  [--workers 16] [--endpoint URL]

Builds one synthetic Level 2 MEF (chalicelib.synth, 2040 x 2040 by default, ~72 MB),
stores it under --batch keys on a moto S3 server bound to 127.0.0.1 (or --endpoint), and
prints side by side: a whole-file download, single cutouts (cold, cold for a file of a
known shape, warm; psf all / zone / none) and a batch over every key, each with bytes
read and requests vs the minimum (rows spanned x image HDUs + PSF/table kept + headers)
and vs the file, and wall times. Targets: bytes <= 1.5 x minimum, >= 10 x less than the
file.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from dataclasses import dataclass

import numpy as np

from ...cutout import Region, cutout, cutout_many, parse_archive_params
from ...cutout.fitsrange import clear_caches
from ...lake.storage import Archive


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chalicelib bench cutout")
    p.add_argument("--size", type=float, default=0.1, help="cutout size, deg (default 0.1)")
    p.add_argument("--batch", type=int, default=20, help="images in the batch (default 20)")
    p.add_argument("--image-size", type=int, default=2040)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--endpoint", help="S3 endpoint to use instead of a local moto server")
    return p.parse_args(argv)


@dataclass
class Row:
    name: str
    bytes_read: int
    minimum: int | None
    requests: int
    trips: int | None
    file_bytes: int
    seconds: float
    out_bytes: int | None = None

    def line(self) -> str:
        ratio = f"{self.bytes_read / self.minimum:5.2f}" if self.minimum else "    -"
        less = self.file_bytes / max(self.bytes_read, 1)
        trips = "-" if self.trips is None else str(self.trips)
        out = "-" if self.out_bytes is None else f"{self.out_bytes:,}"
        minimum = f"{self.minimum:,}" if self.minimum else "-"
        return (f"{self.name:<38} {self.bytes_read:>12,} {minimum:>12} {ratio:>6} "
                f"{self.requests:>6} {trips:>5} {less:>9.1f}x {self.seconds * 1000:>9.1f} "
                f"{out:>11}")


HEADER = (f"{'scenario':<38} {'bytes read':>12} {'minimum':>12} {'ratio':>6} {'reqs':>6} "
          f"{'trips':>5} {'vs file':>10} {'wall ms':>9} {'output B':>11}")


def _mef(n: int) -> bytes:
    """One Level 2 MEF from chalicelib.synth (zodi, noise, defects, PSF cube, WCS-WAVE)."""
    from ..synth import fitsimage as fi
    from ..synth.sources import Truth

    meta = fi.ImageMeta(n=n, det=2, obs_id="2025W43_1A_0516_1", expidn=1,
                        crval=(210.80227, 54.34895), pa=30.0, mjd_beg=60970.0,
                        processed="2025-10-26T12:00:00",
                        history=[("gain", "gain_D2_spx_cal-v1-2025-100.fits")] * 9)
    rendered = fi.render(meta, Truth.empty(), np.random.default_rng(1))
    return fi.file_bytes(fi.science_hdus(meta, rendered))


def _moto(endpoint: str | None):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if endpoint:
        os.environ["S3_ENDPOINT_URL"] = endpoint
        return None
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["S3_ENDPOINT_URL"] = f"http://{host}:{port}"
    return server


def _counter(archive: Archive) -> list[str]:
    """Every S3 request botocore sends for this archive (to check our own counts)."""
    calls: list[str] = []
    fs = archive.fs
    fs.connect()
    fs.s3.meta.events.register("before-send.s3", lambda request, **_: calls.append(
        request.method))
    return calls


def _single(archive: Archive, key: str, region: Region, size: int, name: str,
            **kw) -> tuple[Row, object]:
    r = cutout(archive, key, region, **kw)
    s = r.stats
    return Row(name, s.bytes_read, s.minimum_bytes, s.requests, s.round_trips, size,
               s.seconds, s.output_bytes), r


def _batch(archive: Archive, keys: list[str], region: Region, size: int, name: str,
           workers: int, psf: str = "all") -> Row:
    t0 = time.perf_counter()
    results = cutout_many(archive, [(k, region) for k in keys], workers=workers, gzip=True,
                          psf=psf)
    seconds = time.perf_counter() - t0
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise errors[0]
    st = [r.stats for r in results]
    return Row(f"{name} ({len(keys)} images)", sum(s.bytes_read for s in st),
               sum(s.minimum_bytes for s in st), sum(s.requests for s in st),
               max(s.round_trips for s in st), size * len(keys), seconds,
               sum(s.output_bytes for s in st))


def main(argv: list[str]) -> None:
    a = _args(argv)
    server = _moto(a.endpoint)
    try:
        _run(a)
    finally:
        if server is not None:
            server.stop()


def _run(a: argparse.Namespace) -> None:
    import boto3

    t0 = time.perf_counter()
    data = _mef(a.image_size)
    print(f"synthetic {a.image_size} x {a.image_size} MEF: {len(data):,} bytes "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    bucket = f"bench-cutout-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    archive = Archive(f"s3://{bucket}/archive")
    keys = [f"data/qr2/level2/2025W43/l2b-v20-2025-299/2/level2_2025W43_1A_{i:04d}_1D2_spx_"
            f"l2b-v20-2025-299.fits" for i in range(max(a.batch, 3))]
    t0 = time.perf_counter()
    for k in keys:
        archive.write_bytes(k, data)
    print(f"uploaded {len(keys)} copies to {os.environ['S3_ENDPOINT_URL']} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    calls = _counter(archive)
    size = len(data)
    region = parse_archive_params("210.80227,54.34895", f"{a.size}")
    rows = _scenarios(archive, keys, region, size, calls)
    clear_caches()
    rows.append(_batch(archive, keys[:a.batch], region, size, "batch cold, gzip", a.workers))
    rows.append(_batch(archive, keys[:a.batch], region, size, "batch warm, gzip", a.workers))
    rows.append(_batch(archive, keys[:a.batch], region, size, "batch warm, zone, gzip",
                       a.workers, psf="zone"))
    _report(rows, a, calls)


def _scenarios(archive: Archive, keys: list[str], region: Region, size: int,
               calls: list[str]) -> list[Row]:
    calls.clear()
    t0 = time.perf_counter()
    whole = archive.read_bytes(keys[0])
    rows = [Row("whole-file download", len(whole), None, len(calls), None, size,
                time.perf_counter() - t0)]
    clear_caches()
    row, r = _single(archive, keys[0], region, size, "cold, psf=all (archive default)")
    print(f"cutout: {r.shape[1]} x {r.shape[0]} px at parent [{r.box.x0}:{r.box.x1}, "
          f"{r.box.y0}:{r.box.y1}]", flush=True)
    rows.append(row)
    for i, psf in enumerate(("all", "zone", "none"), start=1):
        rows.append(_single(archive, keys[i % len(keys)], region, size,
                            f"cold, known shape, psf={psf}", psf=psf)[0])
    for psf in ("all", "zone", "none"):
        rows.append(_single(archive, keys[0], region, size, f"warm, psf={psf}", psf=psf)[0])
    rows.append(_single(archive, keys[0], region, size, "warm, psf=all, gzip", gzip=True)[0])
    return rows


def _report(rows: list[Row], a: argparse.Namespace, calls: list[str]) -> None:
    print()
    print(HEADER)
    for row in rows:
        print(row.line())
    cut = [r for r in rows if r.minimum]
    worst = max(r.bytes_read / r.minimum for r in cut)
    least = min(r.file_bytes / r.bytes_read for r in cut)
    print()
    print(f"bytes / minimum: worst {worst:.3f} (target <= 1.5): "
          f"{'PASS' if worst <= 1.5 else 'FAIL'}")
    print(f"file / bytes read: least {least:.1f}x (target >= 10x): "
          f"{'PASS' if least >= 10 else 'FAIL'}")
    print(f"S3 requests seen by botocore: {len(calls)}; counted by the engine: "
          f"{sum(r.requests for r in rows)}")
