"""Column encoders behind chalicelib.votable: Arrow columns -> VOTable cells and files.

Cells are encoded with Arrow compute kernels or numpy on whole columns, not one Python
call per cell (only non-ASCII BINARY2 text is): rows are then assembled by joining the
encoded columns element-wise in C++, and the joined buffer is the output.

`prepare` first turns each column into what its FIELD declares (STC-S text for
s_region, ISO text for timestamps, casts), so every format serializes the same values.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chalicelib.geometry import sky

if TYPE_CHECKING:
    from chalicelib.render.fields import Field

# VOTable numeric datatype -> (arrow type, big-endian numpy dtype, FITS TFORM letter)
NUMERIC: dict[str, tuple[pa.DataType, str, str]] = {
    "unsignedByte": (pa.uint8(), "u1", "B"),
    "short": (pa.int16(), ">i2", "I"),
    "int": (pa.int32(), ">i4", "J"),
    "long": (pa.int64(), ">i8", "K"),
    "float": (pa.float32(), ">f4", "E"),
    "double": (pa.float64(), ">f8", "D"),
}
TEXT_TYPES = ("char", "unicodeChar")
REGION_XTYPES = ("adql:region", "region")
ROWS_PER_BATCH = 32_768
# Batches are encoded in parallel: Arrow kernels and numpy copies release the GIL, so
# this scales with the cores (2x on two); threads start on first use.
_POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
# Below this many rows the work is done on the calling thread: a hand-off to the pool
# and back costs two thread wake-ups (0.1-0.5 ms each, ms on a loaded machine), more
# than encoding a cone's few hundred rows (#17).
INLINE_ROWS = 4096
_INVALID_XML = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x{fffe}\x{ffff}]"


# ---- preparation: make each column hold what its FIELD declares --------------------------


def prepare(table: pa.Table, fields: list[Field]) -> tuple[pa.Table, list[Field]]:
    """Convert the columns to their served form; char columns holding non-ASCII text
    become unicodeChar (VOTable 1.4 char is ASCII only)."""
    if table.num_columns != len(fields):
        raise ValueError(f"{table.num_columns} columns but {len(fields)} fields")
    run = map if table.num_rows < INLINE_ROWS else _POOL.map
    cols, out = zip(*run(_prepare_column, table.columns, fields)) if fields else ((), ())
    return pa.Table.from_arrays(list(cols), names=[f.name for f in out]), list(out)


def _prepare_column(col: pa.ChunkedArray, f: Field) -> tuple[pa.ChunkedArray, Field]:
    col = _served(col, f)
    if f.datatype == "char" and not _all_ascii(col):
        f = replace(f, datatype="unicodeChar")
    return col, f


def _served(col: pa.ChunkedArray, f: Field) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_dictionary(t):
        return _served(col.cast(t.value_type), f)
    if f.datatype in TEXT_TYPES:
        return _as_text_column(col, f)
    if f.datatype == "boolean":
        return col.cast(pa.bool_())
    if f.datatype not in NUMERIC:
        raise ValueError(f"unsupported VOTable datatype {f.datatype!r} for {f.name}")
    target = NUMERIC[f.datatype][0]
    if _is_list(t) != bool(f.arraysize):
        raise ValueError(f"{f.name}: {t} data for datatype {f.datatype} "
                         f"arraysize {f.arraysize}")
    if _is_list(t):
        return col.cast(pa.list_(target))
    if f.arraysize:
        raise ValueError(f"{f.name}: arraysize {f.arraysize} needs a list column, not {t}")
    return col if t == target else col.cast(target)


def _as_text_column(col: pa.ChunkedArray, f: Field) -> pa.ChunkedArray:
    t = col.type
    if _is_list(t) and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        if (f.xtype or "").lower() in REGION_XTYPES:
            return pa.chunked_array([_stcs(c) for c in col.chunks], pa.string())
        return pa.chunked_array([_join_numbers(c) for c in col.chunks], pa.string())
    if _is_list(t):  # list<string>: one char cell, items separated by spaces
        return pa.chunked_array([pc.binary_join(c.cast(pa.list_(pa.string())), " ")
                                 for c in col.chunks], pa.string())
    if pa.types.is_timestamp(t):  # DALI timestamps are UTC
        utc = col.cast(pa.timestamp(t.unit, "UTC")) if t.tz else col
        return pc.strftime(utc, "%Y-%m-%dT%H:%M:%S")
    if pa.types.is_date(t):
        return pc.strftime(col.cast(pa.timestamp("s")), "%Y-%m-%d")
    if pa.types.is_large_string(t) or pa.types.is_string(t):
        k = fixed_length(f)  # a fixed width (char[8]) holds at most k characters
        col = col.cast(pa.string())
        return col if k is None else pc.utf8_slice_codeunits(col, 0, k)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return col.cast(pa.string())
    return pa.chunked_array([to_text(c) for c in col.chunks], pa.string())


def _stcs(arr: pa.Array) -> pa.Array:
    """sky.stcs_polygon of every row, in one %-formatting call over all the values
    (3x faster than a call per row; the tests check the text is identical)."""
    if len(arr) == 0:
        return pa.array([], pa.string())
    offsets, values = list_parts(arr.cast(pa.list_(pa.float64())))
    lengths = np.diff(offsets)
    valid = (lengths > 0) & ~arr.is_null().to_numpy(zero_copy_only=False)
    prefix = sky.stcs_polygon([])  # "Polygon ICRS ": the fixed part of the text
    templates = {n: prefix + " ".join(["%.9g"] * n) for n in np.unique(lengths[valid])}
    template = "\n".join(templates[n] if ok else "" for n, ok in zip(lengths, valid))
    flat = values.fill_null(float("nan")).to_numpy(zero_copy_only=False)
    keep = np.repeat(valid, lengths)
    text = pa.array((template % tuple(flat[keep].tolist())).split("\n"), pa.string())
    return pc.if_else(pa.array(valid), text, pa.scalar(None, pa.string()))


def _join_numbers(arr: pa.Array) -> pa.Array:
    return to_text(arr.cast(pa.list_(pa.float64())))


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _all_ascii(col: pa.ChunkedArray) -> bool:
    return col.null_count == len(col) or bool(pc.all(pc.string_is_ascii(col)).as_py())


def fixed_length(f: Field) -> int | None:
    """Element count of a fixed arraysize ("3"), None for variable ones ("*", "10*")."""
    if f.arraysize is None:
        return 1 if f.datatype not in TEXT_TYPES else None
    return None if f.arraysize.endswith("*") else int(f.arraysize)


# ---- text: TABLEDATA, CSV, TSV ------------------------------------------------------------


def to_text(arr: pa.Array) -> pa.Array:
    """Cell text of one prepared column, null where the cell is null."""
    t = arr.type
    if _is_list(t):
        return _list_text(arr)
    if pa.types.is_floating(t):
        return _float_text(arr)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr
    return arr.cast(pa.string())


def _float_text(arr: pa.Array) -> pa.Array:
    text = arr.cast(pa.string())
    if pc.all(pc.is_finite(arr)).as_py() is not False:
        return text
    # Arrow says nan/inf; VOTable (and Python's float()) read NaN/+Inf/-Inf
    special = pc.if_else(pc.is_nan(arr), "NaN",
                         pc.if_else(pc.greater(arr, 0), "+Inf", "-Inf"))
    return pc.if_else(pc.is_finite(arr), text, special)


def _list_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    offsets, values = list_parts(arr)
    if pa.types.is_floating(values.type):
        values = values.fill_null(float("nan"))
    text = to_text(values).fill_null("")
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), text,
                                     mask=arr.is_null())
    return pc.binary_join(lists, " ")


def list_parts(arr: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Offsets starting at 0 and the values they index, for a possibly sliced list."""
    offsets = arr.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], arr.values.slice(offsets[0], offsets[-1] - offsets[0])


