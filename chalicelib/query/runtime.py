"""Process-wide state of a server or Lambda container: the archive and its catalogues.

Kept warm between requests: a catalogue reopens only when a new release appears.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .. import config
from ..lake.current import archive
from .catalogue import Catalogue

_lock = threading.Lock()
# Catalogues per public base URL (their access_url values point there). Bases come from
# configuration, so there are one or two (a custom domain and execute-api); bounded anyway.
_catalogues: OrderedDict[tuple[str, int | None], list[Catalogue]] = OrderedDict()
MAX_CATALOGUES = 4
# A catalogue runs one query at a time on its DuckDB connection (whose Parquet metadata
# cache cursors do not share), so a slow query would hold up every cone of the process:
# a request gets an idle catalogue, a new one while fewer than LANES exist, else the
# least busy. A Lambda container serves one request at a time and uses the first only.
# bench load's isolation run: with 3, four slow clients took every lane and cones waited
# up to 2.9 s (p99); with 6 they never waited (p99 219 ms while the slow ones ran).
LANES = 6


def catalogue(base_url: str) -> Catalogue:
    """An idle catalogue serving `base_url` (its access_url values point there)."""
    pinned = config.settings().archive_release
    key = (base_url, pinned)
    with _lock:
        lanes = _catalogues.setdefault(key, [])
        _catalogues.move_to_end(key)
        while len(_catalogues) > MAX_CATALOGUES:
            _catalogues.popitem(last=False)
        idle = next((c for c in lanes if not c.active), None)
        if idle is None and len(lanes) < LANES:
            idle = Catalogue(archive(), pinned, base_url)
            lanes.append(idle)
        return idle or min(lanes, key=lambda c: c.active)


def reset() -> None:
    """Forget cached state and settings (tests switch archives with ARCHIVE_URL)."""
    config.reset()
    archive.cache_clear()
    with _lock:
        _catalogues.clear()

