"""Cutout engine: geometry, WCS bookkeeping, output validity and range-read economy.

Files come from chalicelib.synth (faithful Level 2 MEFs); copies with a moved pointing give
the RA 0/360 and pole cases. Every output is opened with warnings as errors.
"""

from __future__ import annotations

import gzip
import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from chalicelib.cutout import (
    CenterBox,
    Circle,
    CutoutError,
    MultiValued,
    NoOverlap,
    NotFits,
    Polygon,
    Range,
    Region,
    cutout,
    cutout_many,
    parse_archive_params,
    parse_gzip,
    parse_soda_params,
)
from chalicelib.cutout.fitsrange import clear_caches
from chalicelib.geometry import sky
from chalicelib.lake.storage import Archive
from chalicelib.web.params import Params

N = 160  # synthetic image size: the 3.485 deg field at 78 arcsec per pixel
IMAGE_HDUS = ("IMAGE", "FLAGS", "VARIANCE", "ZODI")


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Archive, list[str]]:
    """A local archive holding one synthetic week's six Level 2 images."""
    from chalicelib.devtools.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    folder = synthesize(out, weeks=1, image_size=N, images_per_week=6, seed=3)[0]
    keys = sorted(str(p.relative_to(folder)) for p in folder.glob("data/qr2/level2/**/*.fits"))
    return Archive.from_env(str(folder)), keys


@pytest.fixture(scope="module")
def parent(files) -> tuple[Archive, str, fits.HDUList]:
    archive, keys = files
    return archive, keys[0], fits.open(archive.path(keys[0]))


def moved(files, tmp_path: Path, ra: float, dec: float) -> tuple[Archive, str, fits.HDUList]:
    """A copy of a synthetic file whose pointing (CRVAL) is moved to (ra, dec)."""
    archive, keys = files
    key = keys[1]
    dest = tmp_path / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(archive.path(key), dest)
    with fits.open(dest, mode="update") as hdul:
        hdul["IMAGE"].header["CRVAL1"] = ra
        hdul["IMAGE"].header["CRVAL2"] = dec
    return Archive.from_env(str(tmp_path)), key, fits.open(dest)


def open_checked(data: bytes) -> fits.HDUList:
    """Open a cutout with every warning an error, verify it and load all data."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hdul = fits.open(io.BytesIO(data))
        hdul.verify("exception")
        for h in hdul:
            h.data  # noqa: B018 - force reading
        WCS(hdul["IMAGE"].header)
    return hdul


def celestial(header: fits.Header) -> WCS:
    return WCS(header)


def alternate(header: fits.Header, key: str, hdul: fits.HDUList | None = None) -> WCS:
    w = WCS(header, fobj=hdul, key=key)
    w.sip = None  # astropy would apply the primary SIP to alternates
    return w


def parent_sky(hdul: fits.HDUList) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec of every parent pixel centre, [y, x]."""
    n = hdul["IMAGE"].header["NAXIS1"]
    y, x = np.mgrid[0:n, 0:n]
    ra, dec = celestial(hdul["IMAGE"].header).all_pix2world(x, y, 0)
    return ra, dec


def assert_bbox(box, inside: np.ndarray) -> None:
    """The box holds every pixel whose centre is in the region and is at most one pixel
    larger on each side (it covers pixels the region only partly touches)."""
    ys, xs = np.nonzero(inside)
    assert xs.size, "test region must cover some pixel centre"
    assert box.x0 <= xs.min() and xs.max() < box.x1 and box.y0 <= ys.min() and ys.max() < box.y1
    assert xs.min() - box.x0 <= 1 and box.x1 - 1 - xs.max() <= 1
    assert ys.min() - box.y0 <= 1 and box.y1 - 1 - ys.max() <= 1


# ---------------------------------------------------------------- parsing

