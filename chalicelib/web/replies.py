"""What a service answers, framework-free: a Reply, and the one place exceptions become
standard error documents (a DALI VOTable error or SODA/DataLink-style plain text)."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..dali import UsageError
from .load import ServiceBusy

log = logging.getLogger(__name__)


@dataclass
class Reply:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def redirect(cls, url: str, status: int = 303) -> Reply:
        return cls(status, b"", "text/plain", {"Location": url})

    @classmethod
    def text(cls, text: str, status: int = 200) -> Reply:
        return cls(status, text.encode(), "text/plain; charset=utf-8")

    @classmethod
    def xml(cls, body: bytes | str, status: int = 200) -> Reply:
        return cls(status, body, "text/xml; charset=utf-8")



VOTABLE, TEXT = "votable", "text"  # DALI's VOTable error; SODA/DataLink-style plain text


def error_reply(form: str, status: int, message: str) -> Reply:
    if form == VOTABLE:
        from ..render.votable import error_document  # deferred: the writer needs pyarrow

        return Reply(status, error_document(message), "application/x-votable+xml")
    return Reply.text(message + "\n", status)


def guarded(form: str, call: Callable[[], Reply], request_id: str | None = None) -> Reply:
    """Run one request: a caller's mistake (UsageError) is a 400 logged as one line; any
    other exception is a 500 logged once with its traceback under a request id, which the
    caller is given, never the exception's text (it may name paths, buckets, settings)."""
    rid = request_id or uuid.uuid4().hex
    try:
        reply = call()
    except UsageError as e:
        log.info("request %s: usage error: %s", rid, e)
        reply = error_reply(form, 400, f"UsageError: {e}")
    except ServiceBusy as e:
        log.info("request %s: refused (%d): %s", rid, e.status, e)
        word = "ServiceBusy" if e.status == 503 else "TooManyRequests"
        reply = error_reply(form, e.status, f"{word}: {e}")
        reply.headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
    except Exception:  # noqa: BLE001 - the last line of defence of a public endpoint
        log.exception("request %s failed", rid)
        reply = error_reply(form, 500, f"InternalError: the service failed on this request "
                                       f"(request id {rid}); please report it with that id")
    reply.headers.setdefault("X-Request-Id", rid)
    return reply
