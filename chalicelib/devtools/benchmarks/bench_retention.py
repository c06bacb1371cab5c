"""Table storage over the weeks with and without retention, measured then extrapolated.

python -m chalicelib bench retention [--weeks 24] [--images 3000] [--keep-last 4]

Two local archives get the same metadata-only weekly deliveries, merged into tiers as
on AWS (every 4 weeks, compacted past 6 tiers); one is vacuumed after every week
(the last N releases kept, no grace). Prints the bytes under tables/ of both each 4
weeks, then extrapolates to 100 weeks of 21,000 images: linear in rows for the kept
files; without retention, every rewrite stays, so the growth is fitted (least squares
on a + b*w + c*w^2) over the measured weeks. Files under data/ (the images, ~1.5 TB a
week) are not affected by retention and are left out.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ...ingest import maintenance, retention
from ...ingest.delivery import ingest
from ...lake.storage import Archive


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
            if w % 4 == 0 or w == len(folders):
                print(f"week {w:3d}: tables {sizes[-1][0] / 1e6:8.1f} MB without retention,"
                      f" {sizes[-1][1] / 1e6:8.1f} MB keeping the last {a.keep_last}",
                      flush=True)
        weeks = np.arange(1, len(sizes) + 1)
        scale = 21000 / a.images
        without = np.polyfit(weeks, [s[0] for s in sizes], 2)
        with_ = np.polyfit(weeks, [s[1] for s in sizes], 1)
        at = 100
        print(f"\nextrapolated to {at} weeks of 21,000 images (x{scale:.1f} rows): "
              f"{np.polyval(without, at) * scale / 1e9:.2f} GB of table files without "
              f"retention, {np.polyval(with_, at) * scale / 1e9:.2f} GB keeping the last "
              f"{a.keep_last} releases")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
