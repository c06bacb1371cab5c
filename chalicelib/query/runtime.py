"""Process-wide state of a server or Lambda container: the archive and its catalogues.

Kept warm between requests: a catalogue reopens only when a new release appears.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from ..lake.current import archive
from .catalogue import Catalogue

_lock = threading.Lock()
# A catalogue per public base URL (its access_url values point there). Bases come from
# configuration, so there are one or two (a custom domain and execute-api); bounded anyway.
_catalogues: OrderedDict[tuple[str, str], Catalogue] = OrderedDict()
MAX_CATALOGUES = 4


def catalogue(base_url: str) -> Catalogue:
    """The catalogue serving `base_url` (its access_url values point there)."""
    pinned = os.environ.get("ARCHIVE_RELEASE")
    key = (base_url, pinned or "")
    with _lock:
        if key not in _catalogues:
            _catalogues[key] = Catalogue(archive(), int(pinned) if pinned else None, base_url)
            while len(_catalogues) > MAX_CATALOGUES:
                _catalogues.popitem(last=False)
        _catalogues.move_to_end(key)
        return _catalogues[key]


def reset() -> None:
    """Forget cached state (tests switch archives with ARCHIVE_URL)."""
    archive.cache_clear()
    with _lock:
        _catalogues.clear()


_last_base = {"url": "http://127.0.0.1:8000"}


def remember_base(base: str) -> None:
    """Called per request: workers without a request use the URL callers last used."""
    _last_base["url"] = base


def public_base() -> str:
    return os.environ.get("PUBLIC_URL", "").rstrip("/") or _last_base["url"]
