"""Object names through a Sesame name resolver (CDS), when one is configured (SESAME_URL).

Sesame answers XML (`-ox` output; the `-oxp` form adds plain text inside the same tags):
a <Target> holds one <Resolver> per database asked (SIMBAD, NED, VizieR, in the order of
the URL's letters), each with <jradeg>/<jdedeg> (ICRS J2000 degrees) and <oname>/<otype>
when the name was found, or <INFO>*** Nothing found ***</INFO> when it was not.

The fetch goes through the guarded outbound client (chalicelib.outbound): a resolver on
a private address (a local mirror) must be allowed with OUTBOUND_ALLOW like any other.
Answers are kept per process (found and not found alike; failures are not kept).
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote

from ..config import settings

MAX_BYTES = 256 << 10
CACHE_SIZE = 512


class Unreachable(Exception):
    """The resolver could not be asked or its answer could not be read."""


@dataclass(frozen=True)
class Resolved:
    ra: float
    dec: float
    oname: str  # the database's main name, e.g. 'M  31'
    otype: str
    resolver: str  # e.g. 'S=Simbad (via url)'


_cache: OrderedDict[tuple[str, str], Resolved | None] = OrderedDict()
_lock = threading.Lock()


def configured() -> bool:
    return bool(settings().sesame_url)


def query_url(base: str, name: str) -> str:
    q = quote(" ".join(name.split()), safe="")
    return base.replace("{name}", q) if "{name}" in base else f"{base}?{q}"


def parse(xml: bytes) -> Resolved | None:
    """The first resolver's position in a Sesame XML answer, or None (nothing found)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise Unreachable(f"the answer is not Sesame XML ({e})") from None
    if root.tag != "Sesame":
        raise Unreachable(f"the answer is not Sesame XML (root <{root.tag}>)")
    for resolver in root.iter("Resolver"):
        ra, dec = resolver.findtext("jradeg"), resolver.findtext("jdedeg")
        if ra and dec:
            try:
                return Resolved(float(ra), float(dec), " ".join(
                    (resolver.findtext("oname") or "").split()),
                    (resolver.findtext("otype") or "").strip(),
                    (resolver.get("name") or "").split(":")[0].strip())
            except ValueError:
                continue
    return None


def resolve(name: str) -> Resolved | None:
    """The position Sesame gives the name (None: not found). Raises Unreachable."""
    base = settings().sesame_url
    if not base:
        raise Unreachable("no resolver is configured")
    key = (base, " ".join(name.upper().split()))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    from .. import outbound  # deferred: urllib3 only when a name goes out

    try:
        body = outbound.fetch(query_url(base, name), MAX_BYTES)
    except outbound.OutboundError:
        raise Unreachable("the resolver did not answer") from None
    found = parse(body)
    with _lock:
        _cache[key] = found
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return found


def clear_cache() -> None:
    with _lock:
        _cache.clear()
