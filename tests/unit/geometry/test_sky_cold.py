"""The cold-start paths of the geometry layer give the kernels' answers bit for bit."""

from __future__ import annotations

import numpy as np

from chalicelib.geometry import sky


def _random_polys(rng, n):
    coords = []
    for _ in range(n):
        ra, dec, r = rng.uniform(0, 360), rng.uniform(-89, 89), rng.uniform(0.01, 3)
        k = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        cd = max(np.cos(np.radians(dec)), 0.05)
        coords.append([float(v) for a in ang for v in (
            (ra + r * np.cos(a) / cd) % 360, float(np.clip(dec + r * np.sin(a), -90, 90)))])
    return coords


def test_numpy_point_in_polygon_equals_the_kernel():
    import pyarrow as pa

    sky.kernels_ready(wait=True)
    rng = np.random.default_rng(7)
    coords = _random_polys(rng, 400) + [[], [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]] * 3
    arr = pa.array(coords, pa.list_(pa.float64()))
    polys = sky.Polys.from_arrow(arr)
    v = np.empty_like(polys.v)
    sky._xyz_exact(np.asarray(arr.values), v)
    assert np.array_equal(v, polys.v)  # the same unit vectors, bit for bit
    # points at, near and far from the vertices (edges and vertices included)
    flat = arr.values.to_numpy()
    first = np.asarray(arr.offsets)[:-1]
    ra = np.where(np.diff(arr.offsets) > 0, flat[np.minimum(first, len(flat) - 2)], 0.5)
    dec = np.where(np.diff(arr.offsets) > 0, flat[np.minimum(first + 1, len(flat) - 1)], 0.5)
    for jitter in (0.0, 1e-12, 1e-3, 0.5, 5.0):
        p = sky._rows(sky.xyz(ra + rng.normal(0, jitter, len(ra)),
                              np.clip(dec + rng.normal(0, jitter, len(dec)), -90, 90)))
        out = np.zeros(len(polys), bool)
        sky._k_points_in_polys(p, polys.v, polys.start, polys.count, out)
        assert np.array_equal(sky._points_in_polys_np(p, polys), out), jitter
    centre = sky._rows(polys.centre())
    out = np.zeros(len(polys), bool)
    sky._k_points_in_polys(centre, polys.v, polys.start, polys.count, out)
    assert np.array_equal(sky._points_in_polys_np(centre, polys), out)
    assert out[:400].all()


def test_reading_a_footprint_does_not_start_loading_the_kernels():
    """A DataLink answer reads one footprint's centre and radius: that must not start the
    numba loader (~0.5 s of CPU in a new container); a kernel test does start it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import json, sys, threading\n"
        "from chalicelib.geometry import sky\n"
        "p = sky.Polys.one([10.0, 10.0, 11.0, 10.0, 11.0, 11.0])\n"
        "c, r = p.centre(), p.radius()\n"
        "before = ['numba' in sys.modules, any(t.name == 'sky-kernels'\n"
        "          for t in threading.enumerate())]\n"
        "inside = sky.points_in_polys(sky.xyz([10.5], [10.4]).reshape(1, 3), p)\n"
        "after = bool(sky._loader) or sky._READY.is_set()\n"
        "print(json.dumps({'before': before, 'after': after, 'inside': bool(inside[0])}))\n")
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=root, timeout=300, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"before": [False, False], "after": True, "inside": True}