def _raw_bytes(arr: pa.Array) -> bytes:
    """The UTF-8 bytes of all the cells of a (sliced) string array, end to end."""
    if len(arr) == 0 or arr.buffers()[2] is None:
        return b""
    offsets = np.frombuffer(arr.buffers()[1], np.int32 if _is_32bit(arr) else np.int64)
    start, end = offsets[arr.offset], offsets[arr.offset + len(arr)]
    return memoryview(arr.buffers()[2])[start:end].tobytes()


def _contains(arr: pa.Array, chars: bytes, controls: bool = False) -> bool:
    """Does any cell hold one of `chars` (or a control character)? memchr-speed scans
    of the bytes instead of a regex per cell: most columns need no escaping at all."""
    raw = _raw_bytes(arr)
    if controls and ((np.frombuffer(raw, np.uint8) < 32).any()
                     or b"\xef\xbf\xbe" in raw or b"\xef\xbf\xbf" in raw):  # U+FFFE/F
        return True
    return any(bytes([c]) in raw for c in chars)


def _is_32bit(arr: pa.Array) -> bool:
    return pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)


def xml_escape(arr: pa.Array) -> pa.Array:
    if not _contains(arr, b"&<>", controls=True):
        return arr
    arr = pc.replace_substring(arr, "&", "&amp;")
    arr = pc.replace_substring(arr, "<", "&lt;")
    arr = pc.replace_substring(arr, ">", "&gt;")
    arr = pc.replace_substring(arr, "\r", "&#13;")  # parsers would turn a bare CR into LF
    return pc.replace_substring_regex(arr, _INVALID_XML, "?")  # not allowed in XML 1.0


