"""Survey plan: weeks, large and small slews, pointings, times and identifiers.

A week (planning period, e.g. 2025W43) is a list of exposures. Large slews move anywhere on
the sky (wide collection) or to one of the two deep fields (deep collection, ~20 % of
exposures); each is followed by up to 4 small slews 129 s apart that step the pointing
along the detector Y axis (the LVF gradient), so a source is seen at new wavelengths.
Every exposure gives 6 detector images: D1/D4, D2/D5, D3/D6 share a footprint, and the
three arrays of a focal plane sit side by side along the detector X axis.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import optics
from .geometry import corner_offsets, pix_to_sky, tan_to_sky

WIDE, DEEP = "spherex_qr2", "spherex_qr2_deep"
CAL = "spherex_qr2_cal"
DEEP_FIELDS = ((270.0, 66.56), (90.0, -66.56))  # NEP; ecliptic latitude -82 (SEP side)
DEEP_FRACTION = 0.2
DEEP_RADIUS_DEG = 2.5  # pointing scatter around a deep-field centre
SMALL_STEP_DEG = 0.22 * optics.FIELD_DEG
CADENCE_S = 129.0
XPOSURE_S = 113.58
TELAPSE_S = 115.1
L2B_VERSION = 20
PIPELINE_VERSION = "6.4.2"
MJD_UNIX_EPOCH = 40587.0
_WEEK_RE = re.compile(r"^(\d{4})W(\d{2})$")


@dataclass(frozen=True)
class Week:
    """An ISO week used as planning period and delivery name."""

    year: int
    num: int

    @classmethod
    def parse(cls, name: str) -> Week:
        m = _WEEK_RE.match(name)
        if not m:
            raise ValueError(f"week must look like 2025W35, got {name!r}")
        week = cls(int(m[1]), int(m[2]))
        week.monday  # noqa: B018 - raises ValueError on an impossible week number
        return week

    @property
    def name(self) -> str:
        return f"{self.year}W{self.num:02d}"

    @property
    def monday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.num, 1)

    @property
    def mjd0(self) -> float:
        return MJD_UNIX_EPOCH + (self.monday - dt.date(1970, 1, 1)).days

    @property
    def processing_tag(self) -> str:
        """YYYY-DDD of the week's Sunday: the processing date in file names (W43 -> 2025-299)."""
        return day_tag(self.monday + dt.timedelta(days=6))

    @property
    def release_date(self) -> str:
        return (self.monday + dt.timedelta(days=7)).isoformat() + "T00:00:00"

    def shift(self, weeks: int) -> Week:
        d = self.monday + dt.timedelta(weeks=weeks)
        y, w, _ = d.isocalendar()
        return Week(y, w)


def day_tag(day: dt.date) -> str:
    return f"{day.year}-{day.timetuple().tm_yday:03d}"


def mjd_to_iso(mjd: float) -> str:
    """ISO UTC with milliseconds (no leap-second handling: synthetic times)."""
    t = dt.datetime(1970, 1, 1) + dt.timedelta(days=mjd - MJD_UNIX_EPOCH)
    return t.isoformat(timespec="milliseconds")