@pytest.mark.parametrize("center,x,y,pixel", [
    ("10,20", 10, 20, False), ("10,20deg", 10, 20, False), ("10,20d", 10, 20, False),
    ("-10, 20 deg", 350, 20, False), ("370,-20", 10, -20, False),
    (f"{np.pi / 2},{np.pi / 4}rad", 90, 45, False), ("600,1200arcmin", 10, 20, False),
    ("36000,72000arcsec", 10, 20, False), ("300.5,120px", 300.5, 120, True),
    ("300.5,120pix", 300.5, 120, True), ("1,2pixels", 1, 2, True), ("1e1,2E1", 10, 20, False),
])
def test_archive_center_units(center, x, y, pixel):
    s = parse_archive_params(center, "0.1").shape
    assert isinstance(s, CenterBox) and s.pixel_center is pixel
    assert s.x == pytest.approx(x) and s.y == pytest.approx(y)


@pytest.mark.parametrize("size,w,h,pixel", [
    ("0.1", 0.1, 0.1, False), ("0.1,0.2", 0.1, 0.2, False), ("0.1deg", 0.1, 0.1, False),
    ("30arcsec", 30 / 3600, 30 / 3600, False), ("3,6arcmin", 0.05, 0.1, False),
    ("0.01rad", np.degrees(0.01), np.degrees(0.01), False), ("64px", 64, 64, True),
    ("64,32pix", 64, 32, True), ("10pixels", 10, 10, True),
])
def test_archive_size_units(size, w, h, pixel):
    s = parse_archive_params("10,20", size).shape
    assert s.pixel_size is pixel
    assert s.width == pytest.approx(w) and s.height == pytest.approx(h)


@pytest.mark.parametrize("center,size", [
    ("10", "0.1"), ("10,95", "0.1"), ("10,20furlong", "0.1"), ("10,20", "-0.1"),
    ("10,20", "0"), ("10,20", "1,2,3"), ("10,20", "1parsec"), (None, "0.1"), ("10,20", ""),
    ("a,b", "0.1"),
])
def test_archive_params_rejected(center, size):
    with pytest.raises(CutoutError):
        parse_archive_params(center, size)


def test_gzip_flag():
    assert parse_gzip(None) and parse_gzip("") and parse_gzip("TRUE") and parse_gzip("1")
    assert not parse_gzip("false") and not parse_gzip("0") and not parse_gzip("No")
    with pytest.raises(CutoutError):
        parse_gzip("maybe")


def test_soda_params():
    p = Params([("POS", "CIRCLE 10 20 0.5"), ("pos", "RANGE 350 10 -5 5"),
                ("POS", "POLYGON 1 1 2 1 2 2"), ("circle", "1 2 3"), ("POLYGON", "0 0 1 0 1 1"),
                ("BAND", "1e-6 2e-6"), ("BAND", "3e-6 +Inf"), ("TIME", "60000 60001"),
                ("POL", "I"), ("POL", "Q U")])
    regions = parse_soda_params(p)
    assert len(regions) == 5 * 2 * 1
    kinds = {type(r.shape) for r in regions}
    assert kinds == {Circle, Range, Polygon}
    rng = next(r.shape for r in regions if isinstance(r.shape, Range))
    assert (rng.ra1, rng.ra2, rng.dec1, rng.dec2) == (350, 10, -5, 5)
    assert regions[0].pol == ("I", "Q", "U") and regions[0].time == (60000, 60001)
    assert {r.band for r in regions} == {(1e-6, 2e-6), (3e-6, float("inf"))}
    assert parse_soda_params(Params([("ID", "x")])) == [Region()]
    assert parse_soda_params(Params([("POS", "RANGE -Inf +Inf 0 10")]))[0].shape.full_ra


@pytest.mark.parametrize("pairs", [
    [("POS", "CIRCLE 10 20")], [("POS", "BOX 1 2 3 4")], [("POS", "CIRCLE 10 100 1")],
    [("CIRCLE", "10 20 0")], [("POLYGON", "1 2 3 4")], [("BAND", "2 1")],
    [("TIME", "x y")], [("POL", "Z")], [("POS", "RANGE 0 10 20 10")],
])
def test_soda_params_rejected(pairs):
    with pytest.raises(CutoutError):
        parse_soda_params(Params(pairs))


def test_soda_sync_multivalued():
    with pytest.raises(MultiValued):
        parse_soda_params(Params([("POS", "CIRCLE 1 2 3"), ("CIRCLE", "1 2 3")]), sync=True)
    assert len(parse_soda_params(Params([("POS", "CIRCLE 1 2 3")]), sync=True)) == 1


