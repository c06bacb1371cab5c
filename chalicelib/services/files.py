"""File access: /data/{key} (the file, or an archive-style cutout with ?center=&size=),
/cutout (REST and descriptor styles) and /preview (a PNG quick-look, cached).

Only files the catalogue knows are served (products.by_key); cutouts are made by the
range-reading engine, never from a whole-file download.
"""

from __future__ import annotations

import io
import json
import re
import warnings

import numpy as np

from ..cutout import CutoutError, NoOverlap, cutout, parse_archive_params
from ..cutout.fitsrange import RangeReader, read_layout
from ..cutout.region import parse_gzip
from ..query import products, runtime
from ..web import observability
from ..web.params import Params
from ..web.replies import Reply
from ..web.request import Request

PREVIEW_PX = 512


def _not_found(key: str) -> Reply:
    return Reply.text(f"NotFoundFault: no file {key!r} in this archive", 404)


def _cut(key: str, center: str | None, size: str | None, params: Params,
         gzip_default: bool) -> Reply:
    try:
        region = parse_archive_params(center, size)
        gz = parse_gzip(params.get("gzip"), gzip_default)
        res = cutout(runtime.archive(), "data/" + key, region, gzip=gz,
                     psf=params.get("psf") or "all")
    except NoOverlap as e:
        return Reply.text(f"Error: the cutout does not overlap the image: {e}", 400)
    except CutoutError as e:
        return Reply.text(f"UsageError: {e}", 400)
    observability.add(bytes_read=res.stats.bytes_read, requests=res.stats.requests)
    headers = res.http_headers()
    ctype = headers.pop("Content-Type")
    headers.update({"X-Bytes-Read": str(res.stats.bytes_read),
                    "X-Range-Requests": str(res.stats.requests)})
    return Reply(200, res.data, ctype, headers)


def data(req: Request) -> Reply:
    """The file itself (S3: a redirect to a presigned URL), or a cutout of it."""
    key, params, base = req.path.get("path") or "", req.params, req.base
    if products.by_key(runtime.catalogue(base), key) is None:
        return _not_found(key)
    if "center" in params or "size" in params:
        return _cut(key, params.get("center"), params.get("size"), params, True)
    arch = runtime.archive()
    if arch.is_s3:
        return Reply.redirect(arch.presign("data/" + key), 303)
    name = key.rsplit("/", 1)[-1]
    return Reply(200, arch.read_bytes("data/" + key), "application/fits",
                 {"Content-Disposition": f'attachment; filename="{name}"'})


def cutout_route(req: Request) -> Reply:
    """/cutout/{key}?ra=&dec=&size= and /cutout?path=|ID=&ra=&dec=&size= (plain FITS unless
    gzip=true)."""
    params, base = req.params, req.base
    cat = runtime.catalogue(base)
    key = req.path.get("path") or params.get("path")
    if not key and params.get("ID"):
        found = products.by_ids(cat, [params.get("ID")]).get(params.get("ID"))
        key = found["uri"] if found else None
        if key is None:
            return Reply.text(f"NotFoundFault: no dataset {params.get('ID')!r}", 404)
    if not key:
        return Reply.text("UsageError: give the file as /cutout/<path>, path= or ID=", 400)
    if products.by_key(cat, key) is None:
        return _not_found(key)
    ra, dec, size = params.get("ra"), params.get("dec"), params.get("size")
    if ra is None or dec is None or size is None:
        return Reply.text("UsageError: ra, dec (deg) and size are required", 400)
    return _cut(key, f"{ra},{dec}", size, params, False)


PREVIEW_HDUS = ("IMAGE", "FLAGS", "VARIANCE", "ZODI")
# the header keywords a page needs to evaluate the celestial WCS (TAN-SIP) itself
_WCS_KEY = re.compile(r"^(WCSAXES|CTYPE[12]|CUNIT[12]|CRPIX[12]|CRVAL[12]|CDELT[12]|"
                      r"PC[12]_[12]|CD[12]_[12]|LONPOLE|LATPOLE|RADESYS|EQUINOX|"
                      r"(A|B|AP|BP)_ORDER|(A|B|AP|BP)_\d_\d)$")


