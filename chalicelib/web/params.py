"""HTTP plumbing shared by every service: parameters and replies, framework-free.

DALI rules live here once: parameter names are case-insensitive, GET and POST (form or
multipart) alike, a repeated parameter gives several values.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import collapse_rfc2231_value
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl

from ..config import Settings, settings
from ..dali import UsageError
from ..jobs.uws.service import ANONYMOUS

log = logging.getLogger(__name__)


@dataclass
class Upload:
    filename: str | None
    content: bytes
    content_type: str | None = None


class Params:
    """Case-insensitive multi-valued parameters; uploaded files kept apart by name."""

    def __init__(self, pairs: list[tuple[str, str]] = (),
                 files: dict[str, Upload] | None = None):
        self._values: dict[str, list[str]] = {}
        for k, v in pairs:
            self._values.setdefault(k.lower(), []).append(v)
        self.files = files or {}

    def get(self, name: str, default: str | None = None) -> str | None:
        vals = self._values.get(name.lower())
        return vals[-1] if vals else default

    def getall(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), []))

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._values

    def items(self) -> list[tuple[str, list[str]]]:
        return list(self._values.items())

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._values.items()}

    @classmethod
    def parse(cls, query: dict[str, list[str]] | None, body: bytes | None,
              content_type: str | None) -> Params:
        pairs = [(k, v) for k, vs in (query or {}).items() for v in vs]
        files: dict[str, Upload] = {}
        ctype = (content_type or "").lower()
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        elif body and ctype.startswith("multipart/form-data"):
            more, files = _multipart(body, content_type)
            pairs += more
        return cls(pairs, files)


def _multipart(body: bytes, content_type: str) -> tuple[list[tuple[str, str]], dict]:
    """Split a multipart/form-data body. Done by hand: the email parser gives up on
    boundaries like STILTS' quoted '<<<---...--->>>'."""
    msg = Message()
    msg["content-type"] = content_type
    boundary = msg.get_param("boundary")
    if not boundary:
        return [], {}
    pairs, files = [], {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, sep, data = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            head, sep, data = chunk.lstrip(b"\n").partition(b"\n\n")
        headers = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        data = data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")
        name = _disposition(headers, "name")
        if not name:
            continue
        filename = _disposition(headers, "filename")
        if filename is not None:
            files[name] = Upload(filename, data, headers.get_content_type())
        else:
            pairs.append((name, data.decode("utf-8", "replace")))
    return pairs, files


def _disposition(headers: Message, param: str) -> str | None:
    """A Content-Disposition parameter as text; RFC 2231 forms (name*=UTF-8''...) come
    back from the email parser as (charset, language, value) tuples."""
    value = headers.get_param(param, header="content-disposition")
    return None if value is None else collapse_rfc2231_value(value)


def parse_maxrec(params: Params, default: int, hard: int, error: type[Exception]) -> int:
    """DALI MAXREC: absent -> the service default; a non-negative integer, capped at the
    hard limit; anything else raises `error` (each service's usage error)."""
    raw = params.get("MAXREC")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise error(f"MAXREC must be a non-negative integer, not {raw!r}")
    return min(value, hard)


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


def base_url(headers: dict[str, str], context: dict | None = None,
             conf: Settings | None = None) -> str:
    """The public base URL of the API, never taken from what a client sends: $PUBLIC_URL;
    on AWS the API's own domain (requestContext.domainName, plus the stage on an
    execute-api host); locally the address the server is bound to, which the local server
    writes into Host. X-Forwarded-* count only behind a proxy the operator declared
    ($TRUSTED_PROXY=1)."""
    conf = conf or settings()
    if conf.public_url:
        return conf.public_url
    h = {k.lower(): v for k, v in (headers or {}).items()}
    ctx = context or {}
    if conf.trusted_proxy and h.get("x-forwarded-host"):
        return f"{h.get('x-forwarded-proto') or 'https'}://{h['x-forwarded-host']}"
    domain = ctx.get("domainName")
    if domain:
        stage = ctx.get("stage")
        return f"https://{domain}" + (f"/{stage}" if stage and "execute-api" in domain else "")
    return f"http://{h.get('host') or '127.0.0.1:8000'}"


# ---- callers: who owns a job ------------------------------------------------------------

OWNER_COOKIE = "uws_owner"
OWNER_HEADER = "x-owner-token"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")


def identify(headers: dict[str, str], context: dict | None = None) -> str | None:
    """The caller as a job owner: the identity API Gateway vouches for (Cognito, a custom
    authorizer, IAM, an API key), else the hash of an owner token the caller holds (the
    cookie minted with its first job, or X-Owner-Token), else None."""
    ctx = context or {}
    auth, ident = ctx.get("authorizer") or {}, ctx.get("identity") or {}
    for kind, value in (("cognito", (auth.get("claims") or {}).get("sub")),
                        ("authorizer", auth.get("principalId")),
                        ("iam", ident.get("userArn")),
                        ("cognito-identity", ident.get("cognitoIdentityId")),
                        ("apikey", ident.get("apiKeyId"))):
        if value:
            return f"{kind}:{value}"
    h = {k.lower(): v for k, v in (headers or {}).items()}
    token = h.get(OWNER_HEADER)
    if token is None and h.get("cookie"):
        morsel = SimpleCookie(h["cookie"]).get(OWNER_COOKIE)
        token = morsel.value if morsel else None
    return anonymous_owner(token) if token and _TOKEN.match(token) else None


def anonymous_owner(token: str) -> str:
    """Stored owners are hashes: a leaked job record does not give away the token."""
    return ANONYMOUS + hashlib.sha256(token.encode()).hexdigest()[:32]


def new_owner_token() -> str:
    return secrets.token_urlsafe(24)


def owner_cookie(token: str, base: str) -> str:
    secure = "; Secure" if base.startswith("https://") else ""
    return (f"{OWNER_COOKIE}={token}; Path=/; Max-Age=31536000; HttpOnly; "
            f"SameSite=Lax{secure}")


# ---- load: per-caller rate limits and refusals when full ----------------------------------

class ServiceBusy(Exception):
    """Our capacity, not the caller's mistake: 503 with Retry-After (429 when the caller
    went over its own rate)."""

    def __init__(self, message: str, retry_after: float, status: int = 503):
        super().__init__(message)
        self.retry_after, self.status = retry_after, status


# Synchronous queries run at once per process (settings().sync_slots), beyond which callers
# are refused (503 and Retry-After) rather than queued until their time limit.
SYNC_WAIT_S = 2.0
_slots_lock = threading.Lock()
_sync_slots: threading.BoundedSemaphore | None = None  # made on first use


def _slots() -> threading.BoundedSemaphore:
    global _sync_slots
    with _slots_lock:
        if _sync_slots is None:
            _sync_slots = threading.BoundedSemaphore(settings().sync_slots)
        return _sync_slots


@contextlib.contextmanager
def sync_slot(wait: float = SYNC_WAIT_S) -> Iterator[None]:
    """Hold one of the process's synchronous query slots, or raise ServiceBusy."""
    slots = _slots()
    if not slots.acquire(timeout=wait):
        raise ServiceBusy(f"all {settings().sync_slots} synchronous query slots are busy; "
                          f"retry shortly, or submit the query as an asynchronous job", 5.0)
    try:
        yield
    finally:
        slots.release()


def rate_limiter(conf: Settings | None = None) -> RateLimiter | None:
    """The process's limiter: RATE_LIMIT requests a second per caller (bursts of
    RATE_BURST); 0 turns it off. One per pair of values, kept between requests. On AWS,
    API Gateway's stage throttling and usage plans limit first."""
    conf = conf or settings()
    return _limiter(conf.rate_limit, conf.rate_burst) if conf.rate_limit > 0 else None


@functools.cache
def _limiter(rate: float, burst: float) -> RateLimiter:
    return RateLimiter(rate, burst)


class RateLimiter:
    """A token bucket per caller: `rate` requests a second on average, bursts of `burst`.
    At most `max_callers` buckets are kept (the least recently seen are forgotten: a
    forgotten caller starts with a full bucket, which only errs on the generous side)."""

    def __init__(self, rate: float, burst: float, max_callers: int = 10_000):
        self.rate, self.burst, self.max_callers = rate, burst, max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, caller: str, now: float | None = None) -> None:
        """Take one token for `caller`, or raise ServiceBusy(429) saying when to retry."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            admitted = tokens >= 1.0
            self._buckets[caller] = (tokens - 1.0 if admitted else tokens, now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        if not admitted:
            wait = (1.0 - tokens) / self.rate
            raise ServiceBusy(f"too many requests from this client: at most {self.rate:g} a "
                              f"second (bursts of {self.burst:g}); retry in {wait:.1f} s",
                              wait, 429)


def client_key(headers: dict[str, str], context: dict | None, caller: str | None) -> str:
    """Who a rate limit counts against: the caller's identity, else its address (API
    Gateway's sourceIp; the local server's X-Client-Address, which it sets itself)."""
    if caller:
        return caller
    h = {k.lower(): v for k, v in (headers or {}).items()}
    ip = ((context or {}).get("identity") or {}).get("sourceIp")
    local = h.get("x-client-address")
    return "ip:" + str(local if local and ip in (None, "127.0.0.1") else ip)


# ---- errors: the one place exceptions become standard error documents -------------------

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
