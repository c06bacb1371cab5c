"""Synthetic SPHEREx weekly deliveries: Level 2 MEFs, calibration files, CAOM records, truth.

Public API: synthesize() for a run of weeks, write_delivery() for one week.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import calibration, fitsimage, records
from .fitsimage import ImageMeta
from .records import ScienceImages
from .sources import METADATA_SOURCES_PER_ARRAY, SOURCES_PER_ARRAY, Truth, select, week_truth
from .survey import CAL, Week, WeekPlan, plan_week

__all__ = [
    "synthesize",
    "write_delivery",
    "plan_week",
    "Week",
    "DEFAULT_IMAGES_FITS",
    "DEFAULT_IMAGES_METADATA",
]

DEFAULT_IMAGES_METADATA = 21000  # a real week
DEFAULT_IMAGES_FITS = 24  # 4 exposures: 3 wide small slews + 1 deep, ~1.8 GB at 2040 px
MIN_IMAGE_SIZE = 32
WORKERS = min(4, os.cpu_count() or 1)


def synthesize(
    out: str | Path,
    weeks: int,
    start_week: str = "2025W35",
    image_size: int = 2040,
    images_per_week: int | None = None,
    metadata_only: bool = False,
    seed: int = 1,
    progress: bool = False,
) -> list[Path]:
    """Write `weeks` weekly delivery folders out/<week>/ and out/truth.parquet;
    return the delivery folders.

    images_per_week counts detector images (6 per exposure, rounded down to a multiple of 6);
    default 21000 with metadata_only (a real week), else 24 (4 exposures: wide and deep).
    truth.parquet lists every injected source (5 per exposure and array, >= 10 px apart);
    with metadata_only nothing is drawn and it keeps 1 per exposure and array (size).
    image_size keeps the 3.485 deg field: the pixel scale is 6.15" * 2040 / image_size.
    The first delivery also carries the full calibration set; later ones carry new darks.
    Deterministic given the arguments: a week's plan depends only on (week, images, seed).
    """
    if weeks < 1:
        raise ValueError("weeks must be >= 1")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = images_per_week or (DEFAULT_IMAGES_METADATA if metadata_only else DEFAULT_IMAGES_FITS)
    first = Week.parse(start_week)
    plans = [plan_week(first.shift(i), images, seed) for i in range(weeks)]
    truth = Truth.empty()
    per_array = METADATA_SOURCES_PER_ARRAY if metadata_only else SOURCES_PER_ARRAY
    k = per_array if metadata_only else 2 * per_array  # spares replace crowded candidates
    for plan in plans:
        truth = truth.concat(
            select(week_truth(plan, image_size, seed, k), truth, image_size, k, per_array)
        )
    folders = []
    bar = tqdm(total=weeks * len(plans[0].pa) * 6, desc="synth", unit="img", disable=not progress)
    for i, plan in enumerate(plans):
        folders.append(
            write_delivery(
                out / plan.week.name,
                plan,
                truth,
                image_size=image_size,
                metadata_only=metadata_only,
                first=i == 0,
                seed=seed,
                bar=bar,
            )
        )
    bar.close()
    records.write_truth(out / "truth.parquet", truth)
    return folders


def write_delivery(
    folder: str | Path,
    plan: WeekPlan,
    truth: Truth,
    image_size: int = 2040,
    metadata_only: bool = False,
    first: bool = True,
    seed: int = 1,
    bar: tqdm | None = None,
) -> Path:
    """Write one delivery folder (data/, four record tables, manifest.json) for a planned week.

    truth holds every source of the run (static sky: a deep field shows earlier weeks' sources).
    An existing folder is replaced only if it holds a manifest (i.e. it is ours).
    """
    folder = _fresh(Path(folder))
    week, n = plan.week, image_size
    processed = f"{week.monday + dt.timedelta(days=6)}T12:00:00"
    cal_files = calibration.delivered(week, first)
    files: list[dict] = []
    cal_sizes, cal_md5 = _write_cal(folder, cal_files, n, metadata_only, files)
    imgs = ScienceImages(plan, n)
    sizes, md5s = _write_science(folder, imgs, truth, processed, metadata_only, seed, files, bar)
    parts = [
        records.science_tables(imgs, sizes, md5s),
        records.cal_tables(cal_files, week, n, cal_sizes, cal_md5),
    ]
    tables = records.write_tables(folder, parts)
    collections = sorted(set(imgs.collection) | ({CAL} if cal_files else set()))
    records.write_manifest(folder, week, processed, collections, metadata_only, tables, files)
    return folder


def _fresh(folder: Path) -> Path:
    if folder.exists():
        if not (folder / "manifest.json").exists() and any(folder.iterdir()):
            raise FileExistsError(
                f"{folder} exists and is not a synthetic delivery; not overwriting"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _fake_md5(key: str) -> str:
    """Metadata-only checksum: deterministic, obviously not of real content."""
    return hashlib.md5(key.encode()).hexdigest()


def _store(folder: Path, key: str, make_hdus: Callable[[], list]) -> dict:
    """Build and write one file; runs in worker threads (numpy, hashlib and file writes
    release the GIL), so it only touches its own path."""
    path = folder / "data" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    size, digest = fitsimage.write_file(path, make_hdus())
    return {"key": key, "size": size, "md5": digest}


def _write_all(
    folder: Path, jobs: list[tuple[str, Callable[[], list]]], files: list[dict], bar: tqdm | None
) -> tuple[list[int], list[str]]:
    """Write files in parallel; results (and the manifest order) follow the job order."""
    sizes, md5s = [], []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for entry in pool.map(lambda job: _store(folder, *job), jobs):
            files.append(entry)
            sizes.append(entry["size"])
            md5s.append(entry["md5"])
            if bar is not None:
                bar.update(1)
    return sizes, md5s


def _write_cal(
    folder: Path, cal_files: list, n: int, metadata_only: bool, files: list[dict]
) -> tuple[list[int], list[str]]:
    if metadata_only:
        return [fitsimage.cal_size(f.product, n) for f in cal_files], [
            _fake_md5(f.key) for f in cal_files
        ]
    jobs = [
        (
            f.key,
            partial(fitsimage.cal_hdus, f.product, f.det, n, f.filename, f"{f.processed}T00:00:00"),
        )
        for f in cal_files
    ]
    return _write_all(folder, jobs, files, None)


def image_metas(imgs: ScienceImages, processed: str) -> list[ImageMeta]:
    """Header inputs of every science image of a week."""
    plan, week = imgs.plan, imgs.plan.week
    centre = imgs.centre()
    cals = {d: calibration.in_use(week, d) for d in range(1, 7)}
    return [
        ImageMeta(
            n=imgs.n,
            det=d,
            obs_id=o,
            expidn=int(plan.expidn[e]),
            crval=(float(c[0]), float(c[1])),
            pa=float(plan.pa[e]),
            mjd_beg=float(plan.mjd_beg[e]),
            processed=processed,
            history=[(f.product, f.filename) for f in cals[d]],
        )
        for e, d, o, c in zip(imgs.exp.tolist(), imgs.det.tolist(), imgs.obs_id, centre)
    ]


def _science_hdus(meta: ImageMeta, truth: Truth, rng_key: list[int]) -> list:
    rendered = fitsimage.render(meta, truth, np.random.default_rng(rng_key))
    return fitsimage.science_hdus(meta, rendered)


def _write_science(
    folder: Path,
    imgs: ScienceImages,
    truth: Truth,
    processed: str,
    metadata_only: bool,
    seed: int,
    files: list[dict],
    bar: tqdm | None,
) -> tuple[np.ndarray, list[str]]:
    keys = imgs.keys
    if metadata_only:
        size = fitsimage.science_size(imgs.n, len(calibration.PRODUCTS))
        if bar is not None:
            bar.update(len(keys))
        return np.full(len(keys), size, dtype=np.int64), [_fake_md5(k) for k in keys]
    week = imgs.plan.week
    jobs = [
        (key, partial(_science_hdus, meta, truth, [seed, week.year, week.num, 3, e, meta.det]))
        for e, meta, key in zip(imgs.exp.tolist(), image_metas(imgs, processed), keys)
    ]
    sizes, md5s = _write_all(folder, jobs, files, bar)
    return np.array(sizes, dtype=np.int64), md5s
