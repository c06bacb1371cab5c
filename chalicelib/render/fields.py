"""Column and parameter metadata of a result (VOTable FIELD and PARAM), which every
writer (render/votable.py, render/encoders.py) and service shares."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from chalicelib.lake import schema


@dataclass
class Field:
    """Metadata of one result column (a VOTable FIELD)."""

    name: str
    datatype: str
    arraysize: str | None = None
    xtype: str | None = None
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    description: str | None = None
    id: str | None = None  # XML ID, for DataLink PARAM ref=

    @classmethod
    def from_column(cls, c: schema.Column, name: str | None = None) -> Field:
        return cls(name or c.name, c.datatype, c.arraysize, c.xtype, c.unit, c.ucd,
                   c.utype, c.description)

    @classmethod
    def from_arrow(cls, name: str, t: pa.DataType, geometry: str | None = None) -> Field:
        """A computed column; geometry 'point'|'circle'|'polygon' gives the DALI array."""
        if geometry is not None:
            size = {"point": "2", "circle": "3", "polygon": "*"}[geometry]
            return cls(name, "double", size, geometry, "deg")
        return cls(name, *_vot_type(t))


def _vot_type(t: pa.DataType) -> tuple[str, str | None, str | None]:
    """(datatype, arraysize, xtype) for an Arrow type."""
    if pa.types.is_dictionary(t):
        return _vot_type(t.value_type)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "char", "*", "timestamp"
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _vot_type(t.value_type)[0]
        if inner == "char":  # list<string>: served as one space-separated string
            return "char", "*", None
        size = str(t.list_size) if pa.types.is_fixed_size_list(t) else "*"
        return inner, size, None
    for test, datatype in _SCALARS:
        if test(t):
            return datatype, "*" if datatype == "char" else None, None
    raise ValueError(f"no VOTable type for Arrow type {t}")


_SCALARS = (
    (pa.types.is_boolean, "boolean"),
    (lambda t: t == pa.uint8(), "unsignedByte"),
    (lambda t: t in (pa.int8(), pa.int16()), "short"),
    (lambda t: t in (pa.uint16(), pa.int32()), "int"),
    (pa.types.is_integer, "long"),
    (lambda t: t in (pa.float16(), pa.float32()), "float"),
    (lambda t: pa.types.is_floating(t) or pa.types.is_decimal(t), "double"),
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
     or pa.types.is_null(t), "char"),
)


@dataclass
class Param:
    """A VOTable PARAM: service descriptor inputs and fixed values (always has value=)."""

    name: str
    datatype: str
    value: object = ""  # text, number or sequence (space-joined); None writes ""
    arraysize: str | None = None
    xtype: str | None = None
    unit: str | None = None
    ucd: str | None = None
    ref: str | None = None  # ID of the FIELD whose row value the client fills in
    min: object = None
    max: object = None
    options: list[str] | None = None
    description: str | None = None
    utype: str | None = None
