"""The calibration collection: which file of each product every science image used.

Names follow the real products (e.g. abs_gain_matrix_D1_spx_cal-agm-v4-2025-161.fits);
keys are qr2/calibration/<product>/<det>/<file>. Most products are fixed; the dark is
re-issued every week, so each delivery carries new darks and the first delivery of a run
carries the whole set.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .survey import CAL, MJD_UNIX_EPOCH, Week, day_tag

BASE_TAG = "base-2025-158"
# product -> (file stem, version tag); None means re-issued weekly (see weekly_tag).
PRODUCTS: dict[str, tuple[str, str | None]] = {
    "gain": ("abs_gain_matrix", "cal-agm-v4-2025-161"),
    "dark": ("dark", None),
    "psf": ("average_psf", "cal-psf-v4-2025-161"),
    "spectral_wcs": ("spectral_wcs", BASE_TAG),
    "solid_angle": ("solid_angle", "cal-sam-v4-2025-161"),
    "nonlinearity": ("nonlinear_pars", BASE_TAG),
    "nonfunc_mask": ("nonfunc", BASE_TAG),
    "read_noise": ("readnoise_pars", BASE_TAG),
    "dichroic_mask": ("dichroic", BASE_TAG),
}


def weekly_tag(week: Week) -> str:
    """Dark of a week: processed the Sunday before it starts."""
    return f"cal-drk-v4-{day_tag(week.monday - dt.timedelta(days=1))}"


@dataclass(frozen=True)
class CalFile:
    product: str
    det: int
    tag: str

    @property
    def stem(self) -> str:
        return PRODUCTS[self.product][0]

    @property
    def filename(self) -> str:
        return f"{self.stem}_D{self.det}_spx_{self.tag}.fits"

    @property
    def key(self) -> str:
        return f"qr2/calibration/{self.product}/{self.det}/{self.filename}"

    @property
    def obs_id(self) -> str:
        return f"{self.stem}_spx_{self.tag}"

    @property
    def obsid(self) -> str:
        return f"{CAL}/{self.obs_id}/D{self.det}"

    @property
    def planeid(self) -> str:
        return f"{self.obsid}/{self.product}"

    @property
    def publisher_did(self) -> str:
        return f"ivo://irsa.ipac/{CAL}?{self.obs_id}/D{self.det}"

    @property
    def processed(self) -> dt.date:
        year, doy = self.tag.rsplit("-", 2)[-2:]
        return dt.date(int(year), 1, 1) + dt.timedelta(days=int(doy) - 1)

    @property
    def mjd(self) -> float:
        return MJD_UNIX_EPOCH + (self.processed - dt.date(1970, 1, 1)).days


def in_use(week: Week, det: int) -> list[CalFile]:
    """Calibration files a science image of this week and detector was made with."""
    return [CalFile(p, det, tag or weekly_tag(week)) for p, (_, tag) in PRODUCTS.items()]


def delivered(week: Week, first: bool) -> list[CalFile]:
    """Calibration files a delivery carries: everything in use on the first, new darks after."""
    files = [f for det in range(1, 7) for f in in_use(week, det)]
    return files if first else [f for f in files if f.product == "dark"]
