"""Spherical geometry against independent expectations (astropy, dense brute force)."""

import astropy.units as u
import duckdb
import numpy as np
import pyarrow as pa
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from chalicelib.geometry import sky, sqlfunctions


def _footprint(ra, dec, size=3.485, rot=30.0):
    """A TAN footprint built with astropy: an independent polygon generator."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [1.5, 1.5]  # 1-based: the centre of the 0-based unit square
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    w.wcs.cd = np.array([[-c, s], [s, c]]) * size
    world = w.wcs_pix2world(np.array([[0, 0], [1, 0], [1, 1], [0, 1]]), 0)
    return w, [float(v) for p in world for v in p]


def _brute_inside(w, ra, dec):
    """Inside the pixel square [0,1]x[0,1] of the WCS: independent of sky.py."""
    x, y = w.wcs_world2pix(ra, dec, 0)
    front = np.isfinite(x)
    return front & (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)


@pytest.mark.parametrize("ra,dec", [(0.0, 0.0), (359.5, 10.0), (90.0, 88.9), (200.0, -89.0),
                                    (270.0, 66.56)])
def test_points_in_polygon_match_wcs(ra, dec):
    w, poly = _footprint(ra, dec)
    rng = np.random.default_rng(1)
    centre = SkyCoord(ra * u.deg, dec * u.deg)
    pts = centre.directional_offset_by(rng.uniform(0, 360, 4000) * u.deg,
                                       rng.uniform(0, 3.5, 4000) * u.deg)
    pra, pdec = pts.ra.deg, pts.dec.deg
    got = sky.points_in_polys(sky.xyz(pra, pdec), sky.Polys.one(poly, len(pra)))
    want = _brute_inside(w, pra, pdec)
    # the TAN square's edges are great circles, so the two must agree exactly
    # except within float noise of the boundary
    x, y = w.wcs_world2pix(pra, pdec, 0)
    edge = np.minimum.reduce([np.abs(x), np.abs(y), np.abs(1 - x), np.abs(1 - y)]) < 1e-9
    assert np.array_equal(got[~edge], want[~edge])
    assert got.sum() > 100


def test_distance_matches_astropy():
    rng = np.random.default_rng(2)
    ra1, ra2 = rng.uniform(0, 360, (2, 1000))
    dec1, dec2 = rng.uniform(-90, 90, (2, 1000))
    want = SkyCoord(ra1, dec1, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).deg
    assert np.allclose(sky.distance(ra1, dec1, ra2, dec2), want, atol=1e-10)
    con = duckdb.connect()
    sqlfunctions.register(con)
    con.register("t", pa.table({"a": ra1, "b": dec1, "c": ra2, "d": dec2}))
    got = con.execute("SELECT sky_distance(a, b, c, d) FROM t").fetchnumpy()
    assert np.allclose(list(got.values())[0], want, atol=1e-8)


def test_circle_polygon_intersection_brute_force():
    """A circle meets a polygon iff some sampled point of the circle's disc is inside it."""
    w, poly = _footprint(359.0, 40.0, size=2.0, rot=10)
    rng = np.random.default_rng(3)
    cra = (359.0 + rng.uniform(-5, 5, 300)) % 360
    cdec = 40.0 + rng.uniform(-4, 4, 300)
    r = rng.uniform(0.05, 1.5, 300)
    got = sqlfunctions.circle_x_poly(pa.array(cra), pa.array(cdec), pa.array(r),
                                     pa.array([poly] * 300)).to_numpy(zero_copy_only=False)
    for i in range(300):
        c = SkyCoord(cra[i] * u.deg, cdec[i] * u.deg)
        pa_ = np.linspace(0, 360, 180, endpoint=False)
        ring = [c.directional_offset_by(pa_ * u.deg, f * r[i] * u.deg)
                for f in (0.0, 0.25, 0.5, 0.75, 0.999)]
        ras = np.concatenate([s.ra.deg for s in ring])
        decs = np.concatenate([s.dec.deg for s in ring])
        want = _brute_inside(w, ras, decs).any()
        dist_edge = sky.min_edge_distance(sky.xyz([cra[i]], [cdec[i]]),
                                          sky.Polys.one(poly))[0]
        if abs(dist_edge - r[i]) > 0.02:  # sampled disc is exact away from tangency
            assert got[i] == want, (cra[i], cdec[i], r[i])


def test_polygon_polygon_and_containment():
    _, a = _footprint(0.0, 0.0, size=2.0)
    _, inner = _footprint(0.0, 0.0, size=0.5, rot=45)
    _, far = _footprint(10.0, 0.0, size=2.0)
    _, cross = _footprint(1.5, 0.0, size=2.0, rot=45)
    polys = pa.array([inner, far, cross])
    q = pa.array([a] * 3)
    assert sqlfunctions.poly_x_poly(q, polys).to_pylist() == [True, False, True]
    assert sqlfunctions.poly_in_poly(polys, q).to_pylist() == [True, False, False]


