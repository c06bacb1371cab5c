"""Level 2 spectral-image MEFs and calibration files, and their exact sizes without pixels.

Science MEF HDUs in the real order: PRIMARY, IMAGE, FLAGS, VARIANCE, ZODI, PSF, WCS-WAVE.
Files are serialised here (astropy formats the cards; its HDU machinery re-verifies every
card on write, ~50 ms per file, too slow for a week). Every header has a fixed number of
cards, so a file's size depends only on the image size: metadata-only deliveries report
the size the real file would have (the tests compare with written files).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from astropy.io import fits

from . import optics
from .geometry import INV_TERMS, SIP_TERMS, sky_to_pix
from .sources import Truth, add_stamp, near, psf_stamp
from .survey import PIPELINE_VERSION, TELAPSE_S, XPOSURE_S, ecliptic_latitude, mjd_to_iso

FLAG_BITS: dict[str, int] = {
    "TRANSIENT": 0,
    "OVERFLOW": 1,
    "SUR_ERROR": 2,
    "PHANTOM": 4,
    "REFERENCE": 5,
    "NONFUNC": 6,
    "DICHROIC": 7,
    "MISSING_DATA": 9,
    "HOT": 10,
    "COLD": 11,
    "FULLSAMPLE": 12,
    "PHANMISS": 14,
    "NONLINEAR": 15,
    "PERSIST": 17,
    "OUTLIER": 19,
    "CROSSTALK": 20,
    "SOURCE": 21,
    "GHOST": 22,
    "GHOST_FPA": 23,
    "GHOST_EXT": 24,
    "STREAK": 25,
    "BLOOM": 26,
    "SNOWBALL": 27,
    "HALO": 28,
}
SIGMA_FLUX_UJY = 1.5  # per-pixel noise in flux units whatever the pixel size: high S/N by design
ZODI_REF = 0.3  # MJy/sr at which photon noise equals the read noise
SOURCE_SIGMA = 0.5  # SOURCE bit where sources add more than this many read-noise sigmas
BLOCK = 2880
_BITPIX = {
    np.dtype(np.float32): -32,
    np.dtype(np.float64): -64,
    np.dtype(np.int32): 32,
    np.dtype(np.int16): 16,
    np.dtype(np.uint8): 8,
}


# ---------------------------------------------------------------- serialisation


def card(key: str, value=None, comment: str | None = None) -> str:
    """One 80-character card image, formatted by astropy (HIERARCH and HISTORY included)."""
    return fits.Card(key, value, comment).image


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % BLOCK)


@dataclass
class Hdu:
    """An HDU as card images plus data (or only its shape, for sizing)."""

    cards: list[str]
    shape: tuple[int, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    data: np.ndarray | None = None
    primary: bool = False
    raw: bytes | None = None  # an already serialised HDU (tables, cached PSF)

    def header(self) -> bytes:
        axes = self.shape[::-1]  # FITS NAXIS1 is the fastest (last numpy) axis
        head = (
            [card("SIMPLE", True)]
            if self.primary
            else [card("XTENSION", "IMAGE", "Image extension")]
        )
        head += [card("BITPIX", _BITPIX[np.dtype(self.dtype)]), card("NAXIS", len(axes))]
        head += [card(f"NAXIS{i + 1}", int(k)) for i, k in enumerate(axes)]
        head += [card("EXTEND", True)] if self.primary else [card("PCOUNT", 0), card("GCOUNT", 1)]
        return _pad("".join([*head, *self.cards, "END".ljust(80)]).encode("ascii"), b" ")

    def size(self) -> int:
        if self.raw is not None:
            return len(self.raw)
        nbytes = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize if self.shape else 0
        return len(self.header()) + nbytes + (-nbytes % BLOCK)

    def chunks(self):
        """Header, data and padding as buffers (no copies of the data beyond the byte swap)."""
        if self.raw is not None:
            yield self.raw
            return
        yield self.header()
        if self.data is not None:
            big = self.data.astype(self.data.dtype.newbyteorder(">"), copy=False)
            yield memoryview(np.ascontiguousarray(big)).cast("B")
            yield bytes(-big.nbytes % BLOCK)

    def tobytes(self) -> bytes:
        return b"".join(self.chunks())


def image(
    cards: list[str],
    data: np.ndarray | None = None,
    shape: tuple[int, ...] | None = None,
    dtype=np.float32,
) -> Hdu:
    """An IMAGE extension; with data None only the shape counts (metadata-only sizing)."""
    if data is not None:
        return Hdu(cards, data.shape, data.dtype, data)
    return Hdu(cards, tuple(shape or ()), np.dtype(dtype))


def file_bytes(hdus: list[Hdu]) -> bytes:
    return b"".join(h.tobytes() for h in hdus)


def write_file(path, hdus: list[Hdu]) -> tuple[int, str]:
    """Stream the HDUs to path; returns (bytes written, md5 hex)."""
    digest, size = hashlib.md5(), 0
    with open(path, "wb") as f:
        for hdu in hdus:
            for chunk in hdu.chunks():
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def file_size(hdus: list[Hdu]) -> int:
    return sum(h.size() for h in hdus)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ---------------------------------------------------------------- headers


@dataclass
class ImageMeta:
    """What one science file needs besides pixels."""

    n: int
    det: int
    obs_id: str
    expidn: int
    crval: tuple[float, float]
    pa: float
    mjd_beg: float
    processed: str  # ISO date-time of processing (DATE)
    history: list[tuple[str, str]] = field(default_factory=list)  # (product, calibration file)

    @property
    def pos(self) -> int:
        return optics.array_position(self.det)

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel coordinates through this file's TAN-SIP WCS."""
        a, b, ap, bp = optics.sip(self.pos, self.n)
        u, v = sky_to_pix(self.crval, optics.pc_matrix(self.pa, self.n), a, b, ap, bp, ra, dec)
        off = (self.n + 1) / 2 - 1
        return u + off, v + off


