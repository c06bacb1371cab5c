"""TAP UPLOAD: VOTable tables sent inline (multipart `param:`) or by http(s) URL,
queryable as TAP_UPLOAD.<name> for the one query that brought them."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .. import outbound
from ..dali import UsageError
from ..lake import schema
from . import runtime

if TYPE_CHECKING:  # astropy loads on first upload only
    from astropy.io.votable.tree import Field
    from astropy.io.votable.tree import TableElement as VOTable

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
UPLOAD_MAX_TABLES = 10  # per request
UPLOAD_MAX_ROWS = 1_000_000  # per table
UPLOAD_MAX_COLUMNS = 1000  # per table
# for counting before parsing (tags may carry a namespace prefix)
_DATA = re.compile(rb"<(?:[\w.-]+:)?DATA[\s>]")
_FIELD = re.compile(rb"<(?:[\w.-]+:)?FIELD[\s/>]")
_TR = re.compile(rb"<(?:[\w.-]+:)?TR[\s>]")
_NROWS = re.compile(rb"<(?:[\w.-]+:)?TABLE\s[^>]*?nrows\s*=\s*[\"'](\d+)")


# VOTable numeric datatype -> the Arrow type DuckDB holds it in (unsignedByte widened:
# the schema layer has no uint8 column, and is served back as unsignedByte)
_HELD = {"unsignedByte": pa.int16(), "short": pa.int16(), "int": pa.int32(),
         "long": pa.int64(), "float": pa.float32(), "double": pa.float64()}
_TEXT = {"char", "unicodeChar"}
_BOOL = {"boolean", "bit"}


class UploadError(ValueError):
    pass


class UploadUsageError(UsageError):
    """A bad UPLOAD: the caller's mistake (TAP answers it as its own usage error)."""


@dataclass
class UploadRequest:
    """What load_uploads reads of a request: its UPLOAD values and multipart files (an
    HTTP request's Params serves as one too)."""
    uploads: list[str]
    files: dict[str, Any] = field(default_factory=dict)

    def getall(self, name: str) -> list[str]:
        return list(self.uploads) if name.upper() == "UPLOAD" else []


def _fetch(uri: str, name: str, limit: int) -> bytes:
    try:
        return outbound.fetch(uri, limit)
    except outbound.OutboundError as e:
        raise UploadError(f"UPLOAD {name}: {e}") from None


def _stored(key: str) -> bytes:
    try:
        return runtime.archive().read_bytes(key)
    except FileNotFoundError:
        raise UploadError(f"the uploaded table {key} is gone") from None


def _limits(name: str, columns: int, rows: int) -> None:
    if columns > UPLOAD_MAX_COLUMNS:
        raise UploadError(f"UPLOAD {name}: {columns} columns; the limit (UPLOAD_MAX_COLUMNS) "
                          f"is {UPLOAD_MAX_COLUMNS} per table")
    if rows > UPLOAD_MAX_ROWS:
        raise UploadError(f"UPLOAD {name}: {rows} rows; the limit (UPLOAD_MAX_ROWS) is "
                          f"{UPLOAD_MAX_ROWS} per table")


def _prescan(data: bytes, name: str) -> None:
    """Refuse an over-limit table before astropy parses all of it: the FIELDs before the
    first DATA, the declared nrows and TABLEDATA's rows (BINARY rows are only counted
    once parsed)."""
    found = _DATA.search(data)
    head = found.start() if found else len(data)
    columns = len(_FIELD.findall(data, 0, head))
    nrows = _NROWS.search(data, 0, head)
    declared = nrows.group(1) if nrows else b"0"  # int() cannot read 5000 digits: too many
    declared_rows = int(declared) if len(declared) < 19 else UPLOAD_MAX_ROWS + 1
    rows = max(declared_rows, sum(1 for _ in _TR.finditer(data)))
    _limits(name, columns, rows)


_WHERE = re.compile(r"^(?:None|[^:\s]*):(\d+):(\d+): |^(\d+):(\d+): ")
_CLASS = re.compile(r"\b[A-Z]\w*(?:Error|Exception|Warning): ")


def _reason(e: Exception) -> str:
    """astropy's message in the caller's terms: 'None:1:102: ValueError: invalid literal
    ...' -> 'line 1, column 102: invalid literal ...' (no file name, no class name)."""
    text = _WHERE.sub(lambda m: f"line {m.group(1) or m.group(3)}, column "
                                f"{m.group(2) or m.group(4)}: ", str(e), count=1)
    return _CLASS.sub("", text)


