"""Synthetic deliveries checked independently: astropy reads the files, truth is re-measured."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from chalicelib.devtools.synth import fitsimage, optics, synthesize
from chalicelib.devtools.synth.fitsimage import ImageMeta
from chalicelib.devtools.synth.records import ARTIFACT, OBSERVATION, PLANE, PROVENANCE, TRUTH
from chalicelib.devtools.synth.sources import Truth

N = 64
FIELD = 2040 * 6.15 / 3600
BANDS = {
    1: (0.75, 1.09),
    2: (1.10, 1.62),
    3: (1.63, 2.41),
    4: (2.42, 3.82),
    5: (3.83, 4.41),
    6: (4.42, 5.00),
}
RUN = {"weeks": 2, "start_week": "2025W52", "images_per_week": 24, "seed": 5}


@pytest.fixture(scope="module")
def fits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fits")
    synthesize(out, image_size=N, **RUN)
    return out


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("meta")
    synthesize(out, weeks=1, images_per_week=600, metadata_only=True, seed=2)
    return out


@pytest.fixture(scope="module")
def images(fits_run) -> list[dict]:
    """Every science file of the FITS run, opened (and verified) once."""
    out = []
    for d, art, plane in science(fits_run):
        with open_fits(d / "data" / art["uri"]) as h:
            ww = WCS(h["IMAGE"].header, fobj=h, key="W")
            ww.sip = None  # the SIP is the optics, not the filter (as for the real files)
            out.append(
                {
                    "d": d,
                    "art": art,
                    "plane": plane,
                    "w": WCS(h["IMAGE"].header),
                    "ww": ww,
                    "det": h["IMAGE"].header["DETECTOR"],
                    **{k.lower(): h[k].data for k in ("IMAGE", "FLAGS", "VARIANCE", "ZODI")},
                }
            )
    return out


def rows(folder: Path, table: str) -> list[dict]:
    return pq.read_table(folder / f"{table}.parquet").to_pylist()


def weeks(run: Path) -> list[Path]:
    return sorted(p for p in run.iterdir() if p.is_dir())


def science(run: Path):
    """(delivery, artifact row, plane row) for every science image of a run."""
    for d in weeks(run):
        planes = {p["planeid"]: p for p in rows(d, "plane")}
        for a in rows(d, "artifact"):
            if a["product_type"] == "science":
                yield d, a, planes[a["planeid"]]


def open_fits(path: Path, verify: bool = False) -> fits.HDUList:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any astropy complaint about our headers fails
        hdul = fits.open(path)
        if verify:
            hdul.verify("exception")
    return hdul


def unit(ra, dec) -> np.ndarray:
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def sep_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    a, b = unit(ra1, dec1), unit(ra2, dec2)
    a, b = np.broadcast_arrays(a, b)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1)))


def corners(w: WCS, n: int) -> np.ndarray:
    ra, dec = w.pixel_to_world_values(
        np.array([-0.5, n - 0.5, n - 0.5, -0.5]), np.array([-0.5, -0.5, n - 0.5, n - 0.5])
    )
    return np.stack([ra, dec], axis=-1).ravel()


# ---------------------------------------------------------------- geometry


def test_footprint_is_the_wcs_pixel_grid_corners(images):
    count = 0
    for im in images:
        w, plane = im["w"], im["plane"]
        poly = np.array(plane["poly"])
        ref = corners(w, N)
        dra = (poly[0::2] - ref[0::2] + 180) % 360 - 180
        assert np.abs(dra * np.cos(np.radians(ref[1::2]))).max() < 1e-6
        assert np.abs(poly[1::2] - ref[1::2]).max() < 1e-6
        assert np.all((poly[0::2] >= 0) & (poly[0::2] < 360))
        ra, dec = w.pixel_to_world_values((N - 1) / 2, (N - 1) / 2)
        assert sep_deg(ra, dec, plane["s_ra"], plane["s_dec"]) < 1e-9
        count += 1
    assert count == 2 * RUN["images_per_week"]


def _edge_turns(poly) -> np.ndarray:
    v = unit(np.array(poly[0::2]), np.array(poly[1::2]))
    c = v.sum(axis=0)
    return np.array([np.cross(v[i], v[(i + 1) % 4]) @ c for i in range(4)])


def test_footprint_order_matches_the_real_archive():
    # A real spherex_qr2 s_region (ES sample row): the same turning sense must hold for ours.
    real = [6.9628, 41.7501, 11.2825, 43.1373, 13.1746, 39.9467, 8.9792, 38.6246]
    assert np.all(_edge_turns(real) < 0)


def test_footprints_counter_clockwise(meta_run):
    for p in rows(weeks(meta_run)[0], "plane"):
        if p["poly"] is not None:
            assert np.all(_edge_turns(p["poly"]) < 0)


def test_metadata_only_footprints_equal_written_ones(fits_run, tmp_path):
    synthesize(tmp_path, image_size=2040, metadata_only=True, **RUN)
    for d in weeks(fits_run):
        a = {p["planeid"]: p["poly"] for p in rows(d, "plane") if p["poly"]}
        b = {p["planeid"]: p["poly"] for p in rows(tmp_path / d.name, "plane") if p["poly"]}
        assert a.keys() == b.keys()
        for k in a:
            assert np.allclose(a[k], b[k], atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [N, 2040])
def test_field_stays_3_485_deg(n):
    m = ImageMeta(
        n=n,
        det=2,
        obs_id="2025W40_1A_0001_1",
        expidn=1,
        crval=(123.0, -40.0),
        pa=37.0,
        mjd_beg=60950.0,
        processed="2025-10-05T12:00:00",
    )
    w = WCS(fitsimage.image_header(m))
    mid = (n - 1) / 2
    ra, dec = w.pixel_to_world_values(
        np.array([-0.5, n - 0.5, mid, mid]), np.array([mid, mid, -0.5, n - 0.5])
    )
    assert sep_deg(ra[0], dec[0], ra[1], dec[1]) == pytest.approx(FIELD, rel=2e-3)
    assert sep_deg(ra[2], dec[2], ra[3], dec[3]) == pytest.approx(FIELD, rel=2e-3)
    assert np.allclose(proj_plane_pixel_scales(w), FIELD / n, rtol=1e-9)
    assert np.linalg.det(w.wcs.get_pc() * w.wcs.cdelt) < 0  # east left: standard parity


def test_detector_pairs_share_footprints(fits_run):
    d = weeks(fits_run)[0]
    planes = {
        (p["obsid"].split("/")[1], p["energy_bandpassname"][-1]): p
        for p in rows(d, "plane")
        if p["poly"]
    }
    for (obs, det), p in planes.items():
        if det in "123":
            assert p["poly"] == planes[(obs, str(int(det) + 3))]["poly"]
    obs = next(iter(planes))[0]
    one, two, three = (planes[(obs, k)] for k in "123")
    step = sep_deg(one["s_ra"], one["s_dec"], two["s_ra"], two["s_dec"])
    assert 3.4 < step < 3.7  # side by side, a small gap
    assert sep_deg(three["s_ra"], three["s_dec"], two["s_ra"], two["s_dec"]) == pytest.approx(step)


def test_survey_coverage(meta_run):
    planes = [p for p in rows(weeks(meta_run)[0], "plane") if p["poly"]]
    obs = {o["obsid"]: o for o in rows(weeks(meta_run)[0], "observation")}
    polys = [np.array(p["poly"]) for p in planes]
    assert any(np.ptp(p[0::2]) > 180 and abs(p[1]) < 45 for p in polys)  # across RA 0/360
    assert any(p[1::2].max() > 87 for p in polys) and any(p[1::2].min() < -87 for p in polys)
    deep = [p for p in planes if obs[p["obsid"]]["collection"] == "spherex_qr2_deep"]
    assert 0.15 < len(deep) / len(planes) < 0.25
    nep = sep_deg(
        np.array([p["s_ra"] for p in deep]), np.array([p["s_dec"] for p in deep]), 270.0, 66.56
    )
    sep = sep_deg(
        np.array([p["s_ra"] for p in deep]), np.array([p["s_dec"] for p in deep]), 90.0, -66.56
    )
    assert np.all(np.minimum(nep, sep) < 2.5 + 2 * 3.6)
    assert (nep < 10).any() and (sep < 10).any()


# ---------------------------------------------------------------- files


def test_science_file_layout(fits_run):
    d, art, plane = next(science(fits_run))
    with open_fits(d / "data" / art["uri"], verify=True) as h:
        assert [x.name for x in h] == [
            "PRIMARY",
            "IMAGE",
            "FLAGS",
            "VARIANCE",
            "ZODI",
            "PSF",
            "WCS-WAVE",
        ]
        assert h[0].data is None and h[0].header["VERSION"]
        for name, kind, bunit in (
            ("IMAGE", "f", "MJy / sr"),
            ("FLAGS", "i", None),
            ("VARIANCE", "f", "MJy2 / sr2"),
            ("ZODI", "f", "MJy / sr"),
        ):
            assert h[name].data.shape == (N, N)
            assert h[name].data.dtype.kind == kind and h[name].data.dtype.itemsize == 4
            assert h[name].header.get("BUNIT") == bunit
        img = h["IMAGE"].header
        for key in (
            "DETECTOR",
            "OBSID",
            "EXPIDN",
            "DATE",
            "DATE-OBS",
            "DATE-AVG",
            "MJD-BEG",
            "MJD-AVG",
            "MJD-END",
            "XPOSURE",
            "TELAPSE",
            "PSF_FWHM",
            "OMEGA_MEDIAN",
            "L2DQAFLG",
            "A_3_0",
            "B_0_3",
            "AP_ORDER",
            "BP_ORDER",
        ):
            assert key in img, key
        assert (img["CTYPE1"], img["CTYPE2"]) == ("RA---TAN-SIP", "DEC--TAN-SIP")
        assert img["CRPIX1"] == img["CRPIX2"] == (N + 1) / 2
        assert img["XPOSURE"] == 113.58 and img["TELAPSE"] == 115.1
        assert img["MJD-END"] - img["MJD-BEG"] == pytest.approx(115.1 / 86400)
        assert img["CTYPE1W"] == "WAVE-TAB" and img["PS1_0W"] == "WCS-WAVE"
        assert img["PS1_1W"] == "VALUES" and img["WCSNAMEA"] == "0-based active pixel coordinates"
        assert img["OMEGA_MEDIAN"] == pytest.approx((FIELD / N * 3600) ** 2, rel=0.01)
        assert img["PSF_FWHM"] == pytest.approx(plane["psf_fwhm"], abs=1e-3)
        psf = h["PSF"]
        assert psf.data.shape[0] == 121 and psf.data.dtype.kind == "f"
        assert np.allclose(psf.data.sum(axis=(1, 2)), 1, atol=1e-4)
        k = 5 * 11 + 3 + 1  # zone iy=5, ix=3: x fastest
        assert psf.header[f"XCTR_{k}"] == pytest.approx(3.5 * N / 11 + 0.5)
        assert psf.header[f"YCTR_{k}"] == pytest.approx(5.5 * N / 11 + 0.5)
        assert psf.header["XWID_121"] == pytest.approx(N / 11)
        wave = h["WCS-WAVE"].data
        assert (
            len(wave) == 1 and wave["X"].shape == (1, 11) and wave["VALUES"].shape == (1, 11, 11, 2)
        )
        flags = h["FLAGS"].header
        assert flags["MP_SOURCE"] == 21 and flags["MP_HOT"] == 10 and flags["MP_NONFUNC"] == 6
        assert "HIERARCH MP_TRANSIENT = 0" in flags.tostring()
        history = [str(x) for x in img["HISTORY"] if str(x).startswith("[CALIB]")]
    prov = [p for p in rows(d, "provenance") if p["planeid"] == plane["planeid"]]
    assert sorted(history) == sorted(
        f"[CALIB] {p['product']} {Path(p['input_uri']).name}" for p in prov
    )
    assert len(prov) == 9


def test_wavelength_and_pixel_wcs(images):
    for im in images[:6]:
        det, plane, ww = im["det"], im["plane"], im["ww"]
        with open_fits(im["d"] / "data" / im["art"]["uri"]) as h:
            wa = WCS(h["IMAGE"].header, key="A")
            wa.sip = None
        y, x = np.mgrid[0:N, 0:N]
        lam, band = ww.pixel_to_world_values(x, y)
        lo, hi = BANDS[det]
        assert lam.min() >= lo and lam.max() <= hi and lam.max() - lam.min() > 0.8 * (hi - lo)
        col = lam[:, N // 2]
        assert np.all(np.diff(col) < 0)  # along Y: longest wavelengths at the bottom
        assert np.ptp(lam[N // 2]) < 0.1 * np.ptp(col)  # only slightly along X
        assert np.allclose(band, lam / plane["energy_resolving_power"], rtol=1e-9)
        xs, ys = np.array([0.0, 10.3, 40.7]), np.array([5.0, 33.3, 63.0])
        assert np.allclose(ww.pixel_to_world_values(xs, ys)[0], optics.wave_at(det, N, xs, ys))
        assert np.allclose(wa.pixel_to_world_values(xs, ys), (xs, ys))


def test_calibration_files_are_valid_fits(fits_run):
    d = weeks(fits_run)[0]
    seen = {}
    for a in rows(d, "artifact"):
        if a["product_type"] == "calibration" and a["uri"].split("/")[2] not in seen:
            seen[a["uri"].split("/")[2]] = a["uri"]
    assert len(seen) == 9
    for product, uri in seen.items():
        with open_fits(d / "data" / uri, verify=True) as h:
            assert h[0].header["CALTYPE"] == product and len(h) >= 2
            assert all(x.data.shape[-2:] in ((N, N), (51, 51)) for x in h[1:] if x.is_image)
            if product == "spectral_wcs":
                assert [x.name for x in h[1:]] == ["CWAVE", "CBAND", "WCS-WAVE"]


def test_sizes_are_predicted_exactly(fits_run):
    for d, art, _ in science(fits_run):
        size = (d / "data" / art["uri"]).stat().st_size
        assert size == art["content_length"] == fitsimage.science_size(N, 9)
    for a in rows(weeks(fits_run)[0], "artifact"):
        if a["product_type"] == "calibration":
            product = a["uri"].split("/")[2]
            assert a["content_length"] == fitsimage.cal_size(product, N)


def test_full_size_image():
    m = ImageMeta(
        n=2040,
        det=5,
        obs_id="2025W43_1A_0516_1",
        expidn=1,
        crval=(270.0, 66.0),
        pa=10.0,
        mjd_beg=60970.0,
        processed="2025-10-26T12:00:00",
    )
    truth = Truth.empty()
    rendered = fitsimage.render(m, truth, np.random.default_rng(0))
    data = fitsimage.file_bytes(fitsimage.science_hdus(m, rendered))
    assert len(data) == fitsimage.science_size(2040, 0)
    assert 70e6 < len(data) < 75e6  # ~71,600 kB like the real files
    assert len(data) % 2880 == 0


# ---------------------------------------------------------------- pixels


def _truth(run: Path) -> list[dict]:
    return pq.read_table(run / "truth.parquet").to_pylist()


def _solid_angle(d0: Path, det: int) -> np.ndarray:
    path = next((d0 / "data/qr2/calibration/solid_angle" / str(det)).glob("*.fits"))
    return fits.getdata(path, "IMAGE") / (180 / np.pi * 3600) ** 2  # arcsec2 -> sr


def _sources_in(
    w: WCS, truth: list[dict], n: int, margin: float
) -> list[tuple[dict, float, float]]:
    ra, dec = np.array([t["ra"] for t in truth]), np.array([t["dec"] for t in truth])
    close = np.flatnonzero(sep_deg(ra, dec, *w.wcs.crval) < 3)
    if not len(close):
        return []
    x, y = w.all_world2pix(ra[close], dec[close], 0)
    inside = (
        (x > margin - 0.5) & (x < n - 0.5 - margin) & (y > margin - 0.5) & (y < n - 0.5 - margin)
    )
    return [(truth[i], xi, yi) for i, xi, yi, ok in zip(close, x, y, inside) if ok]


def test_every_image_holds_bright_sources(fits_run, images):
    truth = _truth(fits_run)
    for im in images:
        flags = im["flags"]
        found = _sources_in(im["w"], truth, N, 0)
        assert 5 <= len(found) <= 40
        for _, x, y in found:
            assert flags[int(round(y)), int(round(x))] & (1 << 21)  # SOURCE under each


def test_injected_flux_is_recovered(fits_run, images):
    truth = _truth(fits_run)
    d0 = weeks(fits_run)[0]
    errors = []
    omegas = {det: _solid_angle(d0, det) for det in range(1, 7)}
    for im in images:
        omega, ww = omegas[im["det"]], im["ww"]
        image, zodi, flags = im["image"], im["zodi"], im["flags"]
        found = _sources_in(im["w"], truth, N, 5)
        for t, x, y in found:
            if any(0 < np.hypot(x - x2, y - y2) < 10 for _, x2, y2 in found):
                continue  # blended
            ix, iy = int(round(x)), int(round(y))
            box = np.s_[iy - 4 : iy + 5, ix - 4 : ix + 5]
            if np.any(flags[box] & ~(1 << 21)):
                continue  # a defect or cosmic ray in the aperture
            measured = np.sum((image[box] - zodi[box]) * omega[box]) * 1e12  # MJy -> uJy
            lam = ww.pixel_to_world_values(x, y)[0]
            expected = np.interp(lam, t["wavelength_um"], t["flux_ujy"])
            errors.append(measured / expected - 1)
    assert len(errors) >= 20
    assert np.max(np.abs(errors)) < 0.03
    assert abs(np.median(errors)) < 0.005


def test_bad_pixels_look_bad(images):
    image, flags, zodi, var = (images[0][k] for k in ("image", "flags", "zodi", "variance"))
    nonfunc, hot, cold = ((flags & (1 << b)) > 0 for b in (6, 10, 11))
    hits = (flags & 1) > 0
    assert nonfunc.any() and hot.any() and cold.any() and hits.any()
    assert np.all(np.isnan(image[nonfunc])) and np.all(np.isnan(var[nonfunc]))
    assert np.all(image[hot] > zodi[hot] + 40) and np.all(image[cold] < 0)
    assert np.all(image[hits] > zodi[hits] + 10)
    good = flags == 0
    pull = (image[good] - zodi[good]) / np.sqrt(var[good])
    assert abs(pull.mean()) < 0.1 and pull.std() == pytest.approx(1, abs=0.1)


# ---------------------------------------------------------------- records


def test_record_schemas(fits_run, meta_run):
    expected = {
        "observation": OBSERVATION,
        "plane": PLANE,
        "artifact": ARTIFACT,
        "provenance": PROVENANCE,
    }
    names = {
        "observation": "obsid collection obs_id detector intent obs_type target_name "
        "telescope_name instrument_name planning_period delivery",
        "artifact": "artifactid planeid uri product_type content_type content_length "
        "content_checksum",
        "provenance": "planeid input_planeid input_uri product",
    }
    for d in weeks(fits_run) + weeks(meta_run):
        for table, schema in expected.items():
            got = pq.read_schema(d / f"{table}.parquet")
            assert got.names == schema.names and got.types == schema.types
            if table in names:
                assert got.names == names[table].split()
    plane = pq.read_schema(weeks(meta_run)[0] / "plane.parquet")
    types = dict(zip(plane.names, plane.types))
    assert types["poly"] == pa.list_(pa.float64()) and types["calib_level"] == pa.int16()
    assert types["s_xel1"] == types["em_xel"] == pa.int32()


def test_record_values_and_links(fits_run):
    first, second = weeks(fits_run)
    cal_planes = set()
    for d in (first, second):
        obs = {o["obsid"]: o for o in rows(d, "observation")}
        planes = {p["planeid"]: p for p in rows(d, "plane")}
        arts = rows(d, "artifact")
        assert len(obs) == len(planes) == len(arts)  # one plane and one file per observation
        cal_planes |= {p for p in planes if obs[planes[p]["obsid"]]["intent"] == "calibration"}
        for a in arts:
            p = planes[a["planeid"]]
            o = obs[p["obsid"]]
            assert (
                a["artifactid"] == a["planeid"] + "/file"
                and a["content_type"] == "application/fits"
            )
            assert o["obsid"] == f"{o['collection']}/{o['obs_id']}/D{o['detector']}"
            assert o["delivery"] == d.name and o["planning_period"] == d.name
            assert p["energy_bandpassname"] == f"SPHEREx-D{o['detector']}"
            lo, hi = BANDS[o["detector"]]
            assert (p["energy_bounds_lower"], p["energy_bounds_upper"]) == (lo * 1e-6, hi * 1e-6)
            if o["intent"] == "science":
                assert p["planeid"] == o["obsid"] + "/l2b"
                assert (
                    p["obs_publisher_did"]
                    == f"ivo://irsa.ipac/{o['collection']}?{o['obs_id']}/D{o['detector']}"
                )
                assert a["uri"].startswith(f"qr2/level2/{d.name}/l2b-v")
                assert f"level2_{o['obs_id']}D{o['detector']}_spx_l2b-v" in a["uri"]
                assert p["time_bounds_upper"] - p["time_bounds_lower"] == pytest.approx(
                    115.1 / 86400
                )
                assert (p["calib_level"], p["dataproduct_type"]) == (2, "image")
                assert p["s_pixel_scale"] == pytest.approx(6.15 * 2040 / N)
                assert p["em_xel"] == 17 and o["target_name"] is None
            else:
                assert a["uri"].startswith(f"qr2/calibration/{p['product_id']}/{o['detector']}/")
                assert p["dataproduct_type"] == "measurements"
                assert p["dataproduct_subtype"] == "spherex.calibration." + p["product_id"]
        for pr in rows(d, "provenance"):
            assert pr["planeid"] in planes and pr["input_planeid"] in cal_planes
    # the first delivery carries every product for every detector, later ones new darks
    assert len([p for p in cal_planes if "/dark" not in p]) == 8 * 6
    assert len([p for p in cal_planes if p.endswith("/dark")]) == 2 * 6


def test_small_slews_follow_each_other(meta_run):
    d = weeks(meta_run)[0]
    obs = {o["obsid"]: o for o in rows(d, "observation")}
    t = {}
    for p in rows(d, "plane"):
        o = obs[p["obsid"]]
        if o["intent"] == "science":
            t[o["obs_id"]] = p["time_bounds_lower"]
    steps = [
        (k, t[k[:-1] + str(int(k[-1]) + 1)] - t[k]) for k in t if k[:-1] + str(int(k[-1]) + 1) in t
    ]
    assert steps and all(dt * 86400 == pytest.approx(129) for _, dt in steps)
    assert all(k.startswith(d.name + "_") and k[-1] in "1234" for k in t)


def test_metadata_only_delivery(meta_run):
    d = weeks(meta_run)[0]
    man = json.loads((d / "manifest.json").read_text())
    arts = rows(d, "artifact")
    sci = [a for a in arts if a["product_type"] == "science"]
    assert len(sci) == 600 and len(arts) == 600 + 9 * 6
    assert man["metadata_only"] is True and man["files"] == []
    assert man["tables"]["provenance"]["rows"] == 600 * 9
    assert sorted(man["collections"]) == ["spherex_qr2", "spherex_qr2_cal", "spherex_qr2_deep"]
    assert not (d / "data").exists()
    for a in sci[:50]:
        assert a["content_length"] == fitsimage.science_size(2040, 9)
        assert a["content_checksum"] == "md5:" + hashlib.md5(a["uri"].encode()).hexdigest()
    assert 70e6 < sci[0]["content_length"] < 75e6


def test_manifest_checksums(fits_run):
    for d in weeks(fits_run):
        man = json.loads((d / "manifest.json").read_text())
        assert man["delivery"] == d.name and man["metadata_only"] is False
        for entry in man["tables"].values():
            path = d / entry["file"]
            assert entry["md5"] == hashlib.md5(path.read_bytes()).hexdigest()
            assert entry["rows"] == pq.read_metadata(path).num_rows
        listed = {f["key"]: f for f in man["files"]}
        for f in listed.values():
            data = (d / "data" / f["key"]).read_bytes()
            assert (len(data), hashlib.md5(data).hexdigest()) == (f["size"], f["md5"])
        on_disk = {str(p.relative_to(d / "data")) for p in (d / "data").rglob("*.fits")}
        assert on_disk == set(listed)
        for a in rows(d, "artifact"):
            assert a["content_checksum"] == "md5:" + listed[a["uri"]]["md5"]


def test_truth_table(fits_run):
    table = pq.read_table(fits_run / "truth.parquet")
    assert table.schema.names == TRUTH.names and table.schema.types == TRUTH.types
    truth = table.to_pylist()
    assert len({t["source_id"] for t in truth}) == len(truth) > 0
    for t in truth:
        assert len(t["wavelength_um"]) == len(t["flux_ujy"]) >= 10
        assert t["wavelength_um"][0] <= 0.75 and t["wavelength_um"][-1] >= 5.0
        assert min(t["flux_ujy"]) > 500 and 0 <= t["ra"] < 360 and -90 <= t["dec"] <= 90


def test_deterministic(fits_run, tmp_path):
    synthesize(tmp_path, image_size=N, **RUN)
    for d in weeks(fits_run):
        assert (d / "manifest.json").read_text() == (
            tmp_path / d.name / "manifest.json"
        ).read_text()
    assert (fits_run / "truth.parquet").read_bytes() == (tmp_path / "truth.parquet").read_bytes()


def test_zodi_follows_the_smooth_filter_law() -> None:
    """ZODI is the zodi law at every pixel's own (smooth LVF) wavelength, not at the
    bilinear 11x11 table's, which bends at every control point (issue #19)."""
    from chalicelib.devtools.synth import fitsimage, optics
    from chalicelib.devtools.synth.fitsimage import ImageMeta
    from chalicelib.devtools.synth.survey import ecliptic_latitude

    n = 128
    m = ImageMeta(n=n, det=4, obs_id="2025W40_1A_0001_1", expidn=1, crval=(10.0, 20.0),
                  pa=0.0, mjd_beg=60950.0, processed="2025-10-06T12:00:00")
    zodi = fitsimage._zodi_map(m)
    g = np.arange(n, dtype=float)
    lam = optics.filter_law(4, n, g[None, :], g[:, None])
    beta = float(ecliptic_latitude(np.array(10.0), np.array(20.0)))
    ramp = 1 + 0.02 * np.linspace(-1, 1, n)[None, :] + 0.01 * np.linspace(-1, 1, n)[:, None]
    assert np.allclose(zodi, optics.zodi_sb(lam, beta) * ramp, rtol=1e-12)
    table, _ = optics.wave_maps(4, n)
    assert np.abs(optics.zodi_sb(table, beta) * ramp / zodi - 1).max() > 1e-4
    # the table still samples the law exactly at its control points
    cp = optics.control_points(n) - 1
    assert np.allclose(table[np.ix_(cp, cp)], lam[np.ix_(cp, cp)], rtol=1e-12)
