"""A billion ObsCore rows on paper: does the Delta-statistics pruning still pick a few
files per cone? A simulation of the table's log at that size, planned by the real code.

python -m chalicelib bench billion [--rows 1e9] [--weeks 104] [--cones 300] [--out DIR]

No data is written (the files are empty placeholders): only the Delta log of
ivoa.obscore as the archive would hold it at the worst point of the merge cycle (one
big compacted tier, MAX_TIERS - 1 merge tiers of MERGE_EVERY weeks, MERGE_EVERY - 1
weeks not merged yet), and a release naming it. Each file is an add action cloned
from one the real writer wrote (a small real archive is built first: every column's
min/max/nullCount, as delta.dataSkippingNumIndexedCols=-1 writes them), with its own
row count and its own ranges of hpx, s_ra, s_dec and s_rmax:

- centres drawn over the sky (uniform, plus the ecliptic-pole deep fields SPHEREx
  revisits), sorted by hpx (order 12, nested) and cut into files of equal rows; a
  file's statistics are the min/max of its centres (200 drawn per file);
- tier files of 64 MB (maintenance.SPATIAL_FILE_SIZE); weekly files of 128 MB (ingest's
  target size): ingest sorts a delivery by hpx too, so at ~10 M rows a week each weekly
  file is a run of the HEALPix order as well (a small week is one whole-sky file).

Then the real catalogue (query.catalogue.Catalogue: our Delta log reader, FileStats,
box_sql with the release's widest footprint) plans cones at random positions, and the
benchmark prints files picked per cone, planning time (cold: log replay; warm: per
cone) and the log's size. Sizes come from the measured 10 M-row tier (README: 3.4 GB in
52 files, ~340 bytes a row).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import deltalake
import numpy as np
from astropy.coordinates import Latitude, Longitude
from cdshealpix.nested import lonlat_to_healpix

from ...ingest import maintenance
from ...ingest.delivery import ingest
from ...lake import releases
from ...lake.storage import Archive
from ...query.catalogue import Catalogue
from ..synth import synthesize

BYTES_PER_ROW = 3.4e9 / 10_000_248  # the 10 M-row tier of README ("TAP at scale")
WEEKLY_FILE = 128 << 20  # ingest's target file size
DEEP_FRACTION = 0.1  # rows in the deep fields (ecliptic poles, ~3 deg radius)
SAMPLES_PER_FILE = 200
NEP, SEP = (270.0, 66.56), (90.0, -66.56)
# EMR Serverless list prices (us-east-1, 2026): per vCPU-hour and GB-hour
VCPU_HOUR, GB_HOUR = 0.052624, 0.0057785


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chalicelib bench billion")
    p.add_argument("--rows", type=float, default=1e9)
    p.add_argument("--weeks", type=int, default=104, help="weeks of survey holding them")
    p.add_argument("--cones", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="where the simulated archive goes (default: temp, removed)")
    return p.parse_args(argv)


def _centres(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Image centres: uniform on the sphere, a tenth in the two deep fields."""
    deep = rng.random(n) < DEEP_FRACTION
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    k = int(deep.sum())
    pole = rng.random(k) < 0.5
    r = 3.0 * np.sqrt(rng.random(k))
    ang = rng.uniform(0, 2 * np.pi, k)
    pdec = np.where(pole, NEP[1], SEP[1])
    pra = np.where(pole, NEP[0], SEP[0])
    ddec = pdec + r * np.sin(ang)
    dra = pra + r * np.cos(ang) / np.cos(np.radians(ddec))
    ra[deep], dec[deep] = dra % 360, np.clip(ddec, -90, 90)
    return ra, dec


def _template(work: Path) -> tuple[list[dict], dict]:
    """A small real archive: its first obscore commit's protocol/metaData actions and
    one add action of a file holding images (the stats a tier file has too)."""
    syn, arch = work / "syn", Archive(str(work / "template"))
    synthesize(syn, weeks=1, images_per_week=60, metadata_only=True, seed=3)
    for d in sorted(p for p in syn.iterdir() if p.is_dir()):
        ingest(d, arch)
    log = work / "template" / "tables" / "ivoa.obscore" / "_delta_log"
    head = [a for a in map(json.loads, (log / f"{0:020d}.json").read_text().splitlines())
            if "protocol" in a or "metaData" in a]
    adds = [a["add"] for f in sorted(log.glob("*.json"))
            for a in map(json.loads, f.read_text().splitlines()) if "add" in a]
    images = [a for a in adds if json.loads(a["stats"])["nullCount"].get("s_ra", 1) == 0]
    return head, images[-1]