def _wcs_cards(m: ImageMeta) -> list[str]:
    n = m.n
    a, b, ap, bp = optics.sip(m.pos, n)
    pc = optics.pc_matrix(m.pa, n)
    cards = [
        card("WCSAXES", 2, "Number of coordinate axes"),
        card("CTYPE1", "RA---TAN-SIP", "TAN (gnomonic) projection + SIP distortions"),
        card("CTYPE2", "DEC--TAN-SIP", "TAN (gnomonic) projection + SIP distortions"),
        card("CUNIT1", "deg"),
        card("CUNIT2", "deg"),
        card("CRPIX1", (n + 1) / 2, "Pixel coordinate of reference point"),
        card("CRPIX2", (n + 1) / 2, "Pixel coordinate of reference point"),
        card("CRVAL1", float(m.crval[0]), "[deg] Coordinate value at reference point"),
        card("CRVAL2", float(m.crval[1]), "[deg] Coordinate value at reference point"),
        card("CDELT1", 1.0),
        card("CDELT2", 1.0),
        card("PC1_1", float(pc[0, 0])),
        card("PC1_2", float(pc[0, 1])),
        card("PC2_1", float(pc[1, 0])),
        card("PC2_2", float(pc[1, 1])),
        card("LONPOLE", 180.0),
        card("RADESYS", "ICRS"),
    ]
    for name, coef, terms in (
        ("A", a, SIP_TERMS),
        ("B", b, SIP_TERMS),
        ("AP", ap, INV_TERMS),
        ("BP", bp, INV_TERMS),
    ):
        cards.append(card(f"{name}_ORDER", 3, "SIP polynomial order"))
        cards += [card(f"{name}_{p}_{q}", float(c)) for (p, q), c in zip(terms, coef)]
    return cards


@lru_cache(maxsize=1)
def _alt_wcs_cards() -> list[str]:
    """WCS 'A' (0-based pixels of the parent image) and 'W' (WAVE-TAB lookup in WCS-WAVE)."""
    cards = [
        card("WCSNAMEA", "0-based active pixel coordinates"),
        card("WCSAXESA", 2),
        card("CTYPE1A", "X"),
        card("CTYPE2A", "Y"),
        card("CRPIX1A", 1.0),
        card("CRPIX2A", 1.0),
        card("CRVAL1A", 0.0),
        card("CRVAL2A", 0.0),
        card("CDELT1A", 1.0),
        card("CDELT2A", 1.0),
        card("WCSNAMEW", "Wavelength"),
        card("WCSAXESW", 2),
        card("CTYPE1W", "WAVE-TAB", "Central wavelength, lookup table"),
        card("CTYPE2W", "WAVE-TAB", "Bandwidth, lookup table"),
        card("CNAME1W", "Wavelength"),
        card("CNAME2W", "Bandwidth"),
        card("CUNIT1W", "um"),
        card("CUNIT2W", "um"),
        card("CRPIX1W", 1.0),
        card("CRPIX2W", 1.0),
        card("CRVAL1W", 1.0),
        card("CRVAL2W", 1.0),
        card("CDELT1W", 1.0),
        card("CDELT2W", 1.0),
    ]
    for i, axis in ((1, "X"), (2, "Y")):
        cards += [
            card(f"PS{i}_0W", "WCS-WAVE", "Table extension"),
            card(f"PS{i}_1W", "VALUES", "Coordinate array"),
            card(f"PS{i}_2W", axis, "Index vector column"),
            card(f"PV{i}_3W", i, "Coordinate array axis"),
        ]
    return cards