def join_rows(cells: list[pa.Array], sep: str, start: str, end: str) -> memoryview:
    """Rows `start cell sep cell ... end`, assembled by Arrow: nulls become empty cells."""
    def big(text: str) -> pa.Scalar:
        return pa.scalar(text, pa.large_string())

    cells = [c.cast(pa.large_string()) for c in cells]
    row = pc.binary_join_element_wise(*cells, big(sep), null_handling="replace",
                                      null_replacement="")
    row = pc.binary_join_element_wise(big(start), row, big(end), big(""))
    return _buffer_bytes(row)


def _buffer_bytes(arr: pa.Array) -> memoryview:
    """The concatenated values of a (large_)string/binary array: the rows, end to end."""
    if len(arr) == 0:
        return memoryview(b"")
    dtype = np.int64 if arr.type in (pa.large_string(), pa.large_binary()) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype)[arr.offset:arr.offset + len(arr) + 1]
    return memoryview(arr.buffers()[2])[offsets[0]:offsets[-1]]


def per_batch(table: pa.Table, encode: Callable[[pa.RecordBatch], memoryview]
              ) -> Iterator[memoryview]:
    """encode(batch) for every batch of rows, in order, on the thread pool (one batch:
    on this thread)."""
    batches = table.to_batches(ROWS_PER_BATCH)
    return map(encode, batches) if len(batches) < 2 else _POOL.map(encode, batches)


def tabledata_rows(table: pa.Table, fields: list[Field]) -> Iterator[memoryview]:
    def encode(batch: pa.RecordBatch) -> memoryview:
        cells = [_td_text(c, f) for c, f in zip(batch.columns, fields)]
        return join_rows(cells, "</TD><TD>", "<TR><TD>", "</TD></TR>\n")

    return per_batch(table, encode)


def _td_text(arr: pa.Array, f: Field) -> pa.Array:
    if _textual(arr):
        return xml_escape(arr)
    k = fixed_length(f)
    if not _is_list(arr.type) or k is None or f.datatype not in ("float", "double"):
        return to_text(arr)
    # votlint wants k elements even in a null fixed array: NaNs (= null) it is
    bad = pc.fill_null(pc.not_equal(pc.list_value_length(arr), k), True)
    return pc.if_else(bad, " ".join(["NaN"] * k), to_text(arr))


def _textual(arr: pa.Array) -> bool:
    return pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)


def delimited(table: pa.Table, fields: list[Field], sep: str) -> bytes:
    """CSV (RFC 4180 quoting) or TSV (tabs and newlines in values become spaces)."""
    quote = _csv_quote if sep == "," else _tsv_clean
    header = sep.join(quote(pa.array([f.name for f in fields])).to_pylist()) + "\n"

    def encode(batch: pa.RecordBatch) -> memoryview:
        cells = [quote(to_text(c)) if _textual(c) or _is_list(c.type) else to_text(c)
                 for c in batch.columns]
        return join_rows(cells, sep, "", "\n")

    return b"".join([header.encode(), *per_batch(table, encode)])


def _csv_quote(arr: pa.Array) -> pa.Array:
    empty = pc.fill_null(pc.equal(pc.binary_length(arr), 0), False)  # "" is not null
    if not _contains(arr, b'",\r\n') and not pc.any(empty).as_py():
        return arr
    needs = pc.or_(pc.match_substring_regex(arr, '[",\r\n]'), empty)
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(arr, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, arr)