# ---------------------------------------------------------------- pixels and WCS

def sky_region_at(hdul, x: float, y: float, size: str = "0.5") -> Region:
    ra, dec = celestial(hdul["IMAGE"].header).all_pix2world([[x, y]], 0)[0]
    return parse_archive_params(f"{ra},{dec}", size)


def test_pixels_and_wcs_match_parent(parent):
    archive, key, hdul = parent
    r = cutout(archive, key, sky_region_at(hdul, 50.3, 71.8))
    out = open_checked(r.data)
    b = r.box
    assert out["IMAGE"].data.shape == r.shape == (b.height, b.width)
    for name in IMAGE_HDUS:
        assert out[name].data.dtype == hdul[name].data.dtype
        np.testing.assert_array_equal(out[name].data, hdul[name].data[b.y0:b.y1, b.x0:b.x1])
    # 'A' maps cutout pixels to 0-based parent pixels
    yy, xx = np.mgrid[0:b.height, 0:b.width]
    px, py = alternate(out["IMAGE"].header, "A").all_pix2world(xx, yy, 0)
    np.testing.assert_allclose(px, xx + b.x0, atol=1e-9)
    np.testing.assert_allclose(py, yy + b.y0, atol=1e-9)
    pi, pj = np.rint(px).astype(int), np.rint(py).astype(int)
    np.testing.assert_array_equal(out["IMAGE"].data, hdul["IMAGE"].data[pj, pi])
    # the celestial WCS (SIP included) agrees with the parent's at mapped pixels
    cw, pw = celestial(out["IMAGE"].header), celestial(hdul["IMAGE"].header)
    ra_c, dec_c = cw.all_pix2world(xx, yy, 0)
    ra_p, dec_p = pw.all_pix2world(px, py, 0)
    assert np.max(sky.distance(ra_c, dec_c, ra_p, dec_p)) < 1e-8
    # and sky positions land on the same pixel values through both WCSs
    x_c, y_c = cw.all_world2pix(ra_p, dec_p, 0)
    np.testing.assert_allclose(x_c, xx, atol=1e-6)
    np.testing.assert_allclose(y_c, yy, atol=1e-6)
    assert out[0].header["CUTX1"] == b.x0 + 1 and out[0].header["CUTY2"] == b.y1
    assert out[0].header["PARENT"] == Path(key).name


def test_wave_wcs_matches_parent(parent):
    archive, key, hdul = parent
    r = cutout(archive, key, parse_archive_params("40,97px", "33,21px"))
    out = open_checked(r.data)
    b = r.box
    assert (b.width, b.height) == (33, 21)
    ww_c = alternate(out["IMAGE"].header, "W", out)
    ww_p = alternate(hdul["IMAGE"].header, "W", hdul)
    yy, xx = np.mgrid[0:b.height, 0:b.width]
    lam_c, bw_c = ww_c.pixel_to_world_values(xx, yy)
    lam_p, bw_p = ww_p.pixel_to_world_values(xx + b.x0, yy + b.y0)
    np.testing.assert_allclose(lam_c, lam_p, rtol=1e-12)
    np.testing.assert_allclose(bw_c, bw_p, rtol=1e-12)
    assert len(out["WCS-WAVE"].data["X"][0]) < len(hdul["WCS-WAVE"].data["X"][0])


def test_one_pixel_cutout(parent):
    archive, key, hdul = parent
    r = cutout(archive, key, parse_archive_params(f"{N},{N}px", "1px"))
    out = open_checked(r.data)
    assert r.box == (N - 1, N, N - 1, N)
    assert out["IMAGE"].data[0, 0] == hdul["IMAGE"].data[N - 1, N - 1]
    lam_c, _ = alternate(out["IMAGE"].header, "W", out).pixel_to_world_values(0, 0)
    lam_p, _ = alternate(hdul["IMAGE"].header, "W", hdul).pixel_to_world_values(N - 1, N - 1)
    assert lam_c == pytest.approx(lam_p, rel=1e-12)


