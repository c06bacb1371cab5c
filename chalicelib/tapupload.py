"""TAP UPLOAD: VOTable tables sent inline (multipart `param:`) or by http(s) URL,
queryable as TAP_UPLOAD.<name> for the one query that brought them."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pyarrow as pa

from . import schema
from .web import Params

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class UploadError(ValueError):
    pass


def _fetch(uri: str, name: str, limit: int) -> bytes:
    from . import outbound

    try:
        return outbound.fetch(uri, limit)
    except outbound.OutboundError as e:
        raise UploadError(f"UPLOAD {name}: {e}") from None


def _stored(key: str) -> bytes:
    from . import runtime

    try:
        return runtime.archive().read_bytes(key)
    except FileNotFoundError:
        raise UploadError(f"the uploaded table {key} is gone") from None


def _to_arrow(data: bytes, name: str) -> tuple[pa.Table, dict[str, dict]]:
    """The rows, and each column's VOTable metadata (kept on the result FIELDs)."""
    from astropy.io.votable import parse_single_table

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vt = parse_single_table(io.BytesIO(data))
            table = vt.to_table(use_names_over_ids=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the caller's document
        raise UploadError(f"upload {name!r} is not a readable VOTable: {e}") from None
    meta = {f.name.lower(): {"xtype": f.xtype, "unit": str(f.unit) if f.unit else None,
                             "ucd": f.ucd, "utype": f.utype} for f in vt.fields}
    cols = {}
    for col in table.itercols():
        values = np.ma.getdata(col)
        mask = np.ma.getmaskarray(col) if np.ma.isMaskedArray(col) else None
        if values.dtype.kind in "SUO":
            arr = pa.array([None if (mask is not None and m) else str(v)
                            for v, m in zip(values, mask if mask is not None else
                                            [False] * len(values))], pa.string())
        else:
            arr = pa.array(values, mask=mask)
        cols[col.name.lower()] = arr
    return pa.table(cols), meta


def _describe(name: str, table: pa.Table, meta: dict[str, dict]) -> schema.Table:
    cols = tuple(schema.Column(n, t if t in _ARROW_OK else pa.string(), f"uploaded column {n}",
                               **meta.get(n, {}))
                 for n, t in zip(table.column_names, table.schema.types))
    return schema.Table(f"TAP_UPLOAD.{name}", "uploaded table", cols, physical="")


_ARROW_OK = {pa.int16(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.bool_(),
             pa.string()}


def load_uploads(params: Params, limit: int) -> tuple[dict[str, pa.Table], dict]:
    """Parse UPLOAD=name,uri[;name,uri] into Arrow tables and their descriptions."""
    from .tap import TapUsageError

    tables, described = {}, {}
    specs = [s for v in params.getall("UPLOAD") for s in v.split(";") if s.strip()]
    total = 0
    for spec in specs:
        name, _, uri = spec.partition(",")
        name, uri = name.strip(), uri.strip()
        if not NAME.match(name) or not uri:
            raise TapUsageError(f"UPLOAD {spec!r}: expected name,URI with a plain table name")
        try:
            if uri.startswith("param:"):
                part = params.files.get(uri[6:])
                if part is None:
                    raise UploadError(f"UPLOAD {name}: no multipart part named {uri[6:]!r}")
                data = part.content
            elif uri.startswith("archive:uploads/") and ".." not in uri:
                data = _stored(uri[len("archive:"):])  # an async job's inline upload
            else:  # outbound refuses file:, ftp: ... with its one text
                data = _fetch(uri, name, limit)
            total += len(data)
            if total > limit:
                raise UploadError(f"uploads exceed the limit of {limit} bytes")
            arrow, meta = _to_arrow(data, name)
        except UploadError as e:
            raise TapUsageError(str(e)) from None
        key = name.lower()
        tables[key] = arrow.cast(pa.schema([(n, t if t in _ARROW_OK else pa.string())
                                            for n, t in zip(arrow.column_names,
                                                            arrow.schema.types)]))
        described[key] = _describe(key, tables[key], meta)
    return tables, described
