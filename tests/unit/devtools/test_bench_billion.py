"""The 1-billion-row simulation (bench billion) at a small size: its log is a Delta log
deltalake reads, and the real catalogue's pruning over it keeps the files that hold
rows near a cone while naming few of the rest."""

from __future__ import annotations

import json

import deltalake
import numpy as np
from astropy.coordinates import Latitude, Longitude
from cdshealpix.nested import lonlat_to_healpix

from chalicelib.devtools.benchmarks import bench_billion
from chalicelib.lake.storage import Archive
from chalicelib.query.catalogue import Catalogue


def test_simulated_log_prunes_to_the_files_holding_the_cone(tmp_path):
    sim = bench_billion.simulate(tmp_path, rows=20_000_000, weeks=20, seed=2)
    adds = [x["add"] for c in sim["commits"] for x in c]
    table = tmp_path / "archive" / "tables" / "ivoa.obscore"
    dt = deltalake.DeltaTable(str(table))  # a valid Delta table, checkpoint included
    assert len(dt.file_uris()) == len(adds) and dt.version() == sim["version"]
    assert any("checkpoint" in k for k in sim["log_bytes"])
    cat = Catalogue(Archive(str(tmp_path / "archive")), release=1)
    assert len(cat.stats("ivoa.obscore").uris) == len(adds)
    ranges = {a["path"].rsplit("/", 1)[-1]: json.loads(a["stats"]) for a in adds}
    rng = np.random.default_rng(5)
    named = []
    for ra, dec in zip(rng.uniform(0, 360, 40), np.degrees(np.arcsin(rng.uniform(-1, 1, 40)))):
        box = cat.box_sql("s_ra", "s_dec", ra, dec, 0.0, True, "ivoa.obscore")
        files = {f.rsplit("/", 1)[-1] for f in box.files}
        hpx = int(lonlat_to_healpix(Longitude([ra], "deg"), Latitude([dec], "deg"), 12)[0])
        # every file whose HEALPix run holds the cone's own cell (with RA/Dec ranges
        # around it) is named: images centred right there are not lost
        holding = {k for k, s in ranges.items()
                   if s["minValues"]["hpx"] <= hpx <= s["maxValues"]["hpx"]
                   and s["minValues"]["s_dec"] <= dec <= s["maxValues"]["s_dec"]
                   and s["minValues"]["s_ra"] <= ra <= s["maxValues"]["s_ra"]}
        assert holding <= files
        named.append(len(files))
    assert np.median(named) < len(adds) / 5
