"""DALI parameter values, parsed once for every protocol: numbers, intervals and shapes.

Every number a caller sends reaches the engines through here, finite (or an explicit
+/-Inf where DALI allows an open interval end) and inside the range of its unit, so no
route can meet an inf, NaN or overflow later. Sizes of what a caller may ask for are
bounded here too (vertices), before any work is done.
"""

from __future__ import annotations

import math
import re

# A footprint has 4 vertices, a hand-drawn region a few dozen; 10,000 cost seconds of CPU.
MAX_VERTICES = 1000
MAX_RADIUS_DEG = 180.0
_SPLIT = re.compile(r"[\s,]+")


class UsageError(ValueError):
    """A caller's mistake in a parameter value; the message says what to change."""


def number(text: str, what: str, lo: float = -math.inf, hi: float = math.inf,
           *, allow_inf: bool = False, error: type[Exception] = UsageError) -> float:
    """One number in [lo, hi]. NaN never passes; +/-Inf only with allow_inf (DALI's open
    interval ends) and a literal too big for a double (1e309) is refused, not made inf."""
    word = text.strip()
    try:
        value = float(word)
    except ValueError:
        raise error(f"{what}: {text!r} is not a number") from None
    if math.isnan(value):
        raise error(f"{what}: NaN is not allowed")
    if math.isinf(value) and not (allow_inf and word.lower().lstrip("+-") in
                                  ("inf", "infinity")):
        raise error(f"{what}: {text!r} is not a finite number")
    if not lo <= value <= hi:
        raise error(f"{what}: {value:g} is outside [{lo:g}, {hi:g}]")
    return value


def numbers(text: str, what: str, *, allow_inf: bool = False,
            error: type[Exception] = UsageError) -> list[float]:
    """Numbers separated by blanks or commas."""
    words = [w for w in _SPLIT.split(text.strip()) if w]
    return [number(w, what, allow_inf=allow_inf, error=error) for w in words]


def interval(text: str, what: str, lo: float = -math.inf, *,
             error: type[Exception] = UsageError) -> tuple[float, float]:
    """DALI interval 'lo hi' (a single value means lo = hi); -Inf/+Inf are open ends."""
    vals = numbers(text, what, allow_inf=True, error=error)
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or vals[0] > vals[1] or vals[1] < lo:
        raise error(f"{what}: expected an interval 'lo hi' with lo <= hi (-Inf/+Inf "
                    f"allowed), got {text!r}")
    return vals[0], vals[1]


def _dec(value: float, what: str, error: type[Exception]) -> None:
    if not -90.0 <= value <= 90.0:
        raise error(f"{what}: declination {value:g} deg is outside [-90, 90]")


def circle(v: list[float], what: str = "CIRCLE",
           error: type[Exception] = UsageError) -> tuple[float, float, float]:
    """(ra in [0, 360), dec, radius) in degrees."""
    if len(v) != 3 or not all(math.isfinite(x) for x in v):
        raise error(f"{what} needs 3 finite numbers: ra dec radius (deg)")
    _dec(v[1], what, error)
    if not 0.0 < v[2] <= MAX_RADIUS_DEG:
        raise error(f"{what}: the radius must be in (0, 180] deg, got {v[2]:g} deg")
    return v[0] % 360.0, v[1], v[2]


def range_(v: list[float], what: str = "RANGE",
           error: type[Exception] = UsageError) -> tuple[float, float, float, float]:
    """(ra1, ra2, dec1, dec2) in degrees; an infinite or >= 360 deg RA span is the whole
    circle (0, 360); declinations are clipped to the poles."""
    if len(v) != 4:
        raise error(f"{what} needs 4 numbers: ra1 ra2 dec1 dec2 (deg; -Inf/+Inf allowed)")
    ra1, ra2, dec1, dec2 = v
    dec1, dec2 = max(dec1, -90.0), min(dec2, 90.0)
    if dec1 > dec2:
        raise error(f"{what}: declinations must satisfy -90 <= dec1 <= dec2 <= 90, got "
                    f"{v[2]:g} {v[3]:g}")
    if math.isinf(ra1) or math.isinf(ra2) or ra2 - ra1 >= 360.0:
        return 0.0, 360.0, dec1, dec2
    return ra1 % 360.0, ra2 % 360.0, dec1, dec2


def polygon(v: list[float], what: str = "POLYGON",
            error: type[Exception] = UsageError) -> tuple[float, ...]:
    """Flat (ra, dec, ...) in degrees, ra in [0, 360), 3 to MAX_VERTICES vertices."""
    if len(v) < 6 or len(v) % 2 or not all(math.isfinite(x) for x in v):
        raise error(f"{what} needs at least 3 (ra, dec) vertices, finite numbers (deg)")
    if len(v) // 2 > MAX_VERTICES:
        raise error(f"{what} has {len(v) // 2} vertices; at most {MAX_VERTICES} are "
                    f"accepted")
    for d in v[1::2]:
        _dec(d, what, error)
    return tuple(x % 360.0 if i % 2 == 0 else x for i, x in enumerate(v))


SHAPES = ("CIRCLE", "RANGE", "POLYGON")


def shape(text: str, what: str = "POS", kinds: tuple[str, ...] = SHAPES,
          error: type[Exception] = UsageError) -> tuple[str, tuple[float, ...]]:
    """A DALI shape 'CIRCLE ra dec r' | 'RANGE ra1 ra2 dec1 dec2' | 'POLYGON ra dec ...'
    as (kind, normalised numbers). Only RANGE admits infinite values."""
    words = text.split(None, 1)
    kind = words[0].upper() if words else ""
    if kind not in kinds:
        raise error(f"{what}: unknown shape in {text!r}; use "
                    f"{', '.join(kinds[:-1])} or {kinds[-1]}")
    label = f"{what} {kind}"
    vals = numbers(words[1] if len(words) > 1 else "", label, allow_inf=kind == "RANGE",
                   error=error)
    if kind == "CIRCLE":
        return kind, circle(vals, label, error)
    if kind == "RANGE":
        return kind, range_(vals, label, error)
    return kind, polygon(vals, label, error)
