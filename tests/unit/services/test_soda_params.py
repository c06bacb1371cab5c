"""SODA's parameter parsing and its async job validation, without HTTP or a catalogue."""

from __future__ import annotations

import pytest

from chalicelib.cutout import Circle, CutoutError, MultiValued, Polygon, parse_soda_params
from chalicelib.jobs.uws import UWSUsageError
from chalicelib.services import soda
from chalicelib.web.params import Params


def test_every_combination_of_shape_band_and_time_is_one_region() -> None:
    p = Params([("POS", "CIRCLE 1 2 0.1"), ("POLYGON", "0 0 1 0 1 1"), ("BAND", "1e-6 2e-6"),
                ("TIME", "60000 60001"), ("TIME", "60002 60003"), ("POL", "I Q"),
                ("POL", "I")])
    regions = parse_soda_params(p)
    assert len(regions) == 2 * 1 * 2
    assert [type(r.shape) for r in regions] == [Circle, Circle, Polygon, Polygon]
    assert {r.time for r in regions} == {(60000.0, 60001.0), (60002.0, 60003.0)}
    assert {r.band for r in regions} == {(1e-6, 2e-6)}
    assert {r.pol for r in regions} == {("I", "Q")}  # POL values together, once each


def test_no_filter_is_one_whole_image_region() -> None:
    [region] = parse_soda_params(Params([("ID", "x"), ("POS", "  ")]))
    assert (region.shape, region.band, region.time, region.pol) == (None, None, None, None)


def test_sync_refuses_repeated_parameters() -> None:
    with pytest.raises(MultiValued):
        parse_soda_params(Params([("BAND", "1e-6"), ("BAND", "2e-6")]), sync=True)
    assert len(parse_soda_params(Params([("BAND", "1e-6"), ("BAND", "2e-6")]))) == 2


@pytest.mark.parametrize("pairs", [[("POL", "Z")], [("CIRCLE", "1 2")], [("BAND", "2 1")]])
def test_bad_values_are_cutout_errors(pairs) -> None:
    with pytest.raises(CutoutError):
        parse_soda_params(Params(pairs))


def test_sync_answers_parameter_errors_before_any_lookup() -> None:
    base = "http://soda.test"
    assert soda.sync(Params([]), base).body == b"UsageError: ID is required"
    two = soda.sync(Params([("ID", "a"), ("ID", "b")]), base)
    assert two.status == 400 and two.body.startswith(b"MultiValuedParamNotSupported")
    assert f"{base}/soda/async".encode() in two.body
    multi = soda.sync(Params([("ID", "a"), ("POS", "CIRCLE 1 2 0.1"),
                              ("CIRCLE", "3 4 0.1")]), base)
    assert multi.status == 400 and b"POS, CIRCLE and POLYGON" in multi.body
    bad = soda.sync(Params([("ID", "a"), ("TIME", "late")]), base)
    assert bad.status == 400 and bad.body.startswith(b"UsageError: TIME")


def test_job_validation() -> None:
    soda.JOB.validator({"id": ["a", "b"], "circle": ["1 2 0.1", "3 4 0.1"]})  # 4 cutouts
    with pytest.raises(UWSUsageError, match="ID is required"):
        soda.JOB.validator({"circle": ["1 2 0.1"]})
    with pytest.raises(UWSUsageError, match="POL"):
        soda.JOB.validator({"id": ["a"], "pol": ["Z"]})
    ids = [f"id{i}" for i in range(soda.MAX_ASYNC_CUTOUTS // 2 + 1)]
    with pytest.raises(UWSUsageError) as e:  # IDs x shapes over the limit per job
        soda.JOB.validator({"id": ids, "band": ["1e-6", "2e-6"]})
    assert f"{2 * len(ids)} cutouts requested" in str(e.value)
