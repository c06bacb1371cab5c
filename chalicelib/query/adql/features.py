"""What this translator supports, in TAPRegExt terms (for /capabilities): every feature
listed here is exercised by tests/unit/query/test_adql.py, so the declaration cannot
drift from the implementation. Bitwise operators (features-adql-bitwise) are deliberately absent."""

from __future__ import annotations

_R = "ivo://ivoa.net/std/TAPRegExt#"

# feature type -> [(form, description)]
LANGUAGE_FEATURES: dict[str, list[tuple[str, str]]] = {
    _R + "features-udf": [
        ("ivo_healpix_index(hpxOrder INTEGER, ra DOUBLE PRECISION, dec DOUBLE PRECISION) "
         "-> BIGINT", "Nested HEALPix index of a position at order hpxOrder (0-29)."),
        ("ivo_interval_overlaps(l1 NUMERIC, h1 NUMERIC, l2 NUMERIC, h2 NUMERIC) -> INTEGER",
         "1 if the intervals [l1, h1] and [l2, h2] overlap, else 0."),
        ("ivo_hasword(haystack TEXT, needle TEXT) -> INTEGER",
         "1 if needle occurs as a whole word in haystack (case-insensitive), else 0."),
        ("ivo_nocasematch(value TEXT, pattern TEXT) -> INTEGER",
         "1 if value matches the LIKE pattern ignoring case, else 0."),
    ],
    _R + "features-adqlgeo": [(f, "") for f in (
        "POINT", "CIRCLE", "POLYGON", "BOX", "CENTROID", "AREA", "COORD1", "COORD2",
        "COORDSYS", "CONTAINS", "INTERSECTS", "DISTANCE")],
    _R + "features-adql-string": [("LOWER", ""), ("UPPER", ""), ("ILIKE", "")],
    _R + "features-adql-offset": [("OFFSET", "")],
    _R + "features-adql-type": [("CAST", "")],
    _R + "features-adql-unit": [("IN_UNIT", "")],
    _R + "features-adql-common-table": [("WITH", "")],
    _R + "features-adql-sets": [("UNION", ""), ("EXCEPT", ""), ("INTERSECT", "")],
    _R + "features-adql-conditional": [("COALESCE", "")],
}

# the coordinate systems geometry constructors accept as their optional first argument
COORDINATE_SYSTEMS = ("ICRS", "")