def image_cards(m: ImageMeta, counts: dict[str, int] | None = None) -> list[str]:
    """IMAGE extension header cards (without the structural ones)."""
    end = m.mjd_beg + TELAPSE_S / 86400
    avg = (m.mjd_beg + end) / 2
    scale = optics.pixel_scale_deg(m.n) * 3600
    beg_iso = mjd_to_iso(m.mjd_beg)
    cards = [
        card("EXTNAME", "IMAGE"),
        card("BUNIT", "MJy / sr"),
        card("TELESCOP", "SPHEREx"),
        card("INSTRUME", "SPHEREx"),
        card("ORIGIN", "synthetic (chalicelib.synth)"),
        card("DETECTOR", m.det, "Detector number 1-6"),
        card("OBSID", m.obs_id),
        card("EXPIDN", int(m.expidn)),
        card("DATE", m.processed, "File creation date (UTC)"),
        card("TIMESYS", "UTC"),
        card("DATE-OBS", beg_iso),
        card("DATE-BEG", beg_iso),
        card("DATE-AVG", mjd_to_iso(avg)),
        card("DATE-END", mjd_to_iso(end)),
        card("MJD-OBS", m.mjd_beg),
        card("MJD-BEG", m.mjd_beg),
        card("MJD-AVG", avg),
        card("MJD-END", end),
        card("XPOSURE", XPOSURE_S, "[s] Integration time"),
        card("TELAPSE", TELAPSE_S, "[s] Elapsed time"),
        card("PSF_FWHM", round(optics.psf_fwhm_arcsec(m.det, m.n), 4), "[arcsec] Median PSF FWHM"),
        card(
            "HIERARCH OMEGA_MEDIAN", round(optics.omega_median_arcsec2(m.pos, m.n), 4), "[arcsec2]"
        ),
        card("PIXSCALE", round(scale, 6), "[arcsec] Pixel scale (field kept 3.485 deg)"),
        card("L2DQAFLG", "PASS", "Data quality assessment"),
        card("FINAST", 0, "Astrometry status"),
    ]
    cards += _wcs_cards(m) + _alt_wcs_cards()
    counts = counts or {}
    cards += [card(f"HIERARCH L2 N_{name}", int(counts.get(name, 0))) for name in FLAG_BITS]
    cards += [card("HISTORY", f"[CALIB] {product} {name}") for product, name in m.history]
    return cards


def image_header(m: ImageMeta) -> fits.Header:
    """The IMAGE header as astropy sees it (for WCS checks without writing a file)."""
    return fits.Header.fromstring("".join(image_cards(m)))


def _ext_cards(name: str, unit: str | None, det: int) -> list[str]:
    cards = [card("EXTNAME", name), card("DETECTOR", det)]
    return cards[:1] + [card("BUNIT", unit)] + cards[1:] if unit else cards


@lru_cache(maxsize=8)
def flags_cards(det: int) -> list[str]:
    return _ext_cards("FLAGS", None, det) + [
        card(f"HIERARCH MP_{k}", bit, "Flag bit") for k, bit in FLAG_BITS.items()
    ]


@lru_cache(maxsize=16)
def _psf_cards(det: int, n: int) -> list[str]:
    centres, _, width = optics.psf_zones(n)
    cards = _ext_cards("PSF", None, det)
    cards += [
        card("OVERSAMP", optics.PSF_OVERSAMPLE, "PSF pixels per image pixel"),
        card("PSFNORM", "SUM=1", "Each zone sums to 1"),
    ]
    for iy in range(optics.PSF_GRID):
        for ix in range(optics.PSF_GRID):
            k = iy * optics.PSF_GRID + ix + 1
            cards += [
                card(f"XCTR_{k}", float(centres[ix]), "Zone centre x (1-based)"),
                card(f"YCTR_{k}", float(centres[iy]), "Zone centre y (1-based)"),
                card(f"XWID_{k}", float(width), "Zone width x"),
                card(f"YWID_{k}", float(width), "Zone width y"),
            ]
    return cards


