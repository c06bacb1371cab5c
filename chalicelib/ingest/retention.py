"""Release retention and vacuum: storage that does not only grow.

Every ingest, merge and compaction adds files; rewrites (tiers, Delta optimize) leave
the files they replaced for readers of older releases. A policy names the releases to
keep: the last N (`RETENTION_KEEP_LAST`), any pinned one (`RETENTION_PINNED`, or named
pins such as a data release: `tables/_pins/<name>.json`, see `pin`), and any release
that was the latest less than `RETENTION_GRACE_SECONDS` ago (a query, a job or a warm
catalogue may still be reading it).

Vacuum then removes, per Delta table, exactly the data files that no kept release can
read: the files live at some version of the log it replays but at none of the kept
versions nor at the table's newest version. Deltalake's own vacuum is time-based (every
file removed before a cut-off), which would break a pinned release years old; so the
live sets come from the Delta log at each kept version. It never deletes:

- a file live at the newest version it read (a concurrent merge replacing it commits a
  version after that one: its readers still get the file);
- a file added by a commit it did not read (a concurrent ingest or merge: unknown, so
  untouched), nor a file no commit names (possibly a writer about to commit);
- the log entries a kept version needs: commits below the checkpoint at or below the
  oldest kept version go, so every kept release still opens (checkpoint plus the JSON
  commits after it, as the catalogue's log reader and deltalake read them).

Also removed: MOC caches and HATS copies (`hats/<release>/`) of releases no longer kept
(never the HATS copy `hats/latest.json` names), and ingest batch markers of released
deliveries. Release files themselves stay (a few hundred bytes each): opening
a vacuumed release fails on its first missing file rather than answering wrongly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import unquote

from ..config import settings
from ..lake import releases, schema
from ..lake.deltalog import CHECKPOINT_INTERVAL, TableLog
from ..lake.storage import Archive
from . import hatscat
from .streaming import STAGING

PINS = "tables/_pins"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0  # 0: keep every release
    pinned: tuple[int, ...] = ()
    grace: float = 3600.0

    @classmethod
    def from_settings(cls) -> Policy:
        s = settings()
        return cls(s.retention_keep_last, s.retention_pinned, s.retention_grace)


# ---- pins: named releases (a data release) --------------------------------------------


def pin(archive: Archive, name: str, release: int) -> None:
    if not _NAME.match(name):
        raise ValueError(f"pin name {name!r}: letters, digits, '.', '_', '-' (up to 64)")
    releases.load(archive, release)  # LookupError if it does not exist
    doc = {"name": name, "release": release,
           "created": datetime.now(UTC).isoformat(timespec="seconds")}
    archive.write_bytes(f"{PINS}/{name}.json", json.dumps(doc).encode())


def unpin(archive: Archive, name: str) -> None:
    archive.delete(f"{PINS}/{name}.json")


def pins(archive: Archive) -> dict[str, int]:
    out = {}
    for key in archive.list(PINS):
        if key.endswith(".json"):
            doc = json.loads(archive.read_bytes(key))
            out[doc["name"]] = int(doc["release"])
    return out


# ---- which releases are kept ------------------------------------------------------------


def kept(archive: Archive, policy: Policy, now: datetime | None = None) -> dict[int, str]:
    """Release number -> why it is kept."""
    now = now or datetime.now(UTC)
    found = releases.numbers(archive)
    if not found:
        return {}
    why: dict[int, str] = {found[-1]: "latest"}
    last = found if policy.keep_last <= 0 else found[-policy.keep_last:]
    for n in last:
        why.setdefault(n, f"one of the last {policy.keep_last or len(found)}")
    for n in policy.pinned:
        if n in found:
            why.setdefault(n, "pinned (RETENTION_PINNED)")
    for name, n in pins(archive).items():
        if n in found:
            why.setdefault(n, f"pinned as {name}")
    # superseded less than `grace` ago: a running query may still read it
    for older, newer in zip(found, found[1:]):
        if older not in why:
            created = releases.load(archive, newer).created
            if created and (now - datetime.fromisoformat(created)).total_seconds() < \
                    policy.grace:
                why[older] = "superseded within the grace period"
    return dict(sorted(why.items()))


# ---- vacuum -------------------------------------------------------------------------------


@dataclass
class TableReport:
    name: str
    newest: int = -1
    kept_versions: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # table-relative paths
    removed_bytes: int = 0
    kept_files: int = 0
    kept_bytes: int = 0
    log_removed: list[str] = field(default_factory=list)


@dataclass
class Report:
    kept: dict[int, str]
    tables: dict[str, TableReport] = field(default_factory=dict)
    other_removed: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def removed_bytes(self) -> int:
        return sum(t.removed_bytes for t in self.tables.values())

    def text(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = ["kept releases: " + ", ".join(f"{n} ({why})" for n, why in
                                                 self.kept.items())]
        for t in self.tables.values():
            lines.append(f"{t.name}: {verb} {len(t.removed)} files "
                         f"({t.removed_bytes / 1e6:.1f} MB) and {len(t.log_removed)} log "
                         f"entries; {t.kept_files} files ({t.kept_bytes / 1e6:.1f} MB) "
                         f"kept for versions {t.kept_versions}")
        lines.append(f"other: {verb} {len(self.other_removed)} objects (MOC caches, "
                     "ingest markers, HATS copies)")
        return "\n".join(lines)


def _log_entries(archive: Archive, name: str) -> tuple[list[int], list[int]]:
    """(JSON commit versions, checkpoint versions) present in the table's log."""
    commits, checkpoints = [], []
    for key in archive.list(f"tables/{name}/_delta_log"):
        base = key.rsplit("/", 1)[1]
        if re.fullmatch(r"\d{20}\.json", base):
            commits.append(int(base[:20]))
        elif re.fullmatch(r"\d{20}\.checkpoint\.parquet", base):
            checkpoints.append(int(base[:20]))
    return sorted(commits), sorted(checkpoints)