def ecliptic_latitude(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    eps = np.radians(23.4393)
    a, d = np.radians(ra), np.radians(dec)
    return np.degrees(np.arcsin(np.sin(d) * np.cos(eps) - np.cos(d) * np.sin(eps) * np.sin(a)))


def _partition(total: int, rng: np.random.Generator) -> np.ndarray:
    """Small slews per large slew: mostly 4, sometimes fewer; sums to total."""
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    sizes = rng.choice([4, 4, 4, 4, 4, 4, 3, 2, 1], size=total)
    csum = np.cumsum(sizes)
    k = int(np.searchsorted(csum, total))
    sizes = sizes[: k + 1].copy()
    sizes[-1] -= csum[k] - total
    return sizes


@dataclass
class WeekPlan:
    """Exposures of one week (arrays of length n_exp) and their six images."""

    week: Week
    slew_ra: np.ndarray  # large-slew boresight of each exposure
    slew_dec: np.ndarray
    pa: np.ndarray  # position angle of the detector Y axis, deg
    step_offset: np.ndarray  # small-slew offset along detector Y, deg
    step: np.ndarray  # small slew 1..4
    slew_num: np.ndarray  # large-slew counter within its half-week plan
    half: np.ndarray  # 0 -> '1A', 1 -> '2B'
    deep: np.ndarray  # bool
    mjd_beg: np.ndarray

    @property
    def n_exp(self) -> int:
        return len(self.pa)

    @cached_property
    def obs_id(self) -> list[str]:
        sub = ("1A", "2B")
        return [
            f"{self.week.name}_{sub[h]}_{s:04d}_{k}"
            for h, s, k in zip(self.half.tolist(), self.slew_num.tolist(), self.step.tolist())
        ]

    @cached_property
    def expidn(self) -> np.ndarray:
        return (
            (self.week.year % 100) * 10_000_000
            + self.week.num * 100_000
            + np.arange(1, self.n_exp + 1)
        )

    @cached_property
    def centres(self) -> np.ndarray:
        """(n_exp, 3, 2) RA/Dec of the three array centres (CRVAL)."""
        ox = (np.arange(3) - 1) * optics.ARRAY_OFFSET_DEG
        oy = self.step_offset[:, None] + 0 * ox
        m = optics.rotation(self.pa)
        xi = m[:, 0, 0, None] * ox + m[:, 0, 1, None] * oy
        eta = m[:, 1, 0, None] * ox + m[:, 1, 1, None] * oy
        ra, dec = tan_to_sky(self.slew_ra[:, None], self.slew_dec[:, None], xi, eta)
        return np.stack([ra, dec], axis=-1)

    def footprints(self, n: int) -> np.ndarray:
        """(n_exp, 3, 8) outer pixel-grid corners ra1,dec1,... per array position (CCW)."""
        out = np.empty((self.n_exp, 3, 8))
        cu, cv = corner_offsets(n)
        pc = optics.pc_matrix(self.pa, n)
        for pos in range(3):
            a, b, _, _ = optics.sip(pos, n)
            ra, dec = pix_to_sky(self.centres[:, pos], pc, a, b, cu, cv)
            out[:, pos, 0::2], out[:, pos, 1::2] = ra, dec
        return out


def _special_fields(week: Week, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Fields crossing RA 0/360 and covering each pole, rotated so every week leads with one."""
    fields = [
        (0.4, float(rng.uniform(-30, 30))),
        (float(rng.uniform(0, 360)), 88.6),
        (float(rng.uniform(0, 360)), -88.4),
    ]
    k = week.num % 3
    return fields[k:] + fields[:k]


def _schedule(n_wide: int, n_deep: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Large-slew sizes and deep flags, deep slews spread evenly in time."""
    wide, deep = _partition(n_wide, rng), _partition(n_deep, rng)
    total = len(wide) + len(deep)
    is_deep = np.zeros(total, dtype=bool)
    is_deep[((np.arange(len(deep)) + 0.5) * total / max(len(deep), 1)).astype(int)] = True
    sizes = np.empty(total, dtype=np.int64)
    sizes[~is_deep], sizes[is_deep] = wide, deep
    return sizes, is_deep


def plan_week(week: Week, images: int, seed: int) -> WeekPlan:
    """Exposures of a week; images is rounded down to a multiple of 6 (at least one exposure).

    Depends only on (week, images, seed), so a week is the same whatever run produced it.
    """
    rng = np.random.default_rng([seed, week.year, week.num, 1])
    n_exp = max(1, images // 6)
    n_deep = max(1, round(DEEP_FRACTION * n_exp)) if n_exp >= 2 else 0
    sizes, is_deep = _schedule(n_exp - n_deep, n_deep, rng)
    n_large = len(sizes)
    # Large-slew pointings.
    ra = rng.uniform(0, 360, n_large)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n_large)))
    wide_idx = np.flatnonzero(~is_deep)
    for i, (r, d) in zip(wide_idx, _special_fields(week, rng)):
        ra[i], dec[i] = r, d
    deep_idx = np.flatnonzero(is_deep)
    which = (np.arange(len(deep_idx)) + week.num) % 2
    rad = DEEP_RADIUS_DEG * np.sqrt(rng.uniform(0, 1, len(deep_idx)))
    ang = rng.uniform(0, 2 * np.pi, len(deep_idx))
    cen = np.array(DEEP_FIELDS)[which].reshape(-1, 2)
    ra[deep_idx], dec[deep_idx] = tan_to_sky(
        cen[:, 0], cen[:, 1], rad * np.cos(ang), rad * np.sin(ang)
    )
    pa = rng.uniform(0, 360, n_large)
    # Expand to exposures: small slews step along detector Y, centred on the large slew.
    slew = np.repeat(np.arange(n_large), sizes)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    step = np.arange(n_exp) - first + 1
    offset = (step - 1 - (sizes[slew] - 1) / 2) * SMALL_STEP_DEG
    # Times: 129 s cadence, the spare time of the week spread over the large slews.
    week_s = 7 * 86400.0
    gap = float(np.clip((week_s - 600 - n_exp * CADENCE_S) / n_large, 0, 600))
    t = 300 + np.arange(n_exp) * CADENCE_S + slew * gap
    half = (t >= week_s / 2).astype(np.int64)
    # Large-slew counters restart with the second half-week plan ('2B').
    slew_half = half[first]
    first_in_half = np.array([slew[slew_half == h].min(initial=n_large) for h in (0, 1)])
    slew_num = slew - first_in_half[slew_half] + 1
    return WeekPlan(
        week=week,
        slew_ra=ra[slew],
        slew_dec=dec[slew],
        pa=pa[slew],
        step_offset=offset,
        step=step,
        slew_num=slew_num,
        half=slew_half,
        deep=is_deep[slew],
        mjd_beg=week.mjd0 + t / 86400.0,
    )
