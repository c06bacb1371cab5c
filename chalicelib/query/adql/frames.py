"""Coordinate systems of ADQL 2.0 geometry: which are accepted, and constant positions in
GALACTIC or ECLIPTIC converted to ICRS (the only frame of the stored positions)."""

from __future__ import annotations

_REFPOS = {"GEOCENTER", "BARYCENTER", "HELIOCENTER", "TOPOCENTER", "GALACTIC_CENTER",
           "LOCAL_GROUP_CENTER", "LSR", "LSRK", "LSRD", "MOON", "EMBARYCENTER", "MERCURY",
           "VENUS", "MARS", "JUPITER", "SATURN", "URANUS", "NEPTUNE", "PLUTO", "RELOCATABLE",
           "UNKNOWNREFPOS", "UNKNOWN"}
_FLAVORS = {"SPHERICAL2", "SPHER2", "SPHERICAL"}
_J2000 = {"J2000", "J2000.0"}
ICRS, GALACTIC, ECLIPTIC = "ICRS", "GALACTIC", "ECLIPTIC"
SUPPORTED_FRAMES = ("'ICRS', 'FK5', 'J2000' or 'FK5 J2000' (taken as ICRS), '' (ICRS), "
                    "'GALACTIC' and 'ECLIPTIC' (constant positions only, converted to "
                    "ICRS), each with any ADQL 2.0 reference position such as GEOCENTER")
FK5_NOTE = ("Coordinate system FK5 J2000 was taken as ICRS: the two differ by under "
            "0.03 arcsec (the FK5-ICRS frame bias)")


def parse_frame(text: str) -> tuple[str, bool] | None:
    """An ADQL 2.0 coordinate system string -> (frame, was_fk5), or None when unsupported.
    Grammar (STC-S as ADQL 2.0 uses it): [frame [equinox]] [reference position] [flavor]."""
    words = text.strip().upper().split()
    frame, fk5 = ICRS, False
    if words and words[0] in ("ICRS", "FK5", "J2000", "GALACTIC", "GALACTIC_II",
                              "ECLIPTIC", "UNKNOWNFRAME"):
        head = words.pop(0)
        if head in ("FK5", "J2000"):
            fk5 = True
            if head == "FK5" and words and words[0] in _J2000:
                words.pop(0)
        elif head in ("GALACTIC", "GALACTIC_II"):
            frame = GALACTIC
        elif head == "ECLIPTIC":
            frame = ECLIPTIC
            if words and words[0] in _J2000:
                words.pop(0)
        elif head == "UNKNOWNFRAME":
            frame = ICRS
    if words and words[0] in _REFPOS:
        words.pop(0)
    if words and words[0] in _FLAVORS:
        words.pop(0)
    return None if words else (frame, fk5)


def to_icrs(frame: str, coords: list[float]) -> list[float]:
    """(lon, lat, lon, lat, ...) in GALACTIC or ECLIPTIC -> ICRS (ra, dec, ...), degrees,
    through astropy's frames (Galactic; BarycentricMeanEcliptic at equinox J2000, a pure
    rotation for directions)."""
    from astropy import units as u  # deferred: cold start (astropy), non-ICRS queries only
    from astropy.coordinates import (  # deferred: cold start (astropy), non-ICRS queries only
        BarycentricMeanEcliptic,
        Galactic,
        SkyCoord,
    )

    lon, lat = coords[0::2], coords[1::2]
    if frame == GALACTIC:
        c = SkyCoord(Galactic(l=lon * u.deg, b=lat * u.deg))
    else:
        c = SkyCoord(BarycentricMeanEcliptic(lon=lon * u.deg, lat=lat * u.deg,
                                             equinox="J2000"))
    icrs = c.icrs
    out: list[float] = []
    for ra, dec in zip(icrs.ra.deg.tolist(), icrs.dec.deg.tolist()):
        out += [ra % 360.0, dec]
    return out
