"""The public base URL of the API, which every link a service writes starts with."""

from __future__ import annotations

from ..config import Settings, settings


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