def _tsv_clean(arr: pa.Array) -> pa.Array:
    if not _contains(arr, b"\t\r\n"):
        return arr
    return pc.replace_substring_regex(arr, r"[\t\r\n]", " ")


# ---- BINARY2 ----------------------------------------------------------------------------


def binary2_stream(table: pa.Table, fields: list[Field]) -> Iterator[memoryview]:
    """The BINARY2 byte stream: per row the null flags, then each cell big-endian."""
    def encode(batch: pa.RecordBatch) -> memoryview:
        pieces = [_null_flags(batch)]
        for col, f in zip(batch.columns, fields):
            pieces.extend(_binary_cell(col, f))
        row = pc.binary_join_element_wise(*pieces, pa.scalar(b"", pa.large_binary()))
        return _buffer_bytes(row)

    return per_batch(table, encode)


def base64_lines(data: bytes | memoryview) -> list[memoryview]:
    """Base64 in 76-character lines like base64.encodebytes, but in one pass (that one
    loops in Python over 57-byte chunks: 1 s for 100 MB)."""
    text = np.frombuffer(base64.b64encode(data), np.uint8)
    full = len(text) // 76
    lines = np.empty((full, 77), np.uint8)
    lines[:, :76] = text[:full * 76].reshape(full, 76)
    lines[:, 76] = 10
    rest = text[full * 76:].tobytes()
    return [memoryview(lines.reshape(-1)), memoryview(rest + b"\n" if rest else b"")]


def _fixed_width(data: np.ndarray, n: int) -> pa.Array:
    """n equal-width cells from a C-contiguous array holding them row after row."""
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    width = len(raw) // n if n else 0
    offsets = np.arange(n + 1, dtype=np.int64) * width
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets),
                                                        pa.py_buffer(raw)])


def _variable(lengths: np.ndarray, raw: np.ndarray, starts: np.ndarray) -> list[pa.Array]:
    """A 4-byte element count, then the cell bytes."""
    return [_fixed_width(lengths.astype(">i4"), len(lengths)), _slices(raw, starts)]


def _slices(raw: np.ndarray, starts: np.ndarray) -> pa.Array:
    """Cells raw[starts[i]:starts[i+1]] (bytes), without copying them."""
    return pa.Array.from_buffers(pa.large_binary(), len(starts) - 1, [
        None, pa.py_buffer(starts.astype(np.int64) - starts[0]),
        pa.py_buffer(np.ascontiguousarray(raw[starts[0]:starts[-1]]).view(np.uint8))])


def _null_flags(batch: pa.RecordBatch) -> pa.Array:
    n = batch.num_rows
    nulls = np.zeros((n, max(batch.num_columns, 1)), bool)
    for i, col in enumerate(batch.columns):
        if col.null_count:
            nulls[:, i] = col.is_null().to_numpy(zero_copy_only=False)
    return _fixed_width(np.packbits(nulls, axis=1, bitorder="big"), n)


def _binary_cell(col: pa.Array, f: Field) -> list[pa.Array]:
    if f.datatype == "char":
        return _char_cells(col, f)
    if f.datatype == "unicodeChar":
        return _unicode_cells(col, f)
    if f.datatype == "boolean":
        return [_fixed_width(_bool_codes(col, b"?"), len(col))]
    dtype = NUMERIC[f.datatype][1]
    if _is_list(col.type):
        return _array_cells(col, f, dtype)
    return [_fixed_width(_numbers(col, dtype), len(col))]


def _numbers(arr: pa.Array, dtype: str) -> np.ndarray:
    fill = float("nan") if pa.types.is_floating(arr.type) else 0
    return arr.fill_null(fill).to_numpy(zero_copy_only=False).astype(dtype)


def _array_cells(col: pa.Array, f: Field, dtype: str) -> list[pa.Array]:
    k = fixed_length(f)
    if k is None:
        lengths, values = packed_arrays(col, dtype)
        starts = np.concatenate([[0], np.cumsum(lengths)]) * np.dtype(dtype).itemsize
        return _variable(lengths, values.view(np.uint8), starts)
    return [_fixed_width(fixed_arrays(col, k, dtype), len(col))]