@lru_cache(maxsize=12)
def psf_hdu(det: int, n: int, sizing: bool = False) -> Hdu:
    """The PSF extension, serialised once per detector and size (identical in every file);
    sizing=True skips building the cube."""
    if sizing:
        p = optics.psf_size_for(n)
        return image(_psf_cards(det, n), None, (optics.PSF_GRID**2, p, p), np.float32)
    hdu = image(_psf_cards(det, n), optics.psf_cube(det, n))
    return Hdu(hdu.cards, hdu.shape, hdu.dtype, raw=hdu.tobytes())


@lru_cache(maxsize=12)
def wave_table_hdu(det: int, n: int) -> Hdu:
    """WCS-WAVE binary table (1 row: X, Y, VALUES[2, 11, 11] in FITS order), by astropy."""
    x, y, val = optics.wave_table(det, n)
    k = optics.WAVE_GRID
    cols = [
        fits.Column("X", format=f"{k}J", array=x[None]),
        fits.Column("Y", format=f"{k}J", array=y[None]),
        fits.Column(
            "VALUES", format=f"{2 * k * k}D", dim=f"(2,{k},{k})", unit="um", array=val[None]
        ),
    ]
    table = fits.BinTableHDU.from_columns(cols, name="WCS-WAVE")
    table.header["DETECTOR"] = det
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buf)
    return Hdu([], raw=buf.getvalue()[BLOCK:])  # drop the 1-block empty primary


def _primary(det: int, extra: list[str]) -> Hdu:
    cards = [
        card("TELESCOP", "SPHEREx"),
        card("INSTRUME", "SPHEREx"),
        card("VERSION", PIPELINE_VERSION, "Pipeline version"),
        card("DETECTOR", det),
    ] + extra
    return Hdu(cards, primary=True)


# ---------------------------------------------------------------- pixels


@dataclass
class Rendered:
    image: np.ndarray
    flags: np.ndarray
    variance: np.ndarray
    zodi: np.ndarray
    injected: list[dict]  # source_id, x, y (0-based), wavelength_um, flux_ujy


def _zodi_map(m: ImageMeta) -> np.ndarray:
    """Zodi at every pixel's own wavelength from the smooth filter law: the sky knows
    nothing of the 11 x 11 WCS-WAVE table (interpolating it bent the plane at every
    control point, which no smooth background model follows)."""
    lam, _ = optics.smooth_wave_maps(m.det, m.n)
    beta = float(ecliptic_latitude(np.array(m.crval[0]), np.array(m.crval[1])))
    g = np.linspace(-1, 1, m.n)
    return optics.zodi_sb(lam, beta) * (1 + 0.02 * g[None, :] + 0.01 * g[:, None])


def _inject(m: ImageMeta, truth: Truth) -> tuple[np.ndarray, list[dict]]:
    """Source flux per pixel (MJy) and what went in."""
    n = m.n
    flux = np.zeros((n, n))
    idx = near(truth, m.crval[0], m.crval[1], 0.75 * optics.FIELD_DEG + 0.5)
    if not len(idx):
        return flux, []
    x0, y0 = m.sky_to_pixel(truth.ra[idx], truth.dec[idx])
    psf = optics.psf_cube(m.det, n)
    reach = psf.shape[-1] / optics.PSF_OVERSAMPLE / 2
    inside = (
        (x0 > -0.5 - reach) & (x0 < n - 0.5 + reach) & (y0 > -0.5 - reach) & (y0 < n - 0.5 + reach)
    )
    idx, x0, y0 = idx[inside], x0[inside], y0[inside]
    # Sources are drawn at the wavelength WCS 'W' reports for their pixel (the table, not
    # the smooth law): that is the wavelength every measurement is labelled with, so the
    # truth spectrum at the reported wavelength is what the image holds. With the smooth
    # law the label would be off by up to 2.3e-4 relative: ~2e-3 in flux on the 3.3 um
    # feature, tens of sigma at S/N 20,000. Within the outer half pixel WCS 'W'
    # extrapolates the table linearly, and so must the truth (clipping to the last
    # pixel centre put edge sources 0.1 % off in wavelength along the LVF).
    lam = optics.wave_at(m.det, n, np.clip(x0, -0.5, n - 0.5), np.clip(y0, -0.5, n - 0.5))
    ujy = truth.flux_at(idx, lam)
    injected = []
    for i, x, y, w, f in zip(idx, x0, y0, lam, ujy):
        stamp, xl, yl = psf_stamp(psf[optics.zone_index(n, x, y)], x, y)
        add_stamp(flux, stamp * f * 1e-12, xl, yl)
        injected.append(
            {
                "source_id": int(truth.source_id[i]),
                "x": float(x),
                "y": float(y),
                "wavelength_um": float(w),
                "flux_ujy": float(f),
            }
        )
    return flux, injected