def test_center_units_agree(parent):
    archive, key, hdul = parent
    ra, dec = celestial(hdul["IMAGE"].header).all_pix2world([[79.0, 90.0]], 0)[0]
    scale = 3.485 / N  # deg per pixel (approximately: size rounds up to whole pixels)
    boxes = {cutout(archive, key, parse_archive_params(c, s), psf="none").box
             for c in (f"{ra},{dec}", f"{ra}, {dec}deg", f"{np.radians(ra)},{np.radians(dec)}rad",
                       f"{ra * 60},{dec * 60}arcmin", "80,91px", "80,91pixels")
             for s in ("11px", "11,11pix", f"{10.5 * scale}", f"{10.5 * scale * 3600}arcsec")}
    assert boxes == {(74, 85, 85, 96)}


def test_partial_overlap_is_clipped(parent):
    archive, key, hdul = parent
    r = cutout(archive, key, parse_archive_params("1,1px", "20px"))
    assert r.box == (0, 10, 0, 10)
    corner = sky_region_at(hdul, N + 3.0, -4.0, size="0.5")  # centre off the image
    r = cutout(archive, key, corner)
    assert r.box.x1 == N and r.box.y0 == 0 and r.box.width < 10
    open_checked(r.data)


def test_no_overlap(parent):
    archive, key, hdul = parent
    ra, dec = celestial(hdul["IMAGE"].header).wcs.crval
    far = (ra + 180) % 360, -dec
    with pytest.raises(NoOverlap):
        cutout(archive, key, parse_archive_params(f"{far[0]},{far[1]}", "0.1"))
    with pytest.raises(NoOverlap):
        cutout(archive, key, parse_archive_params("-50,-50px", "10px"))
    with pytest.raises(NoOverlap):
        cutout(archive, key, sky_region_at(hdul, N + 30.0, N / 2, size="0.2"))
    with pytest.raises(NoOverlap):
        cutout(archive, key, Region(Circle(*far, 1.0)))
    mjd = hdul["IMAGE"].header["MJD-BEG"]
    with pytest.raises(NoOverlap):
        cutout(archive, key, Region(time=(mjd + 1, mjd + 2)))
    with pytest.raises(NoOverlap):
        cutout(archive, key, Region(pol=("I",)))
    with pytest.raises(NoOverlap):
        cutout(archive, key, Region(band=(10e-6, 20e-6)))
    r = cutout(archive, key, Region(Circle(ra, dec, 0.1), time=(mjd - 1, mjd + 1)))
    assert r.box.width > 0


def test_band_selects_rows(parent):
    archive, key, hdul = parent
    ww = alternate(hdul["IMAGE"].header, "W", hdul)
    yy, xx = np.mgrid[0:N, 0:N]
    lam, bw = (v * 1e-6 for v in ww.pixel_to_world_values(xx, yy))  # um -> m
    mid = float(np.median(lam))
    band = (mid - 0.005 * mid, mid + 0.005 * mid)
    r = cutout(archive, key, Region(band=band), psf="none")
    b = r.box
    hit = ((lam - bw / 2 <= band[1]) & (lam + bw / 2 >= band[0])).any(axis=1)
    rows = np.flatnonzero(hit)
    assert (b.x0, b.x1) == (0, N) and (b.y0, b.y1) == (rows[0], rows[-1] + 1)
    assert 0 < b.height < N / 2
    out = open_checked(r.data)
    lam_c, _ = alternate(out["IMAGE"].header, "W", out).pixel_to_world_values(
        xx[:b.height], yy[:b.height])
    np.testing.assert_allclose(lam_c * 1e-6, lam[b.y0:b.y1], rtol=1e-12)
    # BAND with a spatial region: rows of the spatial box only
    r2 = cutout(archive, key, sky_region_at(hdul, 80, 80, "2"), band=band)
    assert r2.box.y0 >= b.y0 - 1 and r2.box.y1 <= b.y1 + 1


