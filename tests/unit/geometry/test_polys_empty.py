"""A batch without polygons (e.g. only calibration rows, whose s_region is NULL)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from chalicelib.geometry import sky, sqlfunctions


def test_empty_batches_have_no_polygon_starts():
    sky.kernels_ready(wait=True)  # the numba kernels read start/count unchecked
    empty = sky.Polys.one([0.0, 0.0, 1.0, 0.0, 1.0, 1.0], 0)
    assert len(empty) == len(empty.start) == 0
    assert sky.points_in_polys(np.empty((0, 3)), empty).tolist() == []
    nulls = pa.array([None, None, None], pa.list_(pa.float64()))
    assert len(sky.Polys.from_arrow(nulls).start) == 3
    # the polygon-polygon test on a batch whose footprints are all NULL: NULL, no crash
    q = pa.array([[10.0, 0.0, 11.0, 0.0, 11.0, 1.0]] * 3, pa.list_(pa.float64()))
    assert sqlfunctions.poly_x_poly(q, nulls).to_pylist() == [None, None, None]
