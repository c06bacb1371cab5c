"""Build the portal's name table (chalicelib/services/names.csv) from catalogue files, not
from memory: the vendored source rows under tests/data/names/ (tests check the shipped
table against them).

Sources: the Messier and Caldwell files of SSCore (Southern Stars; positions from
W. Steinicke's Revised NGC and IC, LMC from the Principal Galaxy Catalogue), OpenNGC for
M40 (SSCore's declination for it is three degrees off), and astropy for the ecliptic poles
(the SPHEREx deep fields NEP and SEP: ecliptic latitude +-90 deg in the J2000 mean ecliptic).

    python -m chalicelib.devtools.names_table tests/data/names chalicelib/services/names.csv
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

KINDS = {"GC": "globular cluster", "OC": "open cluster", "BN": "nebula",
         "PN": "planetary nebula", "GX": "galaxy", "DS": "double star", "DN": "dark nebula"}
HEADER = """\
# Object names the portal resolves offline, built by chalicelib/devtools/names_table.py from
# catalogue files (rows vendored in tests/data/names/, checked by tests/services/test_portal.py):
#  - Messier objects: SSCore SSData/DeepSky/Messier.csv (github.com/timmyd7777/SSCore,
#    commit f7e2699bc8c72a5c27639281ac21ea8e74415922), positions from W. Steinicke's Revised
#    NGC and IC; M40 from OpenNGC (github.com/mattiaverga/OpenNGC addendum.csv, commit
#    25d66c1778e3c12d762892592ceaaf7c56dc1dd0);
#  - bright NGC/IC objects and the Magellanic Clouds: SSCore SSData/DeepSky/Caldwell.csv
#    (commit 1dada16121a12f861e55c87161a3cf1643f76a22);
#  - NEP, SEP (SPHEREx deep fields): the ecliptic poles (J2000 mean ecliptic) through astropy.
# ICRS (J2000) degrees, extended objects at the catalogue's centre. aliases: ';'-separated.
"""


def _deg(ra: str, dec: str) -> tuple[float, float]:
    """'hh mm ss.s' and '+dd mm ss' (or ':'-separated) as degrees; the sources write
    '06 08 60.00' and '06 46 -0.00', so the parts are added up rather than validated."""
    h, m, s = (float(x) for x in re.split(r"[\s:]+", ra.strip()))
    sign = -1.0 if dec.strip().startswith("-") else 1.0
    d, dm, ds = (abs(float(x)) for x in re.split(r"[\s:]+", dec.strip().lstrip("+-")))
    return 15.0 * (h + m / 60 + s / 3600), sign * (d + dm / 60 + ds / 3600)


def _rows(path: Path, **kw) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines, **kw))


def _ident(text: str) -> bool:
    return bool(re.fullmatch(r"(M|C|NGC|IC|PGC|UGCA?|LBN|PK|PNG|Mel|Sh2) [\d.+\-]+", text))


def _kind(typ: str, names: list[str]) -> str:
    return "supernova remnant" if names and names[0] == "M 1" else KINDS.get(typ, typ)


def build(sources: Path) -> list[dict]:
    out: list[dict] = []
    ngc = {r["Name"]: r for r in _rows(sources / "openngc.csv", delimiter=";")}
    for r in _rows(sources / "sscore_messier.csv"):
        parts = [p.strip() for p in r["IDs"].split(";") if p.strip()]
        name = parts[0].replace(" ", "")
        ra, dec = _deg(r["RA"], r["Dec"])
        if name == "M40":
            ra, dec = _deg(ngc["M040"]["RA"], ngc["M040"]["Dec"])
        out.append({"name": name, "aliases": parts[1:], "ra": ra, "dec": dec,
                    "kind": _kind(r["Type"], parts)})
    for r in _rows(sources / "sscore_caldwell.csv"):
        ids = [p.strip() for p in r["IDs"].split(";") if p.strip()]
        names = [p.strip() for p in (r["Names"] or "").split(";") if p.strip()]
        if names and names[0] in ("LMC", "SMC"):
            main = names[0]
        else:
            main = next(i for i in ids if re.match(r"(NGC|IC) ", i))
        ra, dec = _deg(r["RA"], r["Dec"])
        out.append({"name": main, "aliases": [x for x in ids + names if x != main],
                    "ra": ra, "dec": dec, "kind": KINDS.get(r["Type"], r["Type"])})
    for name, lat, aliases in (("NEP", 90, ["North Ecliptic Pole", "SPHEREx NEP deep field",
                                            "NEP deep field"]),
                               ("SEP", -90, ["South Ecliptic Pole", "SPHEREx SEP deep field",
                                             "SEP deep field"])):
        ra, dec = ecliptic_pole(lat)
        out.append({"name": name, "aliases": aliases, "ra": ra, "dec": dec,
                    "kind": "SPHEREx deep field"})
    return out


def ecliptic_pole(lat: float) -> tuple[float, float]:
    import astropy.units as u  # deferred: a devtool, astropy only when run
    from astropy.coordinates import BarycentricMeanEcliptic, SkyCoord  # deferred: as above

    c = SkyCoord(0 * u.deg, lat * u.deg, frame=BarycentricMeanEcliptic()).icrs
    return float(c.ra.deg), float(c.dec.deg)


def render(rows: list[dict]) -> str:
    lines = [HEADER + "name,aliases,ra,dec,kind"]
    for r in rows:
        aliases = ";".join(a for a in r["aliases"] if not _skip_alias(a))
        cells = [r["name"], aliases, f"{r['ra'] % 360:.5f}", f"{r['dec']:.5f}", r["kind"]]
        lines.append(",".join(f'"{c}"' if "," in c else c for c in cells))
    return "\n".join(lines) + "\n"


def _skip_alias(a: str) -> bool:
    """Planetary nebula numbers (PK, PNG) would only clutter the suggestions."""
    return a.startswith(("PK ", "PNG "))


def main(argv: list[str]) -> int:
    sources, target = Path(argv[0]), Path(argv[1])
    target.write_text(render(build(sources)))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