def test_psf_modes(parent):
    archive, key, hdul = parent
    region = parse_archive_params("30,40px", "10px")
    whole = open_checked(cutout(archive, key, region).data)
    np.testing.assert_array_equal(whole["PSF"].data, hdul["PSF"].data)
    assert whole["PSF"].header == hdul["PSF"].header
    zone = open_checked(cutout(archive, key, region, psf="zone").data)
    ph, zh = hdul["PSF"].header, zone["PSF"].header
    n = zh["NAXIS3"]
    assert 1 <= n < ph["NAXIS3"]
    for j in range(1, n + 1):
        k = zh[f"ZONE_{j}"]
        np.testing.assert_array_equal(zone["PSF"].data[j - 1], hdul["PSF"].data[k - 1])
        for p in ("XCTR", "YCTR", "XWID", "YWID"):
            assert zh[f"{p}_{j}"] == ph[f"{p}_{k}"]
        assert abs(zh[f"XCTR_{j}"] - 30) <= zh[f"XWID_{j}"] / 2 + 5
    assert f"XCTR_{n + 1}" not in zh
    none = open_checked(cutout(archive, key, region, psf="none").data)
    assert "PSF" not in none and [h.name for h in none][-1] == "WCS-WAVE"
    with pytest.raises(CutoutError):
        cutout(archive, key, region, psf="some")


def test_gzip_output(parent, tmp_path):
    archive, key, _ = parent
    region = parse_archive_params("60,60px", "16px")
    plain = cutout(archive, key, region)
    packed = cutout(archive, key, region, gzip=True)
    assert gzip.decompress(packed.data) == plain.data
    assert packed.content_type == "application/gzip" and plain.content_type == "application/fits"
    assert packed.filename.endswith(".fits.gz") and plain.filename.endswith(".fits")
    assert packed.http_headers()["Content-Disposition"].endswith('.fits.gz"')
    saved = tmp_path / packed.filename  # what curl -OJ would write
    saved.write_bytes(packed.data)
    with fits.open(saved) as hdul:
        assert hdul["IMAGE"].data.shape == (16, 16)


# ---------------------------------------------------------------- sky shapes, wrap, poles

def check_shape(archive, key, hdul, shape) -> None:
    r = cutout(archive, key, Region(shape), psf="none")
    ra, dec = parent_sky(hdul)
    assert_bbox(r.box, shape.contains(ra.ravel(), dec.ravel()).reshape(ra.shape))
    out = open_checked(r.data)
    b = r.box
    np.testing.assert_array_equal(out["IMAGE"].data, hdul["IMAGE"].data[b.y0:b.y1, b.x0:b.x1])


def test_shapes_straddling_ra_zero(files, tmp_path):
    archive, key, hdul = moved(files, tmp_path, 0.3, 12.0)
    ra, _ = parent_sky(hdul)
    assert ra.max() > 358 and ra.min() < 2  # the file straddles RA 0
    for shape in (Circle(359.8, 12.2, 0.6), Circle(0.2, 11.5, 0.4),
                  Range(359.0, 0.5, 11.0, 12.5), Range(358.0, 359.9, 10.0, 14.0),
                  Polygon((359.0, 11.0, 1.0, 11.0, 1.0, 13.0, 359.0, 13.0))):
        check_shape(archive, key, hdul, shape)
    w = celestial(hdul["IMAGE"].header)
    for center in ("359.95,12.1", "-0.05,12.1", "0.05,12.1"):
        r = cutout(archive, key, parse_archive_params(center, "0.3"), psf="none")
        c = parse_archive_params(center, "0.3").shape
        x, y = w.all_world2pix([[c.x, c.y]], 0)[0]
        assert r.box.x0 <= x < r.box.x1 and r.box.y0 <= y < r.box.y1
        open_checked(r.data)


def test_shapes_near_the_pole(files, tmp_path):
    archive, key, hdul = moved(files, tmp_path, 40.0, 89.2)
    _, dec = parent_sky(hdul)
    assert dec.max() > 89.9  # the pole is on the image
    for shape in (Circle(0.0, 90.0, 0.5), Circle(200.0, 89.5, 0.3), Range(0, 360, 89.0, 90),
                  Range(100, 200, 88.0, 89.8),
                  Polygon((0, 89.3, 90, 89.3, 180, 89.3, 270, 89.3)),
                  Circle(40.0, 89.2, 30.0)):  # bigger than the image
        check_shape(archive, key, hdul, shape)
    r = cutout(archive, key, parse_archive_params("123,89.95", "0.4"), psf="none")
    assert r.box.width == r.box.height and r.box.width > 3
    open_checked(r.data)


