"""Table storage over the weeks with and without retention, measured then extrapolated.

python -m chalicelib bench retention [--weeks 24] [--images 3000] [--keep-last 4]

Two local archives get the same metadata-only weekly deliveries, merged into tiers as
on AWS (every 4 weeks, compacted past 6 tiers); one is vacuumed after every week
(the last N releases kept, no grace). Prints the bytes under tables/ of both each 4
weeks as measured, then a simulation of 100 weeks of 21,000 images (`simulate`: the
same merge schedule file by file, one week's tables as measured here, scaled by rows).
Files under data/ (the images, ~1.5 TB a week) are not affected by retention and are
left out.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ...ingest import maintenance, retention
from ...ingest.delivery import ingest
from ...lake.storage import Archive


def simulate(week_bytes: float, weeks: int, keep_last: int, merge_every: int = 4,
             max_tiers: int = 6, obscore_share: float = 0.6) -> dict[int, tuple]:
    """Table bytes without and with retention, file by file, following after_ingest:
    each week appends `week_bytes`; every `merge_every` weeks the new ObsCore rows are
    rewritten as a tier; past `max_tiers` everything is compacted (ObsCore into one
    tier, the CAOM tables optimized). A replaced file stays without retention; with it,
    it goes once `keep_last` releases (one per ingest, one per rewrite) have passed."""
    files: list[list[float]] = []  # [bytes, kind, release it died at or inf]
    release, tiers, out = 0, 0, {}
    inf = float("inf")
    for w in range(1, weeks + 1):
        release += 1
        files += [[week_bytes * obscore_share, 0, inf],
                  [week_bytes * (1 - obscore_share), 2, inf]]
        if w % merge_every == 0:
            release += 1
            tiers += 1
            if tiers > max_tiers:  # compact all: every live file is rewritten
                live = [f for f in files if f[2] == inf]
                for f in live:
                    f[2] = release
                files.append([sum(f[0] for f in live if f[1] in (0, 1)), 1, inf])
                files.append([sum(f[0] for f in live if f[1] == 2), 2, inf])
                tiers = 1
            else:  # the weekly ObsCore files since the last merge become a tier
                fresh = [f for f in files if f[1] == 0 and f[2] == inf]
                for f in fresh:
                    f[2] = release
                files.append([sum(f[0] for f in fresh), 1, inf])
        if w in (1, 10, 25, 50, 75, 100):
            out[w] = (sum(f[0] for f in files),
                      sum(f[0] for f in files if f[2] > release - keep_last))
    return out


def main(argv: list[str]) -> None:
    from ..synth import synthesize

    p = argparse.ArgumentParser(prog="python -m chalicelib bench retention")
    p.add_argument("--weeks", type=int, default=24)
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--keep-last", type=int, default=4)
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    try:
        folders = synthesize(tmp / "in", a.weeks, images_per_week=a.images,
                             metadata_only=True)
        plain, kept = Archive.from_env(str(tmp / "plain")), Archive.from_env(str(tmp / "kept"))
        policy = retention.Policy(keep_last=a.keep_last, grace=0)
        sizes = []
        for w, folder in enumerate(folders, 1):
            for arch in (plain, kept):
                ingest(folder, arch)
                maintenance.after_ingest(arch, 4)
            retention.vacuum(kept, policy)
            sizes.append((retention.storage_bytes(plain), retention.storage_bytes(kept)))
            if w == 1:
                share = retention.storage_bytes(plain, "tables/ivoa.obscore") / sizes[0][0]
            if w % 4 == 0 or w == len(folders):
                print(f"week {w:3d}: tables {sizes[-1][0] / 1e6:8.1f} MB without retention,"
                      f" {sizes[-1][1] / 1e6:8.1f} MB keeping the last {a.keep_last}",
                      flush=True)
        scale = 21000 / a.images
        week1 = sizes[0][0] * scale
        print(f"\nsimulated over 100 weeks of 21,000 images (a week's tables: "
              f"{week1 / 1e6:.1f} MB, week 1 as measured here x{scale:.1f} rows):")
        print(f"  (ObsCore {share:.0%} of a week's table bytes, the part merges rewrite)")
        for w, (no, yes) in simulate(week1, 100, a.keep_last, obscore_share=share).items():
            print(f"  week {w:3d}: {no / 1e9:6.2f} GB without retention, {yes / 1e9:6.2f} GB "
                  f"keeping the last {a.keep_last}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
