"""The WCS-WAVE lookup table behind the alternate WCS 'W' (FITS -TAB, Greisen et al. 2006).

Wavelength and bandwidth are a bilinear function of the pixel: the index vectors X and Y
hold control-point coordinates psi_i = CRVALiW + CDELTiW * (p_i - CRPIXiW) (p 1-based) and
VALUES[y, x, m] the coordinates there. A cutout gets a rebuilt table: knots shifted into
cutout pixels and clipped to the cutout, with new end knots interpolated along each axis,
which leaves the piecewise-bilinear function, hence every pixel's wavelength, unchanged.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from . import cards

_COLUMN_KEY = re.compile(r"^(T(TYPE|FORM|DIM|UNIT|NULL|SCAL|ZERO|DISP|DMIN|DMAX|LMIN|LMAX)\d+"
                         r"|TFIELDS|THEAP|XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|EXTNAME"
                         r"|CHECKSUM|DATASUM)$")


def interp_weights(knots: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation (extrapolating at the ends) as a (len(coords), len(knots))
    weight matrix: the -TAB index lookup along one axis."""
    coords = np.atleast_1d(np.asarray(coords, float))
    w = np.zeros((len(coords), len(knots)))
    if len(knots) == 1:
        w[:, 0] = 1.0
        return w
    j = np.clip(np.searchsorted(knots, coords, side="right") - 1, 0, len(knots) - 2)
    f = (coords - knots[j]) / (knots[j + 1] - knots[j])
    rows = np.arange(len(coords))
    w[rows, j] = 1 - f
    w[rows, j + 1] = f
    return w


@dataclass
class Axis:
    crpix: float
    crval: float
    cdelt: float
    column: str  # index vector column

    def psi(self, p1: np.ndarray) -> np.ndarray:
        """Intermediate coordinate (index-vector units) of 1-based pixel coordinates."""
        return self.crval + self.cdelt * (np.asarray(p1, float) - self.crpix)


@dataclass
class WaveTable:
    extname: str
    values_column: str
    x: Axis
    y: Axis
    xs: np.ndarray  # index vector of image axis 1
    ys: np.ndarray  # index vector of image axis 2
    values: np.ndarray  # (len(ys), len(xs), m): wavelength, bandwidth
    table: fits.BinTableHDU
    raw_header: bytes  # the parent table's header as in the file

    @classmethod
    def parse(cls, image_header: fits.Header, table_header: fits.Header, data: bytes,
              raw_header: bytes = b"") -> WaveTable | None:
        """The table named by PS1_0W, or None when the header has no usable 'W' -TAB WCS."""
        h = image_header
        if not str(h.get("CTYPE1W", "")).endswith("-TAB") or "PS1_0W" not in h:
            return None
        if any(h.get(k, 0.0) != 0.0 for k in ("PC1_2W", "PC2_1W")):
            return None  # a rotated lookup is not separable; keep the table as it is
        table = _table_hdu(table_header, data)
        axes = [Axis(float(h.get(f"CRPIX{i}W", 0.0)), float(h.get(f"CRVAL{i}W", 0.0)),
                     float(h.get(f"CDELT{i}W", 1.0)) * float(h.get(f"PC{i}_{i}W", 1.0)),
                     str(h.get(f"PS{i}_2W", "XY"[i - 1]))) for i in (1, 2)]
        col = str(h.get("PS1_1W", "VALUES"))
        try:
            xs = np.asarray(table.data[axes[0].column][0], float)
            ys = np.asarray(table.data[axes[1].column][0], float)
            values = np.asarray(table.data[col][0], float)
        except KeyError:
            return None
        if values.shape[:2] != (len(ys), len(xs)):
            return None
        return cls(str(h["PS1_0W"]).strip(), col, axes[0], axes[1], xs, ys, values, table,
                   raw_header or table_header.tostring(padding=True).encode("ascii"))

    @property
    def rebuildable(self) -> bool:
        return bool(self.x.cdelt > 0 and self.y.cdelt > 0 and np.all(np.diff(self.xs) > 0)
                    and np.all(np.diff(self.ys) > 0))

    def grid(self, x0: np.ndarray, y0: np.ndarray) -> np.ndarray:
        """(len(y0), len(x0), m) coordinates at the 0-based pixel grid x0 x y0."""
        wx = interp_weights(self.xs, self.x.psi(np.asarray(x0) + 1.0))
        wy = interp_weights(self.ys, self.y.psi(np.asarray(y0) + 1.0))
        return _bilinear(wy, self.values, wx)

    def knots(self, x0: int, x1: int, y0: int, y1: int) -> tuple[np.ndarray, ...]:
        """Index vectors (cutout psi units) and values of the cutout [x0, x1) x [y0, y1)."""
        kx = _knots(self.xs, self.x, x0, x1)
        ky = _knots(self.ys, self.y, y0, y1)
        vals = _bilinear(interp_weights(self.ys, ky), self.values, interp_weights(self.xs, kx))
        return kx - self.x.cdelt * x0, ky - self.y.cdelt * y0, vals

    def cutout_bytes(self, x0: int, x1: int, y0: int, y1: int) -> tuple[bytes, bytes]:
        """(header, data) of the cutout's table: the parent header with new TFORM/TDIM/
        NAXIS1 and the row written directly (fast, byte-faithful); tables of another shape
        go through astropy."""
        kx, ky, vals = self.knots(x0, x1, y0, y1)
        cols = self.table.columns
        letters = {c.name: str(c.format)[-1] for c in cols}
        index_int = any(letters.get(c) in ("I", "J", "K") for c in (self.x.column, self.y.column))
        integral = all(np.allclose(k, np.round(k), rtol=0, atol=1e-9) for k in (kx, ky))
        simple = (len(self.table.data) == 1
                  and set(letters) == {self.x.column, self.y.column, self.values_column}
                  and all(v in _BIG_ENDIAN for v in letters.values())
                  and not any(k.startswith(("TSCAL", "TZERO")) for k in self.table.header))
        if not simple or (index_int and not integral):
            hdu = self.cutout_hdu(x0, x1, y0, y1)
            return hdu.header.tostring(padding=True).encode("ascii"), _table_bytes(hdu)
        arrays = {self.x.column: np.round(kx) if integral else kx,
                  self.y.column: np.round(ky) if integral else ky, self.values_column: vals}
        updates: dict = {}
        data = b""
        for i, c in enumerate(cols, start=1):
            a = np.ascontiguousarray(arrays[c.name], dtype=_BIG_ENDIAN[letters[c.name]])
            updates[f"TFORM{i}"] = f"{a.size}{letters[c.name]}"
            if c.name == self.values_column:
                updates[f"TDIM{i}"] = f"({vals.shape[2]},{len(kx)},{len(ky)})"
            data += a.tobytes()
        updates["NAXIS1"] = len(data)
        return cards.edit(self.raw_header, updates, remove={"CHECKSUM", "DATASUM"}), data

    def cutout_hdu(self, x0: int, x1: int, y0: int, y1: int) -> fits.BinTableHDU:
        """The table for the cutout [x0, x1) x [y0, y1) of the parent (0-based)."""
        kx, ky, vals = self.knots(x0, x1, y0, y1)
        old = self.table.columns
        cols = [_index_column(self.x.column, kx, old), _index_column(self.y.column, ky, old)]
        fmt = str(old[self.values_column].format)[-1]
        m = vals.shape[2]
        cols.append(fits.Column(self.values_column, format=f"{vals.size}{fmt}",
                                dim=f"({m},{len(kx)},{len(ky)})",
                                unit=old[self.values_column].unit, array=vals[None]))
        hdu = fits.BinTableHDU.from_columns(cols, name=self.extname)
        for card in self.table.header.cards:
            if not _COLUMN_KEY.match(card.keyword) and card.keyword:
                hdu.header.append(card)
        return hdu