# ---------------------------------------------------------------- batches and S3

def test_cutout_many(parent, files):
    archive, keys = files
    _, key, hdul = parent
    ra, dec = celestial(hdul["IMAGE"].header).wcs.crval
    items = [(k, Region(Circle(ra, dec, 0.3))) for k in keys[:3]]
    items.append((keys[0], parse_archive_params(f"{(ra + 180) % 360},{-dec}", "0.1")))
    items.append(("data/missing.fits", Region()))
    results = cutout_many(archive, items, psf="zone")
    assert [type(r).__name__ for r in results[3:]] == ["NoOverlap", "FileNotFoundError"]
    for (k, _), r in zip(items, results[:1]):
        assert r.key == k
        open_checked(r.data)


@pytest.fixture(scope="module")
def big_files(tmp_path_factory) -> tuple[Archive, list[str]]:
    """512 px images: big enough that a 40-row cutout is a small part of the file."""
    from chalicelib.devtools.synth import synthesize

    out = tmp_path_factory.mktemp("synth512")
    folder = synthesize(out, weeks=1, image_size=512, images_per_week=6, seed=4)[0]
    keys = sorted(str(p.relative_to(folder)) for p in folder.glob("data/qr2/level2/**/*.fits"))
    return Archive.from_env(str(folder)), keys


@pytest.fixture
def s3_copy(s3_archive, big_files):
    """Synthetic files uploaded to moto's S3 server (and their local originals)."""
    local, keys = big_files
    for k in keys[:2]:
        s3_archive.put_file(local.path(k), k)
    return s3_archive, local, keys[:2]


@pytest.fixture
def s3_calls(s3_copy):
    """Every S3 request botocore really sends for the archive's filesystem."""
    calls: list[str] = []
    fs = s3_copy[0].fs
    fs.connect()

    def record(request, **_):
        calls.append(request.method)

    fs.s3.meta.events.register("before-send.s3", record)
    yield calls
    fs.s3.meta.events.unregister("before-send.s3", record)


def test_range_reads_on_s3(s3_copy, s3_calls):
    archive, local, keys = s3_copy
    clear_caches()
    calls = s3_calls
    key = keys[0]
    size = local.size(key)
    region = parse_archive_params("300,200px", "60,40px")
    r = cutout(archive, key, region, psf="none")
    s = r.stats
    assert r.data == cutout(local, key, region, psf="none").data
    assert not s.headers_cached and s.file_size == size
    assert s.requests == len(calls)  # our count is botocore's
    with fits.open(local.path(key)) as hdul:
        headers = sum(len(h.header.tostring()) for h in hdul)
        table = hdul["WCS-WAVE"].header["NAXIS1"]
        row = hdul["IMAGE"].header["NAXIS1"] * 4
    assert s.minimum_bytes == 40 * row * 4 + headers + table
    assert s.bytes_read <= 1.5 * s.minimum_bytes
    assert s.bytes_read * 10 < size
    # warm: one round trip, data only
    calls.clear()
    r = cutout(archive, key, region, psf="none")
    assert r.stats.headers_cached and r.stats.round_trips == 1 and len(calls) == 4
    assert r.stats.bytes_read == r.stats.minimum_bytes == 40 * row * 4
    # a new file of the same shape: headers prefetched by template in one round trip
    r = cutout(archive, keys[1], region, psf="all")
    assert r.stats.round_trips == 3 and r.stats.bytes_read <= 1.5 * r.stats.minimum_bytes
    assert r.data == cutout(local, keys[1], region).data


# ---------------------------------------------------------------- fidelity and robustness

def raw_cards(hdu) -> dict[str, str]:
    return {c.keyword + str(i): c.image for i, c in enumerate(hdu.header.cards)
            if c.keyword not in ("HISTORY", "COMMENT")}


