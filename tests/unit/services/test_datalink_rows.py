"""DataLink's rows for one dataset, built from catalogue rows given here (no HTTP)."""

from __future__ import annotations

from chalicelib.services import datalink

BASE = "https://archive.test"
IMAGE = {"uri": "qr2/w1/img.fits", "content_type": "application/fits",
         "content_length": 123, "dataproduct_type": "image", "poly": [10, 0, 11, 0, 11, 1, 10, 1],
         "planeid": "p1", "em_lo": 7.5e-7, "em_hi": 1.1e-6, "t_lo": 60000.5, "t_hi": 60000.6}
DARK = {"uri": "cal/dark.fits", "content_type": "application/fits", "content_length": 9,
        "dataproduct_type": "measurements", "dataproduct_subtype": "dark", "poly": None}
CALS = [{"uri": "cal/gain.fits", "product": "gain", "content_type": "application/fits",
         "content_length": 5}]


def test_an_image_gets_its_file_cutouts_preview_and_calibrations() -> None:
    rows = datalink._rows_for("ivo://x?img", IMAGE, CALS, BASE, "-0")
    assert [r["semantics"] for r in rows] == ["#this", "#cutout", "#cutout", "#preview",
                                              "#calibration"]
    assert {r["ID"] for r in rows} == {"ivo://x?img"}
    this, soda, cutout, preview, cal = rows
    assert this["access_url"] == f"{BASE}/data/qr2/w1/img.fits"
    assert (this["content_length"], this["content_qualifier"]) == (123, "#image")
    assert (soda["service_def"], soda["access_url"]) == ("soda-0", None)
    assert (cutout["service_def"], cutout["local_semantics"]) == ("cutout-0",
                                                                  "archive-cutout")
    assert preview["access_url"] == f"{BASE}/preview/qr2/w1/img.fits"
    assert (cal["access_url"], cal["local_semantics"]) == (f"{BASE}/data/cal/gain.fits",
                                                           "gain")
    assert all(r["error_message"] is None and r["link_authorized"] is True for r in rows)


def test_a_calibration_file_gets_its_file_only() -> None:
    [this] = datalink._rows_for("ivo://x?dark", DARK, [], BASE, "")
    assert this["semantics"] == "#this" and "dark" in this["description"]
    assert this["access_url"] == f"{BASE}/data/cal/dark.fits"


def test_an_unknown_id_gets_an_error_row() -> None:
    [row] = datalink._rows_for("ivo://x?nothing", None, [], BASE, "")
    assert row["error_message"].startswith("NotFoundFault: ivo://x?nothing")
    assert row["access_url"] is None and row["link_authorized"] is None


def test_per_id_descriptors_only_for_sky_images() -> None:
    rows, resources = datalink._answer("ivo://x?img", IMAGE, [], BASE, "-3")
    assert len(rows) == 4 and len(resources) == 2
    assert 'ID="soda-3"' in resources[0] and 'ID="cutout-3"' in resources[1]
    # the SODA descriptor states this image's own bounds
    assert '<MIN value="7.5e-07"/><MAX value="1.1e-06"/>' in resources[0]
    assert '<MIN value="60000.5"/><MAX value="60000.6"/>' in resources[0]
    assert 'value="ivo://x?img"' in resources[0]
    assert datalink._answer("ivo://x?dark", DARK, [], BASE, "-4")[1] == []
    assert datalink._answer("ivo://x?img", IMAGE, [], BASE, None)[1] == []


def test_a_dataset_whose_rows_fail_becomes_a_fatal_error_row() -> None:
    broken = {**IMAGE, "uri": None}
    broken.pop("content_type")
    [row], resources = datalink._answer("ivo://x?bad", broken, [], BASE, "-1")
    assert row["error_message"].startswith("FatalFault: links for ivo://x?bad")
    assert resources == []