_BIG_ENDIAN = {"I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


def _table_bytes(hdu: fits.BinTableHDU) -> bytes:
    """A table's data as astropy writes it (big-endian rows, heap included)."""
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    raw = buf.getvalue()[2880:]  # after the minimal primary header (one block)
    start = len(hdu.header.tostring(padding=True))
    size = hdu.header["NAXIS1"] * hdu.header["NAXIS2"] + hdu.header.get("PCOUNT", 0)
    return raw[start:start + size]


def _bilinear(wy: np.ndarray, values: np.ndarray, wx: np.ndarray) -> np.ndarray:
    return np.stack([wy @ values[..., m] @ wx.T for m in range(values.shape[2])], axis=-1)


def _knots(index: np.ndarray, axis: Axis, p0: int, p1: int) -> np.ndarray:
    """Knots (parent psi units) covering the cutout pixel centres p0+1 .. p1 (1-based):
    the parent's inside, plus both ends (one more pixel when the cutout is 1 pixel wide)."""
    lo, hi = axis.psi(p0 + 1.0), axis.psi(float(p1))
    if hi <= lo:
        hi = axis.psi(p0 + 2.0)
    inner = index[(index > lo) & (index < hi)]
    return np.concatenate([[lo], inner, [hi]])


def _index_column(name: str, knots: np.ndarray, old: fits.ColDefs) -> fits.Column:
    integral = np.allclose(knots, np.round(knots), rtol=0, atol=1e-9)
    fmt = str(old[name].format)[-1] if integral else "D"
    arr = np.round(knots).astype(np.int64) if fmt in "JIK" else knots
    return fits.Column(name, format=f"{len(knots)}{fmt}", unit=old[name].unit, array=arr[None])


def _table_hdu(header: fits.Header, data: bytes) -> fits.BinTableHDU:
    pad = (-len(data)) % 2880
    raw = header.tostring(padding=True).encode("ascii") + data + b"\0" * pad
    buf = io.BytesIO(fits.PrimaryHDU().header.tostring(padding=True).encode("ascii") + raw)
    with fits.open(buf, lazy_load_hdus=False) as hdul:
        hdu = hdul[1]
        hdu.data  # noqa: B018 - load before the buffer goes
        return fits.BinTableHDU(data=hdu.data.copy(), header=hdu.header.copy())