def _stored(archive: Archive, name: str) -> set[str]:
    """Data files stored under the table, relative to it (one recursive listing)."""
    root = archive._fs_path(f"tables/{name}")  # noqa: SLF001 - the archive's own layout
    try:
        found = archive.fs.find(root)
    except FileNotFoundError:
        return set()
    root = root.rstrip("/") + "/"
    return {p.removeprefix(root) for p in found if "/_delta_log/" not in p}


def _checkpoint_for(version: int) -> int:
    """The checkpoint a reader of `version` starts from (deltalog.TableLog.open)."""
    return (version + 1) // CHECKPOINT_INTERVAL * CHECKPOINT_INTERVAL - 1


def _vacuum_table(archive: Archive, name: str, versions: set[int], dry_run: bool,
                  delete: Callable[[str], None]) -> TableReport | None:
    commits, checkpoints = _log_entries(archive, name)
    if not commits:
        return None
    newest = commits[-1]
    report = TableReport(name, newest, sorted(v for v in versions if v <= newest))
    wanted = set(report.kept_versions) | {newest}
    # replay once from the oldest state the log still holds, noting every file seen
    log = TableLog(archive, name)
    first = commits[0]
    if first > 0:
        log._checkpoint(first - 1)  # noqa: SLF001 - same package family, one replay
        log.version = first - 1
    seen: dict[str, int] = {p: f.size for p, f in log.files.items()}
    needed: set[str] = set()
    if log.version in wanted:
        needed |= set(log.files)
    for v in range(first, newest + 1):
        log.advance(v)
        seen.update((p, f.size) for p, f in log.files.items())
        if v in wanted:
            needed |= set(log.files)
    present = _stored(archive, name)  # one listing: what an earlier vacuum left
    report.removed = sorted(p for p in set(seen) - needed if unquote(p) in present)
    report.removed_bytes = sum(seen[p] for p in report.removed)
    report.kept_files = len(needed)
    report.kept_bytes = sum(seen[p] for p in needed)
    # the log: everything below the checkpoint the oldest kept version starts from
    cut = _checkpoint_for(min(wanted))
    if cut >= 0 and cut in checkpoints:
        report.log_removed = [f"{v:020d}.json" for v in commits if v <= cut] + \
            [f"{v:020d}.checkpoint.parquet" for v in checkpoints if v < cut]
    if not dry_run:
        for path in report.removed:
            delete(f"tables/{name}/{unquote(path)}")
        for entry in report.log_removed:  # after the files: a crash leaves a longer log
            delete(f"tables/{name}/_delta_log/{entry}")
    return report


def vacuum(archive: Archive, policy: Policy | None = None, dry_run: bool = False,
           now: datetime | None = None) -> Report:
    """Remove what no kept release can read (see the module text)."""
    policy = policy or Policy.from_settings()
    keep = kept(archive, policy, now)
    report = Report(keep, dry_run=dry_run)
    if not keep:
        return report
    loaded = {n: releases.load(archive, n) for n in keep}
    for name in schema.PHYSICAL:
        versions = {rel.versions[name] for rel in loaded.values() if name in rel.versions}
        t = _vacuum_table(archive, name, versions, dry_run, archive.delete)
        if t is not None:
            report.tables[name] = t
    # MOC caches of releases not kept; markers of deliveries already released
    for coll in archive.list("moc"):
        for key in archive.list(coll):
            m = re.search(r"/_r(\d{8})\.fits$", key)
            if m and int(m.group(1)) not in keep:
                report.other_removed.append(key)
    report.other_removed += _stale_hats(archive, keep)
    latest = loaded[max(loaded)]
    for key in archive.list(STAGING):
        if key.rsplit("/", 1)[1] in latest.runs:
            report.other_removed.append(key)
    if not dry_run:
        for key in report.other_removed:
            archive.delete(key)
    return report


def _stale_hats(archive: Archive, keep: dict[int, str]) -> list[str]:
    """HATS copies (hats/<release>/, a whole ObsCore per merge) of releases no longer
    kept, never the one hats/latest.json names (LSDB users read that one)."""
    published = (hatscat.latest(archive) or {}).get("release")
    out = []
    for key in archive.list(hatscat.PREFIX):
        m = re.fullmatch(rf"{hatscat.PREFIX}/(\d{{8}})", key)
        if m and int(m.group(1)) not in keep and int(m.group(1)) != published:
            out.append(key)
    return out


def storage_bytes(archive: Archive, prefix: str = "tables") -> int:
    """Bytes stored under prefix (what vacuum saves shows here)."""
    root = archive._fs_path(prefix)  # noqa: SLF001 - the archive's own layout
    try:
        return int(sum(archive.fs.du(root, total=False).values()))
    except FileNotFoundError:
        return 0
