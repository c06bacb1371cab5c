"""The catalogue's bind files (empty Parquet files DuckDB binds each view from): the ones
the image seeds at build are found by a cold catalogue, which then writes none (~40 ms
of a cold start); a schema the seed lacks is still written on the machine."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from chalicelib import config
from chalicelib.lake import schema
from chalicelib.query import catalogue
from chalicelib.query.catalogue import Catalogue

QUERY = ("SELECT obs_publisher_did, s_ra FROM ivoa.obscore WHERE s_ra IS NOT NULL "
         "ORDER BY obs_publisher_did")


@pytest.fixture
def machine(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(catalogue, "BIND_ROOT", tmp_path / "machine")
    return tmp_path / "machine"


def _with_seed(monkeypatch, seed: Path | None) -> None:
    if seed is None:
        monkeypatch.delenv("CATALOGUE_BIND_SEED", raising=False)
    else:
        monkeypatch.setenv("CATALOGUE_BIND_SEED", str(seed))
    config.reset()


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet")) if root.exists() else []


def test_a_seeded_catalogue_writes_no_bind_file(archive, machine, tmp_path, monkeypatch):
    seed = tmp_path / "seed"
    assert catalogue.seed_bind_files(seed) == len(schema.PHYSICAL)
    _with_seed(monkeypatch, None)
    usual = Catalogue(archive).query(QUERY)
    written = {str(p.relative_to(machine)): pq.read_schema(p) for p in _files(machine)}
    assert written, "without a seed the catalogue writes its bind files here"
    for f in _files(machine):
        f.unlink()
    try:
        _with_seed(monkeypatch, seed)
        seeded = Catalogue(archive).query(QUERY)
    finally:
        _with_seed(monkeypatch, None)
    assert seeded.equals(usual) and seeded.num_rows > 0
    assert _files(machine) == []
    # the seed holds the same files the machine wrote: same names, same schemas
    assert set(written) <= {str(p.relative_to(seed)) for p in _files(seed)}
    for rel, arrow in written.items():
        assert pq.read_schema(seed / rel).equals(arrow)


def test_a_schema_the_seed_lacks_is_written(archive, machine, tmp_path, monkeypatch):
    seed = tmp_path / "empty-seed"
    seed.mkdir()
    try:
        _with_seed(monkeypatch, seed)
        assert Catalogue(archive).query(QUERY).num_rows > 0
    finally:
        _with_seed(monkeypatch, None)
    assert len(_files(machine)) >= 1