def render(m: ImageMeta, truth: Truth, rng: np.random.Generator) -> Rendered:
    """Zodi + PSF-convolved truth sources + Gaussian noise matching VARIANCE + defects."""
    n = m.n
    omega = optics.omega_map(m.pos, n)
    zodi = _zodi_map(m)
    flux, injected = _inject(m, truth)
    src = flux / omega  # surface brightness: sum(src * omega) gives back the flux
    read = SIGMA_FLUX_UJY * 1e-12 / omega
    var = read**2 * (1 + (zodi + src) / ZODI_REF)
    img = zodi + src + rng.standard_normal((n, n), dtype=np.float32) * np.sqrt(var)
    flags = np.zeros((n, n), dtype=np.int32)
    flags[src > SOURCE_SIGMA * read] |= 1 << FLAG_BITS["SOURCE"]
    _add_defects(m, img, var, flags, zodi, injected, rng)
    return Rendered(
        img.astype(np.float32), flags, var.astype(np.float32), zodi.astype(np.float32), injected
    )


def _add_defects(
    m: ImageMeta,
    img: np.ndarray,
    var: np.ndarray,
    flags: np.ndarray,
    zodi: np.ndarray,
    injected: list[dict],
    rng: np.random.Generator,
) -> None:
    """Fixed bad pixels of the detector (NaN, very hot, negative), cosmic-ray hits away from
    sources, and the dichroic corner."""
    n = m.n
    bad = optics.defects(m.det, n)
    im, fl, vr, zo = img.reshape(-1), flags.reshape(-1), var.reshape(-1), zodi.reshape(-1)
    im[bad["NONFUNC"]] = np.nan
    vr[bad["NONFUNC"]] = np.nan
    im[bad["HOT"]] = zo[bad["HOT"]] + rng.uniform(50, 500, len(bad["HOT"]))
    im[bad["COLD"]] = -rng.uniform(5, 50, len(bad["COLD"]))
    for name in ("NONFUNC", "HOT", "COLD"):
        fl[bad[name]] |= 1 << FLAG_BITS[name]
    hits = rng.integers(0, n, (max(1, round(2e-5 * n * n)), 2))
    if injected:
        src = np.array([[s["x"], s["y"]] for s in injected])
        dist = np.min(
            np.hypot(hits[:, None, 0] - src[None, :, 0], hits[:, None, 1] - src[None, :, 1]), axis=1
        )
        hits = hits[dist > 4]
    flat = hits[:, 1] * n + hits[:, 0]
    im[flat] += rng.uniform(20, 200, len(flat))
    fl[flat] |= 1 << FLAG_BITS["TRANSIENT"]
    flags[optics.dichroic_mask(m.det, n)] |= 1 << FLAG_BITS["DICHROIC"]


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    return {name: int(np.count_nonzero(flags & (1 << bit))) for name, bit in FLAG_BITS.items()}


# ---------------------------------------------------------------- files


def science_hdus(m: ImageMeta, r: Rendered | None) -> list[Hdu]:
    """The MEF; with r None the pixel HDUs carry only their shapes (metadata-only sizing)."""
    n, det = m.n, m.det
    shape = (n, n)
    counts = flag_counts(r.flags) if r is not None else None
    return [
        _primary(det, [card("OBSID", m.obs_id), card("DATE", m.processed)]),
        image(image_cards(m, counts), r.image if r else None, shape, np.float32),
        image(flags_cards(det), r.flags if r else None, shape, np.int32),
        image(
            _ext_cards("VARIANCE", "MJy2 / sr2", det), r.variance if r else None, shape, np.float32
        ),
        image(_ext_cards("ZODI", "MJy / sr", det), r.zodi if r else None, shape, np.float32),
        psf_hdu(det, n, sizing=r is None),
        wave_table_hdu(det, n),
    ]


