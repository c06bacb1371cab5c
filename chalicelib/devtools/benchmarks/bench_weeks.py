"""Unmerged weeks against the merged tier, side by side in one process.

python -m chalicelib bench weeks --archive DIR [--unmerged N] [--merged M] [--positions K]
    [--repeat 9]

Two catalogues over the same archive: release N (weeks not yet merged) and release M (the
same rows compacted into the sky-sorted tier; default the latest), the queries and
positions of `bench peers`, row sets checked identical, alternating runs, medians. Prints
the candidates the exact test was handed and the ratio unmerged/merged (goal <= 1.3).
A warm cone repeats a query (its translation and candidate table are kept); `--fresh K`
then also times first-time cones at K new random positions (each query text new: its
translation, index look-up and candidate table included), after as many others have
indexed the files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


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
    p.add_argument("--fresh", type=int, default=30,
                   help="new random positions for first-time cones (0: none)")
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
                  f"| {cand['merged'] or '-'} | {m['unmerged']:.2f} | {m['merged']:.2f} | "
                  f"{m['unmerged'] / m['merged']:.2f} |", flush=True)
    if a.fresh:
        fresh(cats, a.fresh, cases, ours)
    if failed:
        sys.exit(f"{failed} row sets differ between the releases")


def fresh(cats: dict, k: int, cases, ours) -> None:
    """First-time cones: each query text new, so nothing of it is kept yet; their row
    sets checked identical too."""
    rng = np.random.default_rng(17)

    def wide(n: int):
        ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-0.9, 0.9, n)))
        return [(float(x), float(y), "wide") for x, y in zip(ra, dec)]

    for ra, dec, field in wide(2 * k):  # the files these meet are indexed after them
        for c in cases(ra, dec, field):
            for cat in cats.values():
                ours(cat, c.adql)
    for cat in cats.values():
        if cat._indexer is not None:
            cat._indexer.join()
    ts: dict[tuple[str, str], list[float]] = {}
    failed = 0
    for ra, dec, field in wide(k):
        for c in cases(ra, dec, field):
            got = {}
            for key, cat in cats.items():
                t0 = time.perf_counter()
                got[key] = ours(cat, c.adql)
                ts.setdefault((c.query, key), []).append(time.perf_counter() - t0)
            ids = [set(t["obs_publisher_did"].to_pylist()) for t in got.values()]
            failed += ids[0] != ids[1]
    print(f"\nfirst-time wide cones at {k} new positions (medians):\n"
          "| query | unmerged ms | merged ms | unmerged/merged |\n|---|---|---|---|")
    for q in dict.fromkeys(q for q, _ in ts):
        u, m = (statistics.median(ts[(q, key)]) * 1000 for key in ("unmerged", "merged"))
        print(f"| {q} | {u:.2f} | {m:.2f} | {u / m:.2f} |", flush=True)
    if failed:
        sys.exit(f"{failed} first-time row sets differ between the releases")