def _add(template: dict, coll: str, delivery: str, rows: int, size: int,
         ranges: dict[str, tuple[float, float]], run: str) -> dict:
    stats = json.loads(template["stats"])
    stats["numRecords"] = rows
    for col, (lo, hi) in ranges.items():
        stats["minValues"][col], stats["maxValues"][col] = lo, hi
    for k in ("minValues", "maxValues"):
        stats[k]["ingest_id"] = run
    stats["nullCount"] = {c: 0 if v == 0 else rows for c, v in stats["nullCount"].items()}
    return {"add": {**template, "path": f"obs_collection={coll}/delivery={delivery}/"
                    f"part-00000-{uuid.uuid4()}-c000.parquet",
                    "partitionValues": {"obs_collection": coll, "delivery": delivery},
                    "size": size, "stats": json.dumps(stats, separators=(",", ":"))}}


def _runs(rng, rows: int, run: str, template: dict, coll: str, delivery: str,
          file_size: int) -> list[dict]:
    """Rows sorted by hpx, cut into files of equal rows: each file a run of the HEALPix
    order (a tier, and a weekly delivery too: ingest sorts it by hpx before writing)."""
    rows_per_file = int(file_size / BYTES_PER_ROW)
    files = max(1, -(-rows // rows_per_file))
    ra, dec = _centres(rng, files * SAMPLES_PER_FILE)
    hpx = lonlat_to_healpix(Longitude(ra, "deg"), Latitude(dec, "deg"), 12).astype(np.int64)
    order = np.argsort(hpx, kind="stable")
    ra, dec, hpx = ra[order], dec[order], hpx[order]
    out = []
    for i, s in enumerate(np.array_split(np.arange(len(hpx)), files)):
        n = rows_per_file if i < files - 1 else rows - rows_per_file * (files - 1)
        out.append(_add(template, coll, delivery, n, int(n * BYTES_PER_ROW), {
            "hpx": (int(hpx[s[0]]), int(hpx[s[-1]])),
            "s_ra": (float(ra[s].min()), float(ra[s].max())),
            "s_dec": (float(dec[s].min()), float(dec[s].max())),
            "s_rmax": (2.44, 2.47)}, run))
    return out


def _tier(rng, rows: int, template: dict, coll: str) -> list[dict]:
    return _runs(rng, rows, "tier", template, coll, f"_compacted-{uuid.uuid4().hex[:8]}",
                 maintenance.SPATIAL_FILE_SIZE)


def simulate(root: Path, rows: int, weeks: int, seed: int) -> dict:
    """Write the simulated archive's obscore log and release; returns its layout."""
    rng = np.random.default_rng(seed)
    head, template = _template(root / "work")
    coll = template["partitionValues"]["obs_collection"]
    every, tiers = maintenance.MERGE_EVERY, maintenance.MAX_TIERS
    per_week = rows // weeks
    unmerged, merged = every - 1, (tiers - 1) * every
    big = rows - per_week * (unmerged + merged)
    commits = [head]
    commits.append(_tier(rng, big, template, coll))
    for _ in range(tiers - 1):
        commits.append(_tier(rng, per_week * every, template, coll))
    runs = {}
    for w in range(unmerged):
        delivery, run = f"2027W{w + 1:02d}", uuid.uuid4().hex[:12]
        runs[delivery] = run
        commits.append(_runs(rng, per_week, run, template, coll, delivery, WEEKLY_FILE))
    log = root / "archive" / "tables" / "ivoa.obscore" / "_delta_log"
    log.mkdir(parents=True)
    for v, actions in enumerate(commits):
        (log / f"{v:020d}.json").write_text(
            "".join(json.dumps(a, separators=(",", ":")) + "\n" for a in actions))
    version = len(commits) - 1
    # empty placeholders: DuckDB checks that the files a view names exist (it binds from
    # the catalogue's schema file and opens none of them while planning)
    table = root / "archive" / "tables" / "ivoa.obscore"
    for c in commits[1:]:
        for x in c:
            (table / x["add"]["path"]).parent.mkdir(parents=True, exist_ok=True)
            (table / x["add"]["path"]).touch()
    arch = Archive(str(root / "archive"))
    dt = deltalake.DeltaTable(str(root / "archive" / "tables" / "ivoa.obscore"))
    dt.create_checkpoint()  # what the writer leaves every 10 commits
    arch.write_bytes(f"{releases.PREFIX}/00000001.json", releases.Release(
        1, runs, {"ivoa.obscore": version}, "2027-01-01T00:00:00+00:00").to_json())
    shutil.rmtree(root / "work")
    sizes = {f.name: f.stat().st_size for f in log.iterdir() if f.is_file()}
    return {"commits": commits[1:], "version": version, "log_bytes": sizes,
            "tier_files": [len(c) for c in commits[1:tiers + 1]],
            "weekly_files": [len(c) for c in commits[tiers + 1:]], "per_week": per_week}


def _cones(rng, n: int) -> list[tuple[float, float]]:
    ra, dec = _centres(rng, n)
    return list(zip(ra.tolist(), dec.tolist()))


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main(argv: list[str]) -> None:
    a = _args(argv)
    rows = int(a.rows)
    root = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="billion-"))
    try:
        t0 = time.perf_counter()
        sim = simulate(root, rows, a.weeks, a.seed)
        adds = [x["add"] for c in sim["commits"] for x in c]
        total = sum(x["size"] for x in adds)
        print(f"simulated ivoa.obscore: {rows:,} rows, {len(adds):,} files, "
              f"{total / 1e9:,.0f} GB ({time.perf_counter() - t0:.1f} s to write the log)")
        print(f"  tiers (files each): {sim['tier_files']}; weeks not merged yet "
              f"(files each): {sim['weekly_files']}; {sim['per_week']:,} rows a week")
        log = sim["log_bytes"]
        ckpt = sum(v for k, v in log.items() if "checkpoint" in k)
        print(f"  Delta log: {sum(log.values()) / 1e6:.1f} MB ({len(log)} objects; "
              f"checkpoint {ckpt / 1e6:.1f} MB; "
              f"{sum(log.values()) / len(adds):,.0f} bytes per file in the JSON+checkpoint)")

        arch = Archive(str(root / "archive"))
        t = time.perf_counter()
        cat = Catalogue(arch, release=1)
        stats = cat.stats("ivoa.obscore")
        cold = time.perf_counter() - t
        print(f"cold planning (release, log replay from the checkpoint, FileStats of "
              f"{len(stats.uris):,} files): {cold * 1e3:.0f} ms")
        rng = np.random.default_rng(a.seed + 1)
        cones = _cones(rng, a.cones)
        print(f"{a.cones} cones at random positions (a tenth in the deep fields), files "
              "the catalogue names for DuckDB to open (box_sql, footprint=True):")
        print("| radius | files median | p95 | max | tier + weekly files (median) | "
              "MB in those files, an upper bound (median) | plan ms median | p95 |")
        print("|---|---|---|---|---|---|---|---|")
        size = {x["path"].rsplit("/", 1)[-1]: x["size"] for x in adds}
        for radius in (0.0, 0.1, 1.0):
            picked, tier, mb, ms = [], [], [], []
            for ra, dec in cones:
                t = time.perf_counter()
                box = cat.box_sql("s_ra", "s_dec", ra, dec, radius, True, "ivoa.obscore")
                ms.append((time.perf_counter() - t) * 1e3)
                files = list(box.files) if box.files is not None else list(stats.uris)
                picked.append(len(files))
                tier.append(sum("_compacted" in f for f in files))
                mb.append(sum(size[f.rsplit("/", 1)[-1]] for f in files) / 1e6)
            print(f"| {radius:g} deg | {statistics.median(picked):.0f} | "
                  f"{_pct(picked, 95):.0f} | {max(picked)} | "
                  f"{statistics.median(tier):.0f} + "
                  f"{statistics.median(np.subtract(picked, tier)):.0f} | "
                  f"{statistics.median(mb):,.0f} | "
                  f"{statistics.median(ms):.2f} | {_pct(ms, 95):.2f} |")
        weekly = sum(sim["weekly_files"])
        print(f"(tier files: {sum(sim['tier_files']):,}; files of the weeks not merged "
              f"yet: {weekly})")
        # Spark full scan on EMR Serverless: one pass over every byte of the table
        tb = total / 1e12
        vcpu_h = tb * 1e6 / 100 / 3600  # ~100 MB/s of Parquet decoded per vCPU
        cost = vcpu_h * VCPU_HOUR + vcpu_h * 4 * GB_HOUR  # 4 GB per vCPU
        print(f"full scan on EMR Serverless: {tb:.2f} TB, ~{vcpu_h:,.0f} vCPU-hours at "
              f"100 MB/s per vCPU, ~${cost:,.2f} ({cost / tb:,.2f} $/TB scanned); "
              "a column-pruned aggregate reads ~10 % of that")
    finally:
        if not a.out:
            shutil.rmtree(root, ignore_errors=True)
