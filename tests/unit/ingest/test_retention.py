"""Retention: vacuum removes exactly the files no kept release can read, while a query
pinned to a kept release runs concurrently and keeps its answer.

The expectation is computed independently of retention.py: deltalake's own time travel
(DeltaTable at every version of the log) gives the files each version reads, and the
rows each release should show come from the delivery records it names."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from chalicelib.ingest import maintenance, retention
from chalicelib.ingest.delivery import ingest
from chalicelib.lake import releases, schema
from chalicelib.lake.storage import Archive
from chalicelib.lake.tables import table_uri
from chalicelib.query.catalogue import Catalogue


@pytest.fixture(scope="module")
def weeks(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from chalicelib.devtools.synth import synthesize

    return [Path(p) for p in synthesize(tmp_path_factory.mktemp("weeks"), 10,
                                        images_per_week=300, metadata_only=True)]


def _build(root: Path, weeks: list[Path]) -> Archive:
    """Ten weekly releases with merges into tiers and compactions in between: files
    replaced again and again, more than one checkpoint interval of commits."""
    arch = Archive.from_env(str(root))
    for i, week in enumerate(weeks):
        ingest(week, arch)
        maintenance.after_ingest(arch, every=2, max_tiers=2)
        if i in (4, 8):
            maintenance.compact(arch)  # Delta optimize of the CAOM tables too
    return arch


def _dids(weeks: list[Path], release: releases.Release) -> list[str]:
    by_name = {w.name: w for w in weeks}
    return sorted(d for name in release.runs for d in
                  pq.read_table(by_name[name] / "plane.parquet")["obs_publisher_did"]
                  .to_pylist())


def _answer(cat: Catalogue) -> list[str]:
    return sorted(cat.query("SELECT obs_publisher_did FROM ivoa.obscore")[
        "obs_publisher_did"].to_pylist())


def _data_files(arch: Archive, name: str) -> set[str]:
    root = Path(arch.path(f"tables/{name}"))
    return {p.relative_to(root).as_posix() for p in root.rglob("*.parquet")
            if "_delta_log" not in p.parts}


def _files_at(arch: Archive, name: str, version: int) -> set[str]:
    root = arch.path(f"tables/{name}") + "/"
    uris = DeltaTable(table_uri(arch, name), version=version).file_uris()
    return {unquote(u.removeprefix("file://")).removeprefix(root) for u in uris}


def test_vacuum_removes_exactly_what_no_kept_release_reads_while_a_pinned_query_runs(
        tmp_path: Path, weeks: list[Path]) -> None:
    arch = _build(tmp_path / "arch", weeks)
    numbers = releases.numbers(arch)
    assert len(numbers) > 12
    retention.pin(arch, "DR1", 3)
    policy = retention.Policy(keep_last=2, grace=0)
    keep = retention.kept(arch, policy)
    assert set(keep) == {3, numbers[-2], numbers[-1]} and keep[3] == "pinned as DR1"

    # independent expectation, from deltalake's time travel before anything is removed
    loaded = {n: releases.load(arch, n) for n in numbers}
    expected_removed, before = {}, {}
    for name in schema.PHYSICAL:
        newest = DeltaTable(table_uri(arch, name)).version()
        every = set().union(*(_files_at(arch, name, v) for v in range(newest + 1)))
        needed = set().union(*(_files_at(arch, name, loaded[n].versions[name])
                               for n in keep), _files_at(arch, name, newest))
        expected_removed[name] = every - needed
        before[name] = _data_files(arch, name)
        assert every <= before[name]
    assert sum(map(len, expected_removed.values())) > 0  # rewrites left files behind
    truth = {n: _dids(weeks, loaded[n]) for n in keep}
    assert _answer(Catalogue(arch, release=3)) == truth[3]

    # a query pinned to DR1 keeps reading, in a loop, while vacuum runs
    answers: list[list[str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    warm = Catalogue(arch, release=3)  # opened before: as a warm Lambda container holds it

    def reader() -> None:
        while not stop.is_set():
            try:
                answers.append(_answer(warm))
                answers.append(_answer(Catalogue(arch, release=3)))  # opened mid-vacuum
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    while not answers:
        pass
    during = len(answers)
    report = retention.vacuum(arch, policy)
    after_vacuum = len(answers)
    stop.set()
    thread.join()
    assert not errors, errors
    assert after_vacuum > during or len(answers) > during  # queries overlapped vacuum
    assert all(a == truth[3] for a in answers)

    # exactly the files nobody can read are gone; every kept release still opens
    for name in schema.PHYSICAL:
        gone = before[name] - _data_files(arch, name)
        assert gone == expected_removed[name], name
        assert {unquote(p) for p in report.tables[name].removed} == gone
    assert not any(t.log_removed for t in report.tables.values())  # DR1 needs it all
    for n in keep:
        assert _answer(Catalogue(arch, release=n)) == truth[n]
        for name in schema.PHYSICAL:
            dt = DeltaTable(table_uri(arch, name), version=loaded[n].versions[name])
            root = arch.path(f"tables/{name}") + "/"
            assert {unquote(u.removeprefix("file://")).removeprefix(root)
                    for u in dt.file_uris()} <= _data_files(arch, name)
    assert report.removed_bytes > 0

    # a second vacuum finds nothing more
    again = retention.vacuum(arch, policy)
    assert sum(len(t.removed) for t in again.tables.values()) == 0

    # DR1 retired for a later data release (one still kept, so still whole), and only
    # the latest otherwise: now the log's first commits go as well
    retention.unpin(arch, "DR1")
    dr2 = numbers[-2]
    retention.pin(arch, "DR2", dr2)
    third = retention.vacuum(arch, retention.Policy(keep_last=1, grace=0))
    assert set(third.kept) == {dr2, numbers[-1]}
    assert any(t.log_removed for t in third.tables.values())
    for n in third.kept:  # still opened by both readers: the catalogue's and deltalake's
        assert _answer(Catalogue(arch, release=n)) == _dids(weeks, loaded[n])
        for name in schema.PHYSICAL:
            DeltaTable(table_uri(arch, name), version=loaded[n].versions[name])
    obscore_v = loaded[3].versions["ivoa.obscore"]
    assert not any(Path(arch.path(f"tables/ivoa.obscore/_delta_log/{v:020d}.json")).exists()
                   for v in range(obscore_v + 1))  # release 3 is no longer readable
    # and the archive carries on: the next week ingests and is visible
    ingest_more = _build(tmp_path / "arch", [])
    assert _answer(Catalogue(ingest_more)) == _dids(weeks, releases.load(arch))


def test_a_superseded_release_stays_for_the_grace_period(tmp_path: Path,
                                                         weeks: list[Path]) -> None:
    arch = Archive.from_env(str(tmp_path / "arch"))
    for week in weeks[:3]:
        ingest(week, arch)
    policy = retention.Policy(keep_last=1, grace=3600)
    keep = retention.kept(arch, policy)
    assert keep[3] == "latest" and keep[2] == "superseded within the grace period"
    later = datetime.now(UTC) + timedelta(hours=2)
    assert set(retention.kept(arch, policy, now=later)) == {3}
    assert retention.vacuum(arch, policy, dry_run=True).dry_run
    with pytest.raises(ValueError, match="pin name"):
        retention.pin(arch, "../x", 1)
    with pytest.raises(LookupError):
        retention.pin(arch, "DR9", 99)


def _hats_copy(arch: Archive, release: int) -> str:
    """A stand-in for a HATS publication of a release (hats-import is slow; vacuum only
    looks at the folders and hats/latest.json)."""
    key = f"hats/{release:08d}"
    arch.write_bytes(f"{key}/obscore/dataset/Norder=0/Dir=0/Npix=1.parquet", b"x" * 100)
    return key


def test_vacuum_removes_hats_copies_of_dropped_releases_but_not_the_published_one(
        tmp_path: Path, weeks: list[Path]) -> None:
    arch = Archive.from_env(str(tmp_path / "arch"))
    for week in weeks[:4]:
        ingest(week, arch)
    copies = {n: _hats_copy(arch, n) for n in (1, 2, 3, 4)}
    # LSDB users still read release 2's copy: the newest publication (no merge since)
    arch.write_bytes("hats/latest.json", b'{"release": 2, "path": "hats/00000002/obscore"}')
    policy = retention.Policy(keep_last=1, grace=0)
    dry = retention.vacuum(arch, policy, dry_run=True)
    assert sorted(k for k in dry.other_removed if k.startswith("hats/")) == [
        copies[1], copies[3]]
    assert all(arch.exists(f"{k}/obscore/dataset/Norder=0/Dir=0/Npix=1.parquet")
               for k in copies.values())
    retention.vacuum(arch, policy)
    assert sorted(arch.list("hats")) == ["hats/00000002", "hats/00000004", "hats/latest.json"]


def test_the_scheduled_vacuum_function_applies_the_configured_policy(
        tmp_path: Path, weeks: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib import config
    from chalicelib.lambdas import handlers

    root = tmp_path / "arch"
    arch = _build(root, weeks[:6])
    monkeypatch.setenv("ARCHIVE_URL", str(root))
    config.reset()
    assert "skipped" in handlers.vacuum_releases({})  # RETENTION_KEEP_LAST=0: keep all
    before = {n: _data_files(arch, n) for n in schema.PHYSICAL}
    keep = releases.numbers(arch)[-2:]
    monkeypatch.setenv("RETENTION_KEEP_LAST", "2")
    monkeypatch.setenv("RETENTION_GRACE_SECONDS", "0")
    config.reset()
    dry = handlers.vacuum_releases({"dry_run": True})
    assert dry["dry_run"] and dry["kept"] == keep and dry["removed_files"] > 0
    assert {n: _data_files(arch, n) for n in schema.PHYSICAL} == before
    done = handlers.vacuum_releases({})
    assert not done["dry_run"] and done["removed_files"] == dry["removed_files"]
    # files the kept releases read are all there, others went; both answer in full
    for name in schema.PHYSICAL:
        live = set().union(*(_files_at(arch, name, releases.load(arch, n).versions[name])
                             for n in keep if name in releases.load(arch, n).versions))
        assert live <= _data_files(arch, name) <= before[name]
    assert sum(len(before[n] - _data_files(arch, n)) for n in schema.PHYSICAL) == \
        done["removed_files"]
    for n in keep:
        assert _answer(Catalogue(arch, release=n)) == _dids(weeks, releases.load(arch, n))