def _parse(data: bytes, name: str) -> VOTable:
    """The first VOTable TABLE, refused before any conversion when over the limits."""
    from astropy.io.votable import parse_single_table  # deferred: cold start (astropy)

    _prescan(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vt = parse_single_table(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - any parse failure is the caller's document
        raise UploadError(f"upload {name!r} is not a readable VOTable: {_reason(e)}") \
            from None
    _limits(name, len(vt.fields), len(vt.array))
    return vt


def _to_arrow(data: bytes, name: str) -> tuple[pa.Table, schema.Table]:
    """The rows as DuckDB will hold them, and the table's description."""
    vt = _parse(data, name)
    table = vt.to_table(use_names_over_ids=True)
    arrays, cols = {}, []
    for f, col in zip(vt.fields, table.itercols()):
        key = col.name.lower()
        if key in arrays:
            raise UploadError(f"UPLOAD {name}: column names must be unique regardless of "
                              f"case ({col.name!r} repeats)")
        arrays[key], column = _column(f, col, key)
        cols.append(column)
    described = schema.Table(f"TAP_UPLOAD.{name.lower()}", "uploaded table", tuple(cols),
                             physical="")
    return pa.table(arrays), described


def _column(f: Field, col: Any, key: str) -> tuple[pa.Array, schema.Column]:
    """One uploaded column: numbers and booleans as themselves, numeric arrays as Arrow
    lists (served back with their datatype, arraysize *), text as text, and what the
    schema layer has no type for (complex, boolean arrays) as its TABLEDATA text."""
    meta = {"unit": str(f.unit) if f.unit else None, "ucd": f.ucd, "utype": f.utype}
    desc = f"uploaded column {key}"
    scalar = col.ndim == 1 and col.dtype.kind != "O"
    held = _HELD.get(f.datatype)
    if f.datatype in _TEXT:
        return _strings(col), schema.Column(key, pa.string(), desc, xtype=f.xtype, **meta)
    if held is not None and scalar:
        served = "unsignedByte" if f.datatype == "unsignedByte" else None
        return (_scalars(col, held),
                schema.Column(key, held, desc, xtype=f.xtype, served_as=served, **meta))
    if held is not None:
        return (_lists(col, held), schema.Column(key, pa.list_(pa.float64()), desc,
                                                 xtype=f.xtype, served_as=f.datatype, **meta))
    if f.datatype in _BOOL and scalar:  # described as a number: ADQL reads a boolean column
        # as a condition, which cannot be selected; served back as boolean
        return _scalars(col, pa.bool_()), schema.Column(key, pa.int16(), desc,
                                                        served_as="boolean", **meta)
    return _texts(col), schema.Column(key, pa.string(), desc, **meta)


def _mask(col: Any) -> np.ndarray | None:
    return np.ma.getmaskarray(col) if np.ma.isMaskedArray(col) else None


def _scalars(col: Any, t: pa.DataType) -> pa.Array:
    return pa.array(np.ma.getdata(col), mask=_mask(col)).cast(t)


def _strings(col: Any) -> pa.Array:
    return pa.array([None if v is None else v.decode("utf-8", "replace")
                     if isinstance(v, bytes) else str(v) for v in _cells(col)], pa.string())


def _cells(col: Any) -> list[Any]:
    """Each row's cell, None when null; a fixed-size array column gives one (masked)
    array per row."""
    if col.ndim > 1:  # (-1 cannot be inferred for 0 rows)
        cells = np.ma.masked_array(np.ma.getdata(col), _mask(col))
        return list(cells.reshape(len(col), int(np.prod(col.shape[1:]))))
    mask = _mask(col)
    nulls = mask if mask is not None else np.zeros(len(col), bool)
    return [None if m or v is None or v is np.ma.masked else v
            for v, m in zip(np.ma.getdata(col), nulls)]


def _items(cell: Any) -> list[tuple[Any, bool]]:
    """(value, masked) of each element of an array cell, flattened."""
    flat = np.ma.ravel(cell)
    return list(zip(np.ma.getdata(flat).tolist(), np.ma.getmaskarray(flat).tolist()))


def _lists(col: Any, t: pa.DataType) -> pa.Array:
    return pa.array([None if c is None else [None if m else v for v, m in _items(c)]
                     for c in _cells(col)], pa.list_(t))


def _texts(col: Any) -> pa.Array:
    """VOTable TABLEDATA text of each cell: complex as 're im', booleans as T/F, a null
    element as NaN."""
    return pa.array([None if c is None else " ".join(_token(v, m) for v, m in _items(c))
                     for c in _cells(col)], pa.string())


def _token(v: Any, masked: bool) -> str:
    if masked:
        return "NaN"
    if isinstance(v, complex):
        return f"{v.real!r} {v.imag!r}"
    if isinstance(v, bool):
        return "T" if v else "F"
    return str(v)


def load_uploads(params: UploadRequest, limit: int) -> tuple[dict[str, pa.Table], dict]:
    """Parse UPLOAD=name,uri[;name,uri] into Arrow tables and their descriptions."""
    tables, described = {}, {}
    specs = [s for v in params.getall("UPLOAD") for s in v.split(";") if s.strip()]
    if len(specs) > UPLOAD_MAX_TABLES:  # before anything is read or fetched
        raise UploadUsageError(f"UPLOAD: {len(specs)} tables; the limit (UPLOAD_MAX_TABLES) is "
                            f"{UPLOAD_MAX_TABLES} per request")
    total = 0
    for spec in specs:
        name, _, uri = spec.partition(",")
        name, uri = name.strip(), uri.strip()
        if not NAME.match(name) or not uri:
            raise UploadUsageError(f"UPLOAD {spec!r}: expected name,URI with a plain table name")
        try:
            data = _data(params, name, uri, limit)
            total += len(data)
            if total > limit:
                raise UploadError(f"uploads exceed the limit of {limit} bytes")
            key = name.lower()
            tables[key], described[key] = _to_arrow(data, name)
        except UploadError as e:
            raise UploadUsageError(str(e)) from None
    return tables, described


def _data(params: UploadRequest, name: str, uri: str, limit: int) -> bytes:
    if uri.startswith("param:"):
        part = params.files.get(uri[6:])
        if part is None:
            raise UploadError(f"UPLOAD {name}: no multipart part named {uri[6:]!r}")
        return part.content
    if uri.startswith("archive:uploads/") and ".." not in uri:
        return _stored(uri[len("archive:"):])  # an async job's inline upload
    return _fetch(uri, name, limit)  # which refuses file:, ftp: ... with its one text