def test_area_and_cap_bounds():
    _, poly = _footprint(45.0, 60.0, size=1.0)
    # a small TAN square is ~1 deg2; astropy-free check via the spherical excess of a
    # lat/long cell computed analytically
    cell = [10, 0, 20, 0, 20, 10, 10, 10]
    exact = np.degrees(np.radians(10)) * np.degrees(np.sin(np.radians(10)))
    # the lat/long cell has small-circle top edge; our polygon uses great circles,
    # so its area is slightly larger
    a = sky.spherical_area(sky.Polys.one(cell))[0]
    assert exact < a < exact * 1.01
    assert abs(sky.spherical_area(sky.Polys.one(poly))[0] - 1.0) < 0.01
    lo, hi, ranges = sky.cap_bounds(359.9, 10, 1)
    assert (lo, hi) == (9, 11) and len(ranges) == 2
    pts = SkyCoord(359.9 * u.deg, 10 * u.deg).directional_offset_by(
        np.linspace(0, 360, 720) * u.deg, 1 * u.deg)
    assert all(any(a <= r <= b for a, b in ranges) for r in pts.ra.deg)
    assert sky.cap_bounds(0, 89.5, 1)[2] == [(0.0, 360.0)]


def test_null_geometry_is_null():
    out = sqlfunctions.pt_in_poly(pa.array([1.0, None]), pa.array([1.0, 1.0]),
                                  pa.array([[0, 0, 2, 0, 2, 2, 0, 2], None]))
    assert out.to_pylist() == [True, None]


@pytest.mark.parametrize("ra,dec,radius", [(120.3, 10.2, 2.5), (0.05, 89.9, 3.0),
                                           (359.95, -30.0, 0.1), (10.0, 0.0, 1e-6),
                                           (200.0, -89.99, 0.5), (45.0, 45.0, 30.0)])
def test_cap_cells_hold_every_position_in_the_cap(ra, dec, radius):
    rng = np.random.default_rng(1)
    centre = SkyCoord(ra * u.deg, dec * u.deg)
    pts = centre.directional_offset_by(rng.uniform(0, 360, 5000) * u.deg,
                                       radius * np.sqrt(rng.uniform(0, 1, 5000)) * u.deg)
    cells = sky.cap_cells(ra, dec, radius)
    h = sky.healpix(pts.ra.deg, pts.dec.deg)
    inside = np.zeros(len(h), bool)
    for a, b in cells:
        inside |= (h >= a) & (h <= b)
    assert inside.all() and len(cells) <= 16
    assert sky.cap_cells(ra, dec, 90.0) is None  # most of the sky: no pruning


def test_packed_polygons_give_the_same_polygons():
    polys = pa.array([[10.0, 20.0, 11.0, 20.0, 11.0, 21.0], None, [],
                      [359.5, -1.0, 0.5, -1.0, 0.5, 1.0, 359.5, 1.0]], pa.list_(pa.float64()))
    packed = sky.pack(polys)
    assert packed.type == pa.binary() and packed.null_count == 1
    for sl in (slice(0, 4), slice(1, 4), slice(3, 4)):
        a, b = sky.Polys.from_arrow(polys[sl]), sky.Polys.from_arrow(packed[sl])
        assert np.array_equal(a.v, b.v) and np.array_equal(a.count, b.count)
    ra, dec = pa.array([10.5, 1.0, 1.0, 0.0]), pa.array([20.3, 1.0, 1.0, 0.0])
    assert sqlfunctions.pt_in_poly(ra, dec, packed).to_pylist() == \
        sqlfunctions.pt_in_poly(ra, dec, polys).to_pylist() == [True, None, False, True]


def test_healpix_index_is_null_where_there_is_no_position_or_no_such_order():
    """NULL or NaN coordinates, |dec| > 90 and orders outside 0-29 give NULL (cdshealpix
    aborted the whole query on them); the rest equal cdshealpix called directly."""
    import cdshealpix
    import pyarrow as pa
    from astropy.coordinates import Latitude, Longitude

    from chalicelib.geometry.sqlfunctions import healpix_index

    order = pa.array([10, 10, 10, 10, 30, -1, 6, 29, None], pa.int64())
    ra = pa.array([10.0, None, float("nan"), 20.0, 1.0, 1.0, 359.9, 0.0, 1.0])
    dec = pa.array([-20.0, 5.0, 5.0, 95.0, 1.0, 1.0, 89.99, -90.0, 1.0])
    got = healpix_index(order, ra, dec).to_pylist()
    want = [int(cdshealpix.lonlat_to_healpix(Longitude([r], "deg"), Latitude([d], "deg"),
                                             k)[0])
            for k, r, d in ((10, 10.0, -20.0), (6, 359.9, 89.99), (29, 0.0, -90.0))]
    assert got == [want[0], None, None, None, None, None, want[1], want[2], None]
