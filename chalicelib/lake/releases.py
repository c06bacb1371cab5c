"""The archive's commit log: which ingest runs are visible, as numbered releases.

Delta Lake commits one table at a time, but a delivery touches five tables. Every row
carries the id of the ingest run that wrote it; a delivery becomes visible, in all tables
at once, when a release file naming that run is created with a conditional write
(If-None-Match on S3). Rows of a killed or losing run are never named, so never seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .storage import Archive, PreconditionFailed

PREFIX = "tables/_releases"
# A copy of the newest release, rewritten after each commit: a new reader's first
# request (one GET instead of LISTing the folder and then GETting the newest). Only a
# hint: a writer that crashed or was overtaken between its commit and this write leaves
# it one release behind, and readers check for `number + 1` within their TTL anyway.
POINTER = f"{PREFIX}/LATEST"


@dataclass(frozen=True)
class Release:
    number: int
    runs: dict[str, str] = field(default_factory=dict)  # delivery -> ingest run id
    versions: dict[str, int] = field(default_factory=dict)  # Delta table -> version
    created: str = ""

    @property
    def deliveries(self) -> list[str]:
        return sorted(self.runs)

    def to_json(self) -> bytes:
        return json.dumps({"release": self.number, "runs": self.runs,
                           "versions": self.versions, "created": self.created},
                          indent=1).encode()


def _key(n: int) -> str:
    return f"{PREFIX}/{n:08d}.json"


def numbers(archive: Archive) -> list[int]:
    return sorted(int(k.rsplit("/", 1)[1][:8]) for k in archive.list(PREFIX)
                  if k.endswith(".json"))


def newest(archive: Archive, known: int = 0) -> int:
    """The latest release number, given one known to exist: releases are numbered one
    after another (commit creates latest + 1), so while `known + 1` is absent `known` is
    still the latest. One existence check (one HEAD on S3, no LIST) instead of listing
    the folder; listed only when something new appeared (or nothing is known yet)."""
    if known > 0 and not archive.object_exists(_key(known + 1)):
        return known
    return max([known, *numbers(archive)])


def _parse(data: bytes) -> Release:
    doc = json.loads(data)
    return Release(doc["release"], doc["runs"], doc["versions"], doc["created"])


def latest(archive: Archive) -> Release:
    """The newest release as the pointer names it, in one GET; listed when there is no
    pointer (an archive committed before it existed) or it cannot be read."""
    try:
        return _parse(archive.read_bytes(POINTER))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return load(archive)


def load(archive: Archive, number: int | None = None) -> Release:
    """A release (default: the latest); release 0 is the empty archive."""
    if number is None:
        found = numbers(archive)
        number = found[-1] if found else 0
    if number == 0:
        return Release(0)
    try:
        return _parse(archive.read_bytes(_key(number)))
    except FileNotFoundError:
        raise LookupError(f"release {number} does not exist") from None


def commit(archive: Archive, change, attempts: int = 50) -> Release:
    """Create the next release from the latest one with `change(latest) -> Release|None`
    (None: nothing to do). Retries when a concurrent writer took the number."""
    for _ in range(attempts):
        last = load(archive)
        new = change(last)
        if new is None:
            return last
        new = Release(last.number + 1, new.runs, new.versions,
                      datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            archive.create_exclusive(_key(new.number), new.to_json())
        except PreconditionFailed:
            continue
        try:
            archive.replace_bytes(POINTER, new.to_json())
        except OSError:  # the release is committed; readers list without the pointer
            pass
        return new
    raise RuntimeError("could not commit a release: too many concurrent writers")
