"""query.uploads.load_uploads directly (no TAP, no HTTP): inline VOTables become Arrow
tables with their descriptions, and bad UPLOAD values are the caller's errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io.votable import from_table
from astropy.table import MaskedColumn, Table

from chalicelib.query.uploads import (
    UPLOAD_MAX_TABLES,
    UploadRequest,
    UploadUsageError,
    load_uploads,
)
from chalicelib.web.params import Upload

LIMIT = 1 << 20


def votable_bytes(table: Table) -> bytes:
    buf = io.BytesIO()
    from_table(table).to_xml(buf)
    return buf.getvalue()


def source_table() -> Table:
    return Table({"id": np.array([3, 1, 2], np.int64),
                  "ra": np.array([10.5, 20.25, 30.0]),
                  "name": ["a", "b", "c"],
                  "mag": MaskedColumn([1.5, 2.5, 3.5], mask=[False, True, False],
                                      dtype=np.float32)})


def test_an_inline_table_arrives_with_its_values_and_types() -> None:
    req = UploadRequest(["Mine,param:part"], {"part": Upload("t.xml",
                                                             votable_bytes(source_table()))})
    tables, described = load_uploads(req, LIMIT)
    assert list(tables) == ["mine"] and list(described) == ["mine"]  # names lower-cased
    t = tables["mine"]
    assert t.column("id").to_pylist() == [3, 1, 2]
    assert t.column("ra").to_pylist() == [10.5, 20.25, 30.0]
    assert t.column("name").to_pylist() == ["a", "b", "c"]
    assert t.column("mag").to_pylist() == [1.5, None, 3.5]  # the masked cell is NULL
    assert str(t.schema.field("mag").type) == "float" and str(t.schema.field("id").type) \
        == "int64"
    assert [c.name for c in described["mine"].columns] == ["id", "ra", "name", "mag"]


def test_several_tables_in_one_value_and_no_upload_at_all() -> None:
    body = votable_bytes(source_table())
    req = UploadRequest(["a,param:x;b,param:y"], {"x": Upload("x", body),
                                                  "y": Upload("y", body)})
    assert sorted(load_uploads(req, LIMIT)[0]) == ["a", "b"]
    assert load_uploads(UploadRequest([]), LIMIT) == ({}, {})


@pytest.mark.parametrize("value, files, words", [
    ("1bad,param:x", {}, "plain table name"),
    ("t,", {}, "expected name,URI"),
    ("t,param:missing", {}, "no multipart part named 'missing'"),
    (";".join(f"t{i},param:x" for i in range(UPLOAD_MAX_TABLES + 1)), {}, "UPLOAD_MAX_TABLES"),
    ("t,param:x", {"x": Upload("x", b"not xml at all")}, "not a readable VOTable"),
    ("t,archive:uploads/../secret", {}, "UPLOAD t"),
])
def test_bad_uploads_are_usage_errors(value, files, words) -> None:
    with pytest.raises(UploadUsageError) as e:
        load_uploads(UploadRequest([value], files), LIMIT)
    assert words in str(e.value)


def test_the_byte_limit_counts_every_table() -> None:
    body = votable_bytes(source_table())
    req = UploadRequest(["a,param:x;b,param:x"], {"x": Upload("x", body)})
    load_uploads(req, 2 * len(body))
    with pytest.raises(UploadUsageError, match="exceed the limit"):
        load_uploads(req, 2 * len(body) - 1)
