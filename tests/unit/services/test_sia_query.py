"""SiaQuery, SIA's parameter model, and its translation to SQL, without HTTP."""

from __future__ import annotations

import math

import pytest

from chalicelib.services import sia
from chalicelib.services.sia import SiaQuery, SiaUsageError
from chalicelib.web.params import Params


def parse(*pairs: tuple[str, str], default: int = 100, hard: int = 1000) -> SiaQuery:
    return SiaQuery.parse(Params(list(pairs)), default, hard)


class FakeCatalogue:
    """Only what where() asks of a catalogue: the bounding-box SQL of a cone."""

    def box_sql(self, ra_col, dec_col, ra, dec, r, footprint=False, table=None) -> str:
        return f"BOX({ra:g},{dec:g},{r:g})"


def test_the_model_holds_each_parameter_normalised() -> None:
    q = parse(("POS", "CIRCLE 370 10 0.5"), ("pos", " "), ("BAND", "1e-6 2e-6"),
              ("TIME", "60000"), ("POL", "I"), ("CALIB", "2"), ("COLLECTION", "c1"),
              ("COLLECTION", "c2"), ("EXPTIME", "-Inf 100"), ("MAXREC", "5"),
              ("RESPONSEFORMAT", "text/csv"))
    assert q.maxrec == 5 and q.responseformat == "csv"
    assert q.pos == (("CIRCLE", (10.0, 10.0, 0.5)),)  # RA wrapped; a blank value ignored
    assert q.band == ((1e-6, 2e-6),) and q.time == ((60000.0, 60000.0),)
    assert q.pol == ("I",)
    # SIMPLE parameters in SIMPLE's order, whatever the order of the request
    assert q.simple == (("EXPTIME", ((-math.inf, 100.0),)), ("COLLECTION", ("c1", "c2")),
                        ("CALIB", (2,)))


def test_maxrec_defaults_and_is_capped() -> None:
    assert parse().maxrec == 100
    assert parse(("MAXREC", "99999")).maxrec == 1000
    assert parse().responseformat == "votable"


def test_maxrec_zero_does_not_look_at_the_constraints() -> None:
    q = parse(("MAXREC", "0"), ("POS", "NOT A SHAPE"))
    assert (q.maxrec, q.pos, q.simple) == (0, (), ())


@pytest.mark.parametrize("pairs, words", [
    ([("POS", "SQUARE 1 2 3")], "unknown shape"),
    ([("POS", "CIRCLE 1 100 1")], "outside [-90, 90]"),
    ([("BAND", "2 1")], "lo <= hi"),
    ([("POL", "Z")], "not a polarization state"),
    ([("CALIB", "two")], "not an integer"),
    ([("MAXREC", "-1")], "non-negative"),
    # the first bad parameter in POS, BAND, TIME, POL, SIMPLE order is the one reported
    ([("CALIB", "x"), ("BAND", "x")], "BAND"),
])
def test_bad_values_raise_sia_usage_errors(pairs, words) -> None:
    with pytest.raises(SiaUsageError) as e:
        parse(*pairs)
    assert words in str(e.value)


def test_where_ors_values_and_ands_parameters() -> None:
    q = parse(("COLLECTION", "a"), ("COLLECTION", "b'c"), ("CALIB", "3"),
              ("BAND", "-Inf 2e-6"))
    sql = sia.where(q, FakeCatalogue())
    # BAND overlaps (-Inf, 2e-6]: only the lower end of the product's band is bounded
    assert sql == ("((em_min <= 2e-06 AND em_min IS NOT NULL AND em_max IS NOT NULL)) AND "
                   "((obs_collection = 'a') OR (obs_collection = 'b''c')) AND "
                   "((calib_level = 3))")
    assert sia.where(parse(), FakeCatalogue()) == "TRUE"


def test_where_of_a_circle_uses_the_box_and_the_exact_test() -> None:
    sql = sia.where(parse(("POS", "CIRCLE 10 20 0.5")), FakeCatalogue())
    assert sql.startswith("((BOX(10,20,0.5) AND sky_circle_x_poly_bin(10.0, 20.0, 0.5, ")