def preview(req: Request) -> Reply:
    """A PNG quick-look of one 2-D extension (HDU=IMAGE by default; FLAGS, VARIANCE, ZODI):
    made once from a range read of that HDU only, then cached in the archive.
    With FORMAT=json: the file's image HDUs, the preview's geometry (binning step, size)
    and the celestial WCS keywords of the IMAGE header, read from the headers only."""
    key, base, params = req.path.get("path") or "", req.base, req.params
    if products.by_key(runtime.catalogue(base), key) is None:
        return _not_found(key)
    hdu = (params.get("HDU") or params.get("hdu") or "IMAGE").strip().upper()
    if hdu not in PREVIEW_HDUS:
        return Reply.text(f"UsageError: HDU must be one of {', '.join(PREVIEW_HDUS)}", 400)
    arch = runtime.archive()
    fmt = (params.get("FORMAT") or params.get("format") or "png").strip().lower()
    if fmt == "json":
        return _preview_info(arch, key, base, hdu)
    if fmt != "png":
        return Reply.text("UsageError: FORMAT must be png or json", 400)
    cache = f"previews/{key}.png" if hdu == "IMAGE" else f"previews/{key}.{hdu}.png"
    if not arch.exists(cache):
        try:
            png = _render_png(arch, "data/" + key, hdu)
        except LookupError as e:
            return Reply.text(f"NotFoundFault: {e}", 404)
        arch.write_bytes(cache, png)
    return Reply(200, arch.read_bytes(cache), "image/png",
                 {"Cache-Control": "public, max-age=86400"})


def _image_hdu(layout, name: str):
    hdu = next((h for h in layout.hdus if h.name == name and h.is_image
                and len(h.axes) == 2), None)
    if hdu is None and name == "IMAGE":  # a plain image file: its first 2-D HDU
        hdu = next((h for h in layout.hdus if h.is_image and len(h.axes) == 2), None)
    if hdu is None:
        raise LookupError(f"the file has no {name} image extension")
    return hdu


def _step(nx: int, ny: int) -> int:
    return max(1, int(np.ceil(max(nx, ny) / PREVIEW_PX)))


def _preview_info(arch, key: str, base: str, hdu: str) -> Reply:
    layout = read_layout(RangeReader(arch, "data/" + key))
    try:
        image = _image_hdu(layout, "IMAGE")
    except LookupError as e:
        return Reply.text(f"NotFoundFault: {e}", 404)
    nx, ny = image.axes[:2]
    step = _step(nx, ny)
    wcs = {k: v for k, v in image.header.items() if _WCS_KEY.match(k)}
    hdus = [{"name": h.name, "bunit": str(h.header.get("BUNIT", "")).strip(),
             "png": f"{base}/preview/{key}" + ("" if h.name == "IMAGE" else f"?HDU={h.name}")}
            for h in layout.hdus
            if h.name in PREVIEW_HDUS and h.is_image and len(h.axes) == 2]
    doc = {"key": key, "nx": nx, "ny": ny, "step": step, "width": nx // step,
           "height": ny // step, "origin": "lower", "hdu": hdu, "hdus": hdus, "wcs": wcs,
           "note": "preview pixel (i, j) from the bottom left bins parent pixels "
                   "[i*step, (i+1)*step) x [j*step, (j+1)*step) (0-based)"}
    return Reply(200, json.dumps(doc), "application/json",
                 {"Cache-Control": "public, max-age=3600"})


def _render_png(arch, key: str, hdu: str = "IMAGE") -> bytes:
    import matplotlib  # deferred: cold start (matplotlib)

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # deferred: cold start (matplotlib)

    reader = RangeReader(arch, key)
    layout = read_layout(reader)
    image = _image_hdu(layout, hdu)
    nx, ny = image.axes[:2]
    raw = reader.fetch([image.rows(0, ny)])[0]
    bitpix = int(image.keys["BITPIX"])
    dtype = {-32: ">f4", -64: ">f8", 8: "u1", 16: ">i2", 32: ">i4", 64: ">i8"}[bitpix]
    img = np.frombuffer(raw, dtype).reshape(ny, nx)
    if hdu == "FLAGS":  # a bit mask: the share of flagged pixels in each binned pixel
        img = (img != 0).astype(np.float32)
    else:
        img = img.astype(np.float32)
    step = _step(nx, ny)
    img = img[: ny - ny % step, : nx - nx % step]
    with warnings.catch_warnings():  # a block of NaN pixels stays NaN (drawn black)
        warnings.simplefilter("ignore", RuntimeWarning)
        img = np.nanmean(img.reshape(img.shape[0] // step, step, -1, step), axis=(1, 3))
    if hdu == "FLAGS":
        lo, hi = 0.0, 1.0
    else:
        lo, hi = np.nanpercentile(img, [1, 99.5]) if np.isfinite(img).any() else (0, 1)
    stretched = np.arcsinh(np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1) * 10) / np.arcsinh(10)
    buf = io.BytesIO()
    plt.imsave(buf, np.nan_to_num(stretched), cmap="gray", origin="lower", format="png",
               vmin=0, vmax=1)
    return buf.getvalue()