def test_headers_kept_but_for_geometry(parent):
    archive, key, hdul = parent
    out = open_checked(cutout(archive, key, parse_archive_params("70,50px", "9,7px")).data)
    changed = {"NAXIS1", "NAXIS2", "CRPIX1", "CRPIX2", "CRPIX1A", "CRPIX2A"}
    for name in IMAGE_HDUS:
        p, c = hdul[name].header, out[name].header
        assert list(p.keys()) == list(c.keys())
        for k in p:
            if k not in changed and k not in ("HISTORY", "COMMENT", ""):
                assert p.cards[k].image == c.cards[k].image, k
    h = out["IMAGE"].header
    assert (h["NAXIS1"], h["NAXIS2"]) == (9, 7)
    assert h["CRPIX1"] == hdul["IMAGE"].header["CRPIX1"] - 65
    assert h["CRPIX1A"] == 1 - 65 and h["CRPIX2A"] == 1 - 46
    assert h["CRPIX1W"] == hdul["IMAGE"].header["CRPIX1W"]  # the table moves instead


def test_wave_table_writers_agree(parent):
    from chalicelib.cutout.wavetab import WaveTable

    _, _, hdul = parent
    table = hdul["WCS-WAVE"]
    raw = table.header.tostring(padding=True).encode("ascii")
    data = table.data.tobytes()  # big-endian FITS rows, as read from the file
    wave = WaveTable.parse(hdul["IMAGE"].header, table.header, data, raw)
    assert wave is not None and wave.rebuildable
    for box in ((0, N, 0, N), (5, 6, 7, 90), (33, 120, 151, 160)):
        header, rows = wave.cutout_bytes(*box)
        fast = fits.BinTableHDU.fromstring(header + rows + b"\0" * (-len(rows) % 2880))
        slow = wave.cutout_hdu(*box)
        for col in ("X", "Y", "VALUES"):
            np.testing.assert_array_equal(fast.data[col], slow.data[col])
        assert fast.header["TDIM3"] == slow.header["TDIM3"]


def test_bad_files_and_paths(parent, tmp_path):
    archive, key, _ = parent
    with pytest.raises(FileNotFoundError):
        cutout(archive, "data/nope.fits", Region())
    with pytest.raises(CutoutError):
        cutout(archive, "data/../../etc/passwd", Region())
    local = Archive.from_env(str(tmp_path))
    local.write_bytes("data/table.parquet", b"PAR1" + b"x" * 5000)
    with pytest.raises(NotFits):
        cutout(local, "data/table.parquet", Region())
    local.write_bytes("data/cut.fits", archive.read_bytes(key)[:100_000])
    with pytest.raises(NotFits):
        cutout(local, "data/cut.fits", Region())


@pytest.mark.parametrize("where", ["local", "s3"])
def test_replaced_file_is_reloaded(files, big_files, tmp_path, request, where):
    small, small_keys = files
    big, big_keys = big_files
    local = Archive.from_env(str(tmp_path)) if where == "local" else \
        request.getfixturevalue("s3_archive")
    local.write_bytes("data/f.fits", big.read_bytes(big_keys[0]))
    region = parse_archive_params("300,300px", "20px")
    assert cutout(local, "data/f.fits", region).box.width == 20  # layout now cached
    local.write_bytes("data/f.fits", small.read_bytes(small_keys[0]))  # a 160 px file
    with pytest.raises(NoOverlap):  # the short read reloads the headers: 160 px now
        cutout(local, "data/f.fits", region)
    assert cutout(local, "data/f.fits", Region()).shape == (N, N)


def test_coalescing_gap(parent):
    archive, key, _ = parent
    region = parse_archive_params("80,80px", "30px")
    cutout(archive, key, region)  # headers cached
    spread = cutout(archive, key, region, gap=0)
    merged = cutout(archive, key, region, gap=1 << 30)
    assert merged.data == spread.data
    assert spread.stats.requests == 5 and merged.stats.requests == 1  # 4 HDUs + PSF
    assert merged.stats.bytes_read > spread.stats.bytes_read == spread.stats.minimum_bytes


def test_soda_blank_values_ignored():
    regions = parse_soda_params(Params([("POS", ""), ("BAND", " "), ("CIRCLE", "1 2 0.5")]))
    assert regions == [Region(Circle(1.0, 2.0, 0.5))]
