"""The one parameter layer (chalicelib.dali): every number finite and in range for its
unit before it reaches an engine, shapes checked the same way for every protocol."""

from __future__ import annotations

import math

import pytest

from chalicelib import dali
from chalicelib.cutout.errors import CutoutError
from chalicelib.cutout.region import Circle, Polygon, Range, parse_archive_params, parse_pos


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity", "1e309", "-1e400",
                                  "abc", "", "0x10", "1,2"])
def test_number_refuses_what_is_not_a_finite_number(text):
    with pytest.raises(dali.UsageError):
        dali.number(text, "X")


def test_number_allows_infinity_only_when_spelt_as_an_open_end():
    assert dali.number("-Inf", "X", allow_inf=True) == -math.inf
    assert dali.number("+infinity", "X", allow_inf=True) == math.inf
    with pytest.raises(dali.UsageError, match="finite"):  # overflow is no open end
        dali.number("1e999", "X", allow_inf=True)


def test_number_range_is_named_in_the_error():
    with pytest.raises(dali.UsageError, match=r"outside \[0, 10\]"):
        dali.number("11", "X", 0, 10)


def test_interval_open_ends_and_order():
    assert dali.interval("-Inf 3", "BAND") == (-math.inf, 3.0)
    assert dali.interval("2", "BAND") == (2.0, 2.0)
    for bad in ("3 2", "1 2 3", "nan 1", "1e400 1e401"):
        with pytest.raises(dali.UsageError):
            dali.interval(bad, "BAND")


@pytest.mark.parametrize("text", [
    "CIRCLE 10 95 1", "CIRCLE 10 10 0", "CIRCLE 10 10 181", "CIRCLE 10 10", "CIRCLE inf 0 1",
    "CIRCLE nan 1 1", "POLYGON 10 10 11 10 Infinity 11", "POLYGON 10 10 11 10",
    "POLYGON 10 10 11 10 12 91", "RANGE 1 2 3", "RANGE 1 2 50 40", "RANGE nan 2 3 4",
    "TRIANGLE 1 2 3", ""])
def test_shape_refuses_bad_shapes(text):
    with pytest.raises(dali.UsageError):
        dali.shape(text)


def test_shape_normalises_longitudes_and_open_ranges():
    assert dali.shape("circle -10 20 1") == ("CIRCLE", (350.0, 20.0, 1.0))
    assert dali.shape("RANGE -Inf +Inf -100 100") == ("RANGE", (0.0, 360.0, -90.0, 90.0))
    assert dali.shape("POLYGON 370 0 10 1 -10 0") == ("POLYGON", (10, 0, 10, 1, 350, 0))


def test_polygon_vertex_limit_is_named_and_checked():
    ok = " ".join(f"{i * 0.001} {i % 2 * 0.001}" for i in range(dali.MAX_VERTICES))
    assert len(dali.shape("POLYGON " + ok)[1]) == 2 * dali.MAX_VERTICES
    too_many = ok + " 5 5"
    with pytest.raises(dali.UsageError, match=f"at most {dali.MAX_VERTICES}"):
        dali.shape("POLYGON " + too_many)


def test_soda_pos_uses_the_same_parser_with_its_own_error():
    assert parse_pos("CIRCLE 1 2 3") == Circle(1.0, 2.0, 3.0)
    assert isinstance(parse_pos("RANGE 1 2 3 4"), Range)
    assert isinstance(parse_pos("POLYGON 1 1 2 1 2 2"), Polygon)
    with pytest.raises(CutoutError):
        parse_pos("POLYGON 10 10 11 10 Infinity 11")


@pytest.mark.parametrize("center,size", [
    ("10,10", "1e308"), ("1e308,0px", "10px"), ("1e20,0px", "1e308deg"), ("10,10", "1e308rad"),
    ("1e307,0rad", "1"), ("10,10", "0"), ("10,10", "181"), ("10,10", "200000px"),
    ("10,100", "1"), ("10,1.6rad", "1")])
def test_archive_cutout_params_are_bounded(center, size):
    with pytest.raises(CutoutError):
        parse_archive_params(center, size)


def test_archive_cutout_params_convert_units():
    box = parse_archive_params("-30,1arcmin", "60,30arcsec").shape
    assert (box.x, box.y) == pytest.approx((359.5, 1 / 60))
    assert (box.width, box.height) == pytest.approx((1 / 60, 1 / 120))
    px = parse_archive_params("300,120px", "64px").shape
    assert (px.x, px.y, px.width, px.height, px.pixel_center, px.pixel_size) == \
        (300.0, 120.0, 64.0, 64.0, True, True)
