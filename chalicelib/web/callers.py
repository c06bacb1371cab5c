"""Callers: who owns a job. The identity API Gateway vouches for, else an owner token
the caller holds (a cookie minted with its first job, or X-Owner-Token)."""

from __future__ import annotations

import hashlib
import re
import secrets
from http.cookies import SimpleCookie

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
    from ..jobs.uws.service import ANONYMOUS  # deferred: UWS (~15 ms cold); token holders

    return ANONYMOUS + hashlib.sha256(token.encode()).hexdigest()[:32]


def new_owner_token() -> str:
    return secrets.token_urlsafe(24)


def owner_cookie(token: str, base: str) -> str:
    secure = "; Secure" if base.startswith("https://") else ""
    return (f"{OWNER_COOKIE}={token}; Path=/; Max-Age=31536000; HttpOnly; "
            f"SameSite=Lax{secure}")
