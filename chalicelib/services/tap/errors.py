"""TAP's error type and limits, shared by sync, async, uploads and the VOSI metadata."""

from __future__ import annotations

import os

from ...dali import UsageError

SYNC_TIMEOUT = float(os.environ.get("TAP_SYNC_TIMEOUT", "25"))  # API Gateway allows 29 s
ASYNC_TIMEOUT = float(os.environ.get("TAP_ASYNC_TIMEOUT", "600"))
DEFAULT_MAXREC = int(os.environ.get("TAP_DEFAULT_MAXREC", "100000"))
HARD_MAXREC = int(os.environ.get("TAP_HARD_MAXREC", "5000000"))
UPLOAD_LIMIT = 20 << 20  # bytes per request
LANGS = {"ADQL", "ADQL-2.0", "ADQL-2.1"}


class TapUsageError(UsageError):
    """The caller's mistake: answered with a VOTable error and a 400."""
