"""TAP's error type and fixed limits, shared by sync, async, uploads and the VOSI
metadata (the configurable ones, timeouts and MAXREC, are in chalicelib.config)."""

from __future__ import annotations

from ...dali import UsageError

UPLOAD_LIMIT = 20 << 20  # bytes per request
LANGS = {"ADQL", "ADQL-2.0", "ADQL-2.1"}


class TapUsageError(UsageError):
    """The caller's mistake: answered with a VOTable error and a 400."""
