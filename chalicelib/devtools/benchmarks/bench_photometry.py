"""Spectrophotometry cost: time and bytes per image, and one source on N images end to end.

python -m chalicelib bench photometry [--image-size 512] [--images 24] [--n 400]
                                      [--workers 2] [--keep DIR]

Synthesizes --images real MEFs (--image-size px) into a temporary archive and ingests
them, then prints: catalogue planning time per source; forced-photometry time per image
for one worker, cold (headers read) and warm (layout cached), with bytes and requests per
image vs the file size; accuracy against truth.parquet (median deviation and pull std);
the pull std per S/N bin, near edges and in a crowded cluster on a test field
(synth.field) of the same image size; and a job of one source on --n
images end to end (plan + measure on --workers threads + assemble with plots). The N
images are hard links of the covering files under distinct keys, so every one is a cold
file for the range reader without N real files on disk. Local disk has no S3 latency:
bytes and requests per image are the figures that carry over to S3.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ...cutout.fitsrange import clear_caches
from ...ingest.delivery import ingest
from ...lake.storage import Archive
from ...photometry import engine, steps
from ...query.catalogue import Catalogue
from ..synth import synthesize


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chalicelib bench photometry")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--images", type=int, default=24, help="images synthesized (default 24)")
    p.add_argument("--n", type=int, default=400, help="images of the end-to-end source")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", help="build the archive in this folder (kept)")
    return p.parse_args(argv)


def _build(folder: Path, size: int, images: int) -> tuple[Archive, list[dict]]:
    t0 = time.perf_counter()
    synthesize(folder / "synth", weeks=1, image_size=size, images_per_week=images, seed=7)
    arch = Archive.from_env(str(folder / "archive"))
    for d in sorted(p for p in (folder / "synth").iterdir() if p.is_dir()):
        ingest(d, arch)
    print(f"synthesized and ingested {images} images of {size} px in "
          f"{time.perf_counter() - t0:.1f} s")
    return arch, pq.read_table(folder / "synth" / "truth.parquet").to_pylist()


def _plan(cat: Catalogue, truth: list[dict]) -> tuple[steps.Request, list[list]]:
    req = steps.parse({"point": [f"{r['ra']},{r['dec']}" for r in truth]})
    t0 = time.perf_counter()
    items, _ = steps.plan_items(cat, req)
    dt = time.perf_counter() - t0
    print(f"plan: {len(req.sources)} sources -> {len(items)} images in {dt:.2f} s "
          f"({1e3 * dt / len(req.sources):.1f} ms per source)")
    return req, items


def _per_image(arch: Archive, req: steps.Request, items: list[list], truth: list[dict]) -> None:
    """One worker: cold (empty layout cache) then warm, and the accuracy."""
    for label in ("cold", "warm"):
        if label == "cold":
            clear_caches()
        t0 = time.perf_counter()
        rows = steps.measure_items(arch, req.sources, items, req.half, threads=1)
        dt = (time.perf_counter() - t0) / len(items)
        nbytes = np.array([r["bytes_read"] for r in rows], float)
        size = np.mean([arch.size(r["key"]) for r in rows])
        print(f"measure {label}: {1e3 * dt:.2f} ms per image per worker, "
              f"{nbytes.mean() / 1e3:.1f} kB and {np.mean([r['requests'] for r in rows]):.1f}"
              f" requests per image, file {size / 1e6:.2f} MB ({100 * nbytes.mean() / size:.2f}"
              " % read)")
    rel, pull = [], []
    for r in rows:
        if r["flags"] & engine.SERIOUS_FLAGS or not math.isfinite(r["flux"]):
            continue
        src = truth[r["source"]]
        t = np.interp(r["lam"], src["wavelength_um"], src["flux_ujy"])
        rel.append(r["flux"] / t - 1)
        pull.append((r["flux"] - t) / r["flux_err"])
    print(f"accuracy: {len(rel)}/{len(rows)} clean, median |flux/truth - 1| "
          f"{100 * np.median(np.abs(rel)):.3f} %, pull std {np.std(pull):.2f}, "
          f"median pull {np.median(pull):+.2f}")


def _field_pulls(folder: Path, size: int) -> None:
    """Pulls on a field built for error bars: S/N 5 to > 20,000, edges, a cluster."""
    from ..synth.field import make_field

    images, k = (10, 40) if size <= 128 else (6, 140) if size <= 512 else (4, 150)
    field = make_field(folder / "field", size, images, k, seed=1,
                       flux_ujy=(15.0, 1e6 if size > 1000 else 4e5))
    arch = Archive.from_env(str(folder / "field"))
    truth = pq.read_table(folder / "field" / "field" / "truth.parquet").to_pylist()
    pull, snr, edge, crowd = [], [], [], []
    for key in field.keys:
        for i, src in enumerate(truth):
            m = engine.measure(arch, key, src["ra"], src["dec"])
            if m.flags & (engine.SERIOUS_FLAGS | engine.FLAG_OFF_IMAGE) or not \
                    math.isfinite(m.flux):
                continue
            t = float(np.interp(m.lam, src["wavelength_um"], src["flux_ujy"]))
            pull.append((m.flux - t) / m.flux_err)
            snr.append(t / m.flux_err)
            edge.append(bool(m.flags & engine.FLAG_EDGE))
            crowd.append(bool(field.crowded[i]))
    p, sn, e, c = (np.array(v) for v in (pull, snr, edge, crowd))
    parts = [f"all {np.std(p):.2f} (n={len(p)})"]
    for lo, hi in ((5, 50), (50, 500), (500, 5000), (5000, 20000), (20000, math.inf)):
        k = (sn >= lo) & (sn < hi)
        if k.sum():
            parts.append(f"S/N {lo}-{hi:g}: {np.std(p[k]):.2f} (n={k.sum()})")
    parts += [f"edge {np.std(p[e]):.2f} (n={e.sum()})", f"crowded {np.std(p[c]):.2f} "
              f"(n={c.sum()})"]
    print(f"pull std on a {size} px test field: " + "; ".join(parts))


def _links(arch: Archive, keys: list[str], n: int) -> list[str]:
    """n distinct keys, hard links cycling over the given files."""
    out = []
    for i in range(n):
        src = Path(arch.url) / keys[i % len(keys)]
        dst = Path(arch.url) / "bench" / f"img{i:05d}.fits"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.link(src, dst)
        out.append(f"bench/img{i:05d}.fits")
    return out


def _end_to_end(arch: Archive, cat: Catalogue, req: steps.Request, items: list[list],
                n: int, workers: int) -> None:
    counts = np.bincount([it[0] for it in items], minlength=len(req.sources))
    best = int(np.argmax(counts))
    src = req.sources[best]
    keys = [it[1] for it in items if it[0] == best]
    print(f"end to end: source {src['source_id']} is on {len(keys)} images; measuring it on "
          f"{n} (hard links), {workers} workers")
    one = steps.Request([dict(src, source_id=1)], req.half)
    t0 = time.perf_counter()
    steps.plan_items(cat, one)
    t_plan = time.perf_counter() - t0
    linked = [[0, k, f"bench-{i}", "bench"] for i, k in enumerate(_links(arch, keys, n))]
    clear_caches()
    t0 = time.perf_counter()
    batches = steps.batches_of(linked)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        rows = [r for b in pool.map(lambda b: steps.measure_items(
            arch, one.sources, b, one.half, threads=1), batches) for r in b]
    t_measure = time.perf_counter() - t0
    t0 = time.perf_counter()
    sizes: dict[str, int] = {}
    steps.assemble_results(one.sources, rows, {}, lambda k, b, m: sizes.__setitem__(k, len(b)))
    t_assemble = time.perf_counter() - t0
    total = t_plan + t_measure + t_assemble
    print(f"  plan {t_plan:.2f} s, measure {t_measure:.2f} s "
          f"({1e3 * t_measure / n:.1f} ms per image wall, {workers} workers), "
          f"assemble {t_assemble:.2f} s (result {sizes['result'] / 1e3:.0f} kB, plot "
          f"{sizes['plot-1'] / 1e3:.0f} kB); total {total:.2f} s for {n} images")
    print(f"  bytes read {sum(r['bytes_read'] for r in rows) / 1e6:.1f} MB for {n} images "
          f"({sum(r['bytes_read'] for r in rows) / n / 1e3:.0f} kB per image)")


def main(argv: list[str] | None = None) -> None:
    a = _args(argv or [])
    with tempfile.TemporaryDirectory(prefix="bench-phot-") as tmp:
        folder = Path(a.keep) if a.keep else Path(tmp)
        arch, truth = _build(folder, a.image_size, a.images)
        cat = Catalogue(arch)
        req, items = _plan(cat, truth)
        _per_image(arch, req, items, truth)
        _field_pulls(folder, a.image_size)
        _end_to_end(arch, cat, req, items, a.n, a.workers)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