@lru_cache(maxsize=16)
def science_size(n: int, n_history: int) -> int:
    """Bytes of a science MEF: constant for a given image size and number of HISTORY lines."""
    m = ImageMeta(
        n=n,
        det=1,
        obs_id="2025W01_1A_0001_1",
        expidn=0,
        crval=(0.0, 0.0),
        pa=0.0,
        mjd_beg=60000.0,
        processed="2025-01-01T00:00:00",
        history=[("x", "y")] * n_history,
    )
    return file_size(science_hdus(m, None))


def _cal_arrays(product: str, det: int, n: int) -> list[tuple[str, str | None, np.ndarray]]:
    """(EXTNAME, BUNIT, data) of a calibration product, simple but consistent with the images."""
    g = np.linspace(-1, 1, n, dtype=np.float32)
    ramp = 1 + 0.03 * g[None, :] + 0.02 * g[:, None]
    bad = optics.defects(det, n)
    if product == "gain":
        return [("IMAGE", "(MJy / sr) / (electron / s)", (2.5e-3 * ramp).astype(np.float32))]
    if product == "dark":
        dark = np.full((n, n), 0.01, np.float32)
        dark.reshape(-1)[bad["HOT"]] = 5.0
        return [("IMAGE", "electron / s", dark)]
    if product == "psf":
        return [("PSF", None, optics.psf_cube(det, n))]
    if product == "solid_angle":
        omega = optics.omega_map(optics.array_position(det), n) * (180 / np.pi * 3600) ** 2
        return [("IMAGE", "arcsec2", omega.astype(np.float32))]
    if product == "spectral_wcs":
        lam, band = optics.smooth_wave_maps(det, n)  # per pixel; WCS-WAVE samples it
        return [("CWAVE", "um", lam.astype(np.float32)), ("CBAND", "um", band.astype(np.float32))]
    if product == "nonlinearity":
        vals = {"Q_nl": 4.0e4, "b1": 1.0, "b2": -2.0e-6, "b3": 1.0e-11, "Qmax": 6.0e4}
        return [
            (k, "electron" if k.startswith("Q") else None, np.full((n, n), v, np.float32))
            for k, v in vals.items()
        ]
    if product == "read_noise":
        return [
            (f"READNOISE-{i}", "electron", np.full((n, n), 10.0 + i, np.float32)) for i in (1, 2)
        ]
    if product == "nonfunc_mask":
        mask = np.zeros((n, n), np.uint8)
        mask.reshape(-1)[bad["NONFUNC"]] = 1
        return [("IMAGE", None, mask)]
    if product == "dichroic_mask":
        return [("IMAGE", None, optics.dichroic_mask(det, n).astype(np.uint8))]
    raise ValueError(f"unknown calibration product {product!r}")


def cal_hdus(
    product: str, det: int, n: int, name: str, processed: str, placeholder: bool = False
) -> list[Hdu]:
    """A calibration MEF: PRIMARY + image extensions (+ WCS-WAVE for spectral_wcs).

    placeholder=True builds the same headers from tiny arrays, for sizing only."""
    hdus = [
        _primary(det, [card("CALTYPE", product), card("FILENAME", name), card("DATE", processed)])
    ]
    for ext, unit, data in _cal_arrays(product, det, 16 if placeholder else n):
        if ext == "PSF":
            hdus.append(psf_hdu(det, n, sizing=placeholder))
        elif placeholder:
            hdus.append(image(_ext_cards(ext, unit, det), None, (n, n), data.dtype))
        else:
            hdus.append(image(_ext_cards(ext, unit, det), data))
    if product == "spectral_wcs":
        hdus.append(wave_table_hdu(det, n))
    return hdus


@lru_cache(maxsize=64)
def cal_size(product: str, n: int) -> int:
    """Bytes of a calibration file (FILENAME and DATE are single fixed-length cards)."""
    return file_size(cal_hdus(product, 1, n, "x", "2025-01-01T00:00:00", placeholder=True))
