"""Unmerged weeks against the merged tier, side by side in one process.

python -m chalicelib bench weeks --archive DIR [--unmerged N] [--merged M] [--positions K]
    [--repeat 9]

Two catalogues over the same archive: release N (weeks not yet merged) and release M (the
same rows compacted into the sky-sorted tier; default the latest), the queries and
positions of `bench peers`, row sets checked identical, alternating runs, medians. Prints
the candidates the exact test was handed and the ratio unmerged/merged (goal <= 1.3).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv: list[str]) -> None:
    from ...geometry import sky
    from ...lake.storage import Archive
    from ...query.catalogue import Catalogue
    from .bench_peers import _candidates, cases, ours, positions

    p = argparse.ArgumentParser(prog="python -m chalicelib bench weeks")
    p.add_argument("--archive", required=True, help="an archive with both releases")
    p.add_argument("--unmerged", type=int, required=True, help="release before compaction")
    p.add_argument("--merged", type=int, default=None, help="release after (latest)")
    p.add_argument("--positions", type=int, default=2)
    p.add_argument("--repeat", type=int, default=9)
    a = p.parse_args(argv)
    arch = Archive.from_env(a.archive)
    cats = {"unmerged": Catalogue(arch, release=a.unmerged),
            "merged": Catalogue(arch, release=a.merged)}
    sky.kernels_ready(wait=True)
    for k, c in cats.items():
        print(f"{k}: release {c.release.number}, {len(c.stats('ivoa.obscore').uris)} files")
    print("| query | field | rows | candidates unmerged | candidates merged | unmerged ms | "
          "merged ms | unmerged/merged |\n|---|---|---|---|---|---|---|---|")
    failed = 0
    for ra, dec, field in positions(cats["merged"], a.positions):
        for c in cases(ra, dec, field):
            rows = {k: set(ours(cat, c.adql)["obs_publisher_did"].to_pylist())
                    for k, cat in cats.items()}
            if rows["unmerged"] != rows["merged"]:
                failed += 1
                print(f"MISMATCH {c.query} {field}", flush=True)
            for cat in cats.values():  # the files the first cone met are indexed now
                ours(cat, c.adql)
            cand = {k: _candidates(cat, c.adql) for k, cat in cats.items()}
            ts = {k: [] for k in cats}
            for _ in range(a.repeat):
                for k, cat in cats.items():
                    t0 = time.perf_counter()
                    ours(cat, c.adql)
                    ts[k].append(time.perf_counter() - t0)
            m = {k: statistics.median(v) * 1000 for k, v in ts.items()}
            print(f"| {c.query} | {field} | {len(rows['merged']):,} | {cand['unmerged'] or '-'} "
                  f"| {cand['merged'] or '-'} | {m['unmerged']:.1f} | {m['merged']:.1f} | "
                  f"{m['unmerged'] / m['merged']:.2f} |", flush=True)
    if failed:
        sys.exit(f"{failed} row sets differ between the releases")
