"""Queries call the geometry kernels only with the argument types warm_up compiles, which
are the ones the image caches at build: any other (a read-only array, another dtype or
layout) would compile on a first query's path (~0.4 s) instead of loading from the cache.
Run in a fresh interpreter, through the API handler, for every spatial query kind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from chalicelib.devtools.benchmarks.bench_coldstart import proxy_event

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, sys
from chalicelib.geometry import sky
from chalicelib.lambdas import handlers

def sigs():
    return {n: sorted(map(str, getattr(sky, n).signatures)) for n in dir(sky)
            if n.startswith("_k_")}

sky.warm_up()
warm = sigs()
status = [handlers.api(e)["statusCode"] for e in json.load(open(sys.argv[1]))]
after = sigs()
print(json.dumps({"status": status, "new": {n: sorted(set(after[n]) - set(warm[n]))
                                            for n in after if set(after[n]) - set(warm[n])}}))
"""


def _events(ra: float, dec: float) -> list[dict]:
    box = f"{ra - .3} {dec - .2} {ra + .3} {dec - .2} {ra + .3} {dec + .2} {ra - .3} {dec + .2}"
    adql = [f"CONTAINS(POINT('ICRS', {ra}, {dec}), s_region) = 1",
            f"INTERSECTS(CIRCLE('ICRS', {ra}, {dec}, 0.5), s_region) = 1",
            f"INTERSECTS(s_region, POLYGON('ICRS', {box.replace(' ', ', ')})) = 1",
            f"DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', {ra}, {dec})) < 1",
            f"CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', {ra}, {dec}, 1)) = 1"]
    tap = [proxy_event("/tap/sync", {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY":
                                     f"SELECT obs_publisher_did, s_region FROM ivoa.obscore "
                                     f"WHERE {w} ORDER BY obs_publisher_did"})
           for w in adql]
    sia = [proxy_event("/sia/query", {"POS": f"CIRCLE {ra} {dec} 0.5"}),
           proxy_event("/sia/query", {"POS": f"POLYGON {box}"}),
           proxy_event("/sia/query", {"POS": f"RANGE {ra - 1} {ra + 1} {dec - 1} {dec + 1}"})]
    return tap + sia


def test_queries_use_only_the_kernels_warm_up_caches(archive, tmp_path: Path) -> None:
    from chalicelib.query.catalogue import Catalogue

    row = Catalogue(archive).query("SELECT s_ra, s_dec FROM ivoa.obscore WHERE s_region "
                                   "IS NOT NULL ORDER BY obs_publisher_did LIMIT 1")
    events = _events(row["s_ra"][0].as_py(), row["s_dec"][0].as_py())
    (tmp_path / "events.json").write_text(json.dumps(events))
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "events.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, check=True,
                         env={"PATH": "/usr/bin:/bin", "ARCHIVE_URL": archive.url,
                              "RATE_LIMIT": "0", "PYTHONPATH": str(ROOT),
                              "HOME": str(tmp_path), "WITHOUT_PANDAS": "1"})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == [200] * len(events)
    assert got["new"] == {}
