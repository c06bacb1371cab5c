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
# A catalogue per public base URL (its access_url values point there). Bases come from
# configuration, so there are one or two (a custom domain and execute-api); bounded anyway.
_catalogues: OrderedDict[tuple[str, int | None], Catalogue] = OrderedDict()
MAX_CATALOGUES = 4


def catalogue(base_url: str) -> Catalogue:
    """The catalogue serving `base_url` (its access_url values point there)."""
    pinned = config.settings().archive_release
    key = (base_url, pinned)
    with _lock:
        if key not in _catalogues:
            _catalogues[key] = Catalogue(archive(), pinned, base_url)
            while len(_catalogues) > MAX_CATALOGUES:
                _catalogues.popitem(last=False)
        _catalogues.move_to_end(key)
        return _catalogues[key]


def reset() -> None:
    """Forget cached state and settings (tests switch archives with ARCHIVE_URL)."""
    config.reset()
    archive.cache_clear()
    with _lock:
        _catalogues.clear()