def packed_arrays(col: pa.Array, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Element counts (0 for nulls) and all elements end to end, as `dtype`."""
    offsets, values = list_parts(col)
    values = _numbers(values, dtype)
    lengths = np.diff(offsets)
    null = col.is_null().to_numpy(zero_copy_only=False)
    if (lengths[null] > 0).any():  # a null row may still own values: drop them
        values = values[np.repeat(~null, lengths)]
        lengths[null] = 0
    return lengths, values


def fixed_arrays(col: pa.Array, k: int, dtype: str) -> np.ndarray:
    """(n, k) cells; nulls and rows of another length become NaN (or 0) cells."""
    offsets, values = list_parts(col)
    lengths = np.diff(offsets)
    lengths[col.is_null().to_numpy(zero_copy_only=False)] = 0
    return _fixed_rows(_numbers(values, dtype), offsets, lengths, k, dtype)


def _fixed_rows(values, offsets, lengths, k: int, dtype: str) -> np.ndarray:
    """(n, k) cells; rows with another element count get NaN (or 0) cells."""
    fill = np.nan if np.dtype(dtype).kind == "f" else 0
    out = np.full((len(lengths), k), fill, dtype=dtype)
    ok = lengths == k
    idx = offsets[:-1][ok, None] + np.arange(k)
    out[ok] = values[idx]
    return out


def _char_cells(col: pa.Array, f: Field) -> list[pa.Array]:
    k = fixed_length(f)
    text = col.fill_null("")
    if k is not None:  # fixed width: pad with NULs (VOTable's string terminator)
        text = pc.utf8_slice_codeunits(pc.utf8_rpad(text, k, "\0"), 0, k)
    binary = text.cast(pa.large_binary())
    offsets = np.frombuffer(binary.buffers()[1], np.int64)[
        binary.offset:binary.offset + len(binary) + 1]
    raw = np.frombuffer(binary.buffers()[2] or b"", np.uint8)
    if k is not None:
        return [_slices(raw, offsets)]
    return _variable(np.diff(offsets), raw, offsets)


def _unicode_cells(col: pa.Array, f: Field) -> list[pa.Array]:
    """UCS-2 big-endian; characters beyond the BMP cannot be represented: '?'."""
    k = fixed_length(f)
    cells = []
    for s in col.fill_null("").to_pylist():
        s = "".join(c if ord(c) < 0x10000 else "?" for c in s) if not s.isascii() else s
        cells.append((s.ljust(k, "\0")[:k] if k is not None else s).encode("utf-16-be"))
    body = pa.array(cells, pa.large_binary())
    if k is not None:
        return [body]
    lengths = np.array([len(c) // 2 for c in cells], np.int64)
    return [_fixed_width(lengths.astype(">i4"), len(col)), body]


# ---- FITS and Parquet -------------------------------------------------------------------


def fits_bytes(table: pa.Table, fields: list[Field]) -> bytes:
    """A FITS binary table written with numpy (astropy's writer is 5x slower on strings):
    TUNITn, TNULLn, variable arrays in the heap, and UCD/utype/description as
    TUCDn/TUTYPn/TCOMMn (the STIL convention TOPCAT reads)."""
    from astropy.io import fits  # deferred: cold start (astropy)

    n = table.num_rows
    cols = [_fits_column(c.combine_chunks(), f) for c, f in zip(table.columns, fields)]
    heap, heap_size = [], 0
    rows = np.zeros(n, dtype=[(f"c{i}", c.cell.dtype, c.cell.shape[1:])
                              for i, c in enumerate(cols)])
    for i, c in enumerate(cols):
        if c.heap is not None:  # descriptors: element count, byte offset into the heap
            c.cell[:, 1] += heap_size
            heap.append(c.heap)
            heap_size += len(c.heap)
        rows[f"c{i}"] = c.cell
    header = fits.Header([("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2),
                          ("NAXIS1", rows.dtype.itemsize), ("NAXIS2", n),
                          ("PCOUNT", heap_size), ("GCOUNT", 1), ("TFIELDS", len(cols))])
    for i, (c, f) in enumerate(zip(cols, fields), 1):
        _fits_cards(header, i, c, f)
    data = rows.tobytes() + b"".join(heap)
    padding = b"\0" * (-len(data) % 2880)
    primary = fits.PrimaryHDU().header.tostring().encode()
    return primary + header.tostring().encode() + data + padding


@dataclass
class _FitsColumn:
    tform: str
    cell: np.ndarray  # (n, ...) big-endian cells of the row array
    null: int | None = None
    heap: bytes | None = None


def _fits_cards(header, i: int, c: _FitsColumn, f: Field) -> None:
    header[f"TTYPE{i}"] = _ascii(f.name)
    header[f"TFORM{i}"] = c.tform
    for key, value in (("TUNIT", f.unit), ("TNULL", c.null), ("TUCD", f.ucd),
                       ("TUTYP", f.utype), ("TCOMM", f.description)):
        if value is not None and value != "":
            header[f"{key}{i}"] = value if isinstance(value, int) else _ascii(value)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode().replace("\n", " ")


def _fits_column(col: pa.Array, f: Field) -> _FitsColumn:
    n = len(col)
    if f.datatype in TEXT_TYPES:
        cell = _padded_bytes(col)
        return _FitsColumn(f"{cell.dtype.itemsize}A", cell)
    if f.datatype == "boolean":
        return _FitsColumn("L", _bool_codes(col, b"\0").view("S1"))
    dtype, letter = NUMERIC[f.datatype][1], NUMERIC[f.datatype][2]
    if _is_list(col.type):
        return _fits_array(col, f, dtype, letter)
    if letter in "BIJK" and col.null_count:
        info = np.iinfo(np.dtype(dtype))
        null = int(info.max if letter == "B" else info.min)
        cell = col.fill_null(null).to_numpy(zero_copy_only=False).astype(dtype)
        return _FitsColumn(letter, cell.reshape(n), null)
    return _FitsColumn(letter, _numbers(col, dtype))


def _fits_array(col: pa.Array, f: Field, dtype: str, letter: str) -> _FitsColumn:
    k = fixed_length(f)
    if k is not None:
        return _FitsColumn(f"{k}{letter}", fixed_arrays(col, k, dtype))
    lengths, values = packed_arrays(col, dtype)
    size = np.dtype(dtype).itemsize
    starts = (np.cumsum(lengths) - lengths) * size
    cell = np.stack([lengths, starts], axis=1).astype(">i4")
    return _FitsColumn(f"P{letter}({int(lengths.max(initial=0))})", cell,
                       heap=values.tobytes())


def _bool_codes(col: pa.Array, null: bytes) -> np.ndarray:
    codes = np.where(col.fill_null(False).to_numpy(zero_copy_only=False), 84, 70)
    codes[col.is_null().to_numpy(zero_copy_only=False)] = ord(null)
    return codes.astype(np.uint8)


def _padded_bytes(col: pa.Array) -> np.ndarray:
    """Fixed-width UTF-8 bytes of a string column ('' for nulls), NUL padded."""
    text = col.fill_null("")
    width = max(int(pc.max(pc.binary_length(text)).as_py() or 0), 1)
    if len(col) == 0:
        return np.zeros(0, f"S{width}")
    if _all_ascii(text):  # Arrow pads, and the padded buffer is the (n, width) array
        padded = pc.utf8_rpad(text, width, "\0")
        start = np.frombuffer(padded.buffers()[1], np.int32)[padded.offset]
        data = memoryview(padded.buffers()[2])[start:start + width * len(col)]
        return np.frombuffer(data, f"S{width}")
    binary = text.cast(pa.large_binary())
    offsets = np.frombuffer(binary.buffers()[1], np.int64)[
        binary.offset:binary.offset + len(col) + 1]
    lengths = np.diff(offsets)
    data = np.frombuffer(binary.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    out = np.zeros(len(col) * width, np.uint8)
    shift = np.arange(len(col)) * width - (offsets[:-1] - offsets[0])
    out[np.arange(len(data)) + np.repeat(shift, lengths)] = data
    return out.view(f"S{width}")


def parquet_bytes(table: pa.Table, header_xml: str) -> bytes:
    """VOParquet 1.0: the data-less VOTable rides in the file's key-value metadata."""
    import pyarrow.parquet as pq  # deferred: Parquet output only

    meta = {b"IVOA.VOTable-Parquet.version": b"1.0",
            b"IVOA.VOTable-Parquet.content": header_xml.encode()}
    # astropy's Parquet reader sizes a string column from `table::len::<name>` (as it
    # writes them itself); without it it measures every value and fails on a NULL
    for f in table.schema:
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            longest = pc.max(pc.utf8_length(table[f.name])).as_py() if len(table) else 0
            meta[f"table::len::{f.name}".encode()] = str(max(1, longest or 0)).encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf)
    return buf.getvalue()
