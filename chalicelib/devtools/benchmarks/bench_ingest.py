"""Ingest cost vs holdings: N weekly metadata-only deliveries appended one after another.

python -m chalicelib bench ingest [--weeks 100] [--images 21000] [--archive URL] [--out DIR]
python -m chalicelib bench ingest --s3 [--images 300] [--image-size 256]

Prints seconds per week at weeks 1, 10, 50, 100, the ratio week N / week 1, and the
commit-to-visible latency: how long after a release is written a warm catalogue (as a
Lambda container keeps) answers with the new rows.

--s3: one week of real FITS files in an S3 inbox (a moto server in its own process, so
the figures are this process's), ingested in place (ingest/streaming.py): time, bytes
read and peak memory per 1,000 images, for deliveries of half and all the images (flat
memory shows as equal peaks), uploaded plainly (checksums from S3's ETag) and as
multipart uploads (checksums hashed as they stream), then scaled to a 1.5 TB week.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from ...ingest.delivery import ingest
from ...lake.storage import Archive
from ...query.catalogue import Catalogue


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chalicelib bench ingest")
    p.add_argument("--weeks", type=int, default=100)
    p.add_argument("--images", type=int, default=21000)
    p.add_argument("--archive", help="folder or s3:// URL (default: a temp folder)")
    p.add_argument("--out", help="where deliveries are synthesised (default: temp)")
    p.add_argument("--s3", action="store_true", help="in-place ingest from an S3 inbox")
    p.add_argument("--image-size", type=int, default=256, help="--s3: pixels a side")
    return p.parse_args(argv)


def _visible_after_commit(cat: Catalogue, delivery: str) -> float:
    """Seconds from the end of ingest (release written) to a query that sees the rows."""
    t0 = time.perf_counter()
    while True:
        n = cat.query("SELECT COUNT(*) AS n FROM ivoa.obscore WHERE obs_id LIKE "
                      f"'{delivery}%'")["n"][0].as_py()
        if n:
            return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    from ..synth import synthesize

    a = _args(argv)
    if a.s3:
        from .bench_ingest_s3 import run  # deferred: only this mode starts moto

        run(300 if a.images == 21000 else a.images, a.image_size)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    out = Path(a.out) if a.out else tmp / "deliveries"
    archive = Archive.from_env(a.archive or str(tmp / "archive"))
    print(f"synthesising {a.weeks} weeks x {a.images} images (metadata only) ...", flush=True)
    t0 = time.perf_counter()
    folders = synthesize(out, a.weeks, images_per_week=a.images, metadata_only=True,
                         progress=True)
    print(f"synth: {time.perf_counter() - t0:.1f} s", flush=True)
    cat = Catalogue(archive)
    cat.query("SELECT 1")  # warm, as a Lambda container is
    per_week, latency = [], []
    for i, folder in enumerate(folders, 1):
        t0 = time.perf_counter()
        s = ingest(folder, archive)
        per_week.append(time.perf_counter() - t0)
        latency.append(_visible_after_commit(cat, folder.name))
        if i in (1, 10, 50, 100) or i == len(folders):
            print(f"week {i:4d}: ingest {per_week[-1]:6.2f} s ({s.rows['ivoa.obscore']} rows, "
                  f"release {s.release}); visible {latency[-1] * 1000:6.1f} ms after commit",
                  flush=True)
    first = sum(per_week[:3]) / min(3, len(per_week))
    last = sum(per_week[-3:]) / min(3, len(per_week))
    print(f"\nweeks: {len(folders)}, images/week: {a.images}")
    print(f"seconds/week: first {per_week[0]:.2f}, last {per_week[-1]:.2f}, "
          f"max {max(per_week):.2f}")
    print(f"ratio last/first (means of 3): {last / first:.2f}  (target <= 1.2)")
    print(f"commit-to-visible: median {sorted(latency)[len(latency) // 2] * 1000:.1f} ms, "
          f"max {max(latency) * 1000:.1f} ms")
    if not a.out:
        shutil.rmtree(tmp, ignore_errors=True)
