"""Request parameters, framework-free: DALI rules live here once.

Parameter names are case-insensitive, GET and POST (form or multipart) alike, a repeated
parameter gives several values; MAXREC is parsed the one DALI way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from email.message import Message


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
    def from_dict(cls, values: dict[str, list[str]] | None) -> Params:
        """Parameters from name -> values (a query string's, or a stored job's)."""
        return cls([(k, v) for k, vs in (values or {}).items() for v in vs])

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
    from email.message import Message  # deferred: ~10 ms of every cold start; uploads only
    from email.parser import BytesHeaderParser  # deferred: with the line above

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
    from email.utils import collapse_rfc2231_value  # deferred: with _multipart

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
