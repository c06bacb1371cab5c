"""The archive this process serves ($ARCHIVE_URL), opened once and kept warm."""

from __future__ import annotations

from functools import lru_cache

from .storage import Archive


@lru_cache(maxsize=1)
def archive() -> Archive:
    return Archive.from_env()
