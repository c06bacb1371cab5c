"""File access: /data/{key} (the file, or an archive-style cutout with ?center=&size=),
/cutout (REST and descriptor styles) and /preview (a PNG quick-look, cached).

Only files the catalogue knows are served (products.by_key); cutouts are made by the
range-reading engine, never from a whole-file download.
"""

from __future__ import annotations

import io

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


def preview(req: Request) -> Reply:
    """A PNG quick-look of the IMAGE extension: made once from a range read of that HDU
    only, then cached in the archive."""
    key, base = req.path.get("path") or "", req.base
    if products.by_key(runtime.catalogue(base), key) is None:
        return _not_found(key)
    arch = runtime.archive()
    cache = f"previews/{key}.png"
    if not arch.exists(cache):
        arch.write_bytes(cache, _render_png(arch, "data/" + key))
    return Reply(200, arch.read_bytes(cache), "image/png",
                 {"Cache-Control": "public, max-age=86400"})


def _render_png(arch, key: str) -> bytes:
    import matplotlib  # deferred: cold start (matplotlib)

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # deferred: cold start (matplotlib)

    reader = RangeReader(arch, key)
    layout = read_layout(reader)
    image = next((h for h in layout.hdus if h.name == "IMAGE"), None) or next(
        h for h in layout.hdus if h.is_image)
    nx, ny = image.axes[:2]
    raw = reader.fetch([image.rows(0, ny)])[0]
    bitpix = int(image.keys["BITPIX"])
    dtype = {-32: ">f4", -64: ">f8", 16: ">i2", 32: ">i4"}[bitpix]
    img = np.frombuffer(raw, dtype).reshape(ny, nx).astype(np.float32)
    step = max(1, int(np.ceil(max(nx, ny) / PREVIEW_PX)))
    img = img[: ny - ny % step, : nx - nx % step]
    img = np.nanmean(img.reshape(img.shape[0] // step, step, -1, step), axis=(1, 3))
    lo, hi = np.nanpercentile(img, [1, 99.5]) if np.isfinite(img).any() else (0, 1)
    stretched = np.arcsinh(np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1) * 10) / np.arcsinh(10)
    buf = io.BytesIO()
    plt.imsave(buf, np.nan_to_num(stretched), cmap="gray", origin="lower", format="png")
    return buf.getvalue()
