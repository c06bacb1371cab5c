"""HTTP plumbing shared by every service: parameters and replies, framework-free.

DALI rules live here once: parameter names are case-insensitive, GET and POST (form or
multipart) alike, a repeated parameter gives several values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from urllib.parse import parse_qsl


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
        name = headers.get_param("name", header="content-disposition")
        if not name:
            continue
        filename = headers.get_param("filename", header="content-disposition")
        if filename is not None:
            files[name] = Upload(filename, data, headers.get_content_type())
        else:
            pairs.append((name, data.decode("utf-8", "replace")))
    return pairs, files


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


def base_url(headers: dict[str, str], stage: str | None = None) -> str:
    """The public base URL of the API: $PUBLIC_URL, else the Host the caller used
    (plus the API Gateway stage when called on an execute-api host)."""
    if os.environ.get("PUBLIC_URL"):
        return os.environ["PUBLIC_URL"].rstrip("/")
    h = {k.lower(): v for k, v in (headers or {}).items()}
    host = h.get("x-forwarded-host") or h.get("host") or "127.0.0.1:8000"
    proto = h.get("x-forwarded-proto") or ("https" if "amazonaws.com" in host else "http")
    prefix = f"/{stage}" if stage and "execute-api" in host else ""
    return f"{proto}://{host}{prefix}"
