"""HTTP plumbing shared by every service: parameters and replies, framework-free.

DALI rules live here once: parameter names are case-insensitive, GET and POST (form or
multipart) alike, a repeated parameter gives several values.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import collapse_rfc2231_value
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl

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


def base_url(headers: dict[str, str], context: dict | None = None) -> str:
    """The public base URL of the API, never taken from what a client sends: $PUBLIC_URL;
    on AWS the API's own domain (requestContext.domainName, plus the stage on an
    execute-api host); locally the address the server is bound to, which the local server
    writes into Host. X-Forwarded-* count only behind a proxy the operator declared
    ($TRUSTED_PROXY=1)."""
    if os.environ.get("PUBLIC_URL"):
        return os.environ["PUBLIC_URL"].rstrip("/")
    h = {k.lower(): v for k, v in (headers or {}).items()}
    ctx = context or {}
    if os.environ.get("TRUSTED_PROXY") == "1" and h.get("x-forwarded-host"):
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
_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)


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


def current_caller() -> str | None:
    """The owner identity of the request being served (set by serving)."""
    return _caller.get()


# ---- errors: the one place exceptions become standard error documents -------------------

VOTABLE, TEXT = "votable", "text"  # DALI's VOTable error; SODA/DataLink-style plain text


def error_reply(form: str, status: int, message: str) -> Reply:
    if form == VOTABLE:
        from ..render.votable import error_document  # deferred: the writer needs pyarrow

        return Reply(status, error_document(message), "application/x-votable+xml")
    return Reply.text(message + "\n", status)


def guarded(form: str, call: Callable[[], Reply], request_id: str | None = None,
            caller: str | None = None) -> Reply:
    """Run one request: a caller's mistake (UsageError) is a 400 logged as one line; any
    other exception is a 500 logged once with its traceback under a request id, which the
    caller is given, never the exception's text (it may name paths, buckets, settings)."""
    rid = request_id or uuid.uuid4().hex
    token = _caller.set(caller)
    try:
        reply = call()
    except UsageError as e:
        log.info("request %s: usage error: %s", rid, e)
        reply = error_reply(form, 400, f"UsageError: {e}")
    except Exception:  # noqa: BLE001 - the last line of defence of a public endpoint
        log.exception("request %s failed", rid)
        reply = error_reply(form, 500, f"InternalError: the service failed on this request "
                                       f"(request id {rid}); please report it with that id")
    finally:
        _caller.reset(token)
    reply.headers.setdefault("X-Request-Id", rid)
    return reply
