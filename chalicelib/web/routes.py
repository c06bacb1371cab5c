"""Routing, framework-free: a service's route table (a dict from the rest of the path to
its handler) and the one translation of Chalice route patterns into regexes, which the
Lambda entry point and the local server both use."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

from .replies import Reply
from .request import Request

# (rest of the path, request) -> Reply
Handler = Callable[[str, Request], Reply]


def dispatch(req: Request, routes: Mapping[str, Handler], not_found: Callable[[str], Reply],
             prefixes: Mapping[str, Handler] | None = None) -> Reply:
    """Answer req by its route table: an exact match of the rest of the path first, then
    its first segment in `prefixes` (async/..., tables/<name>), else not_found(rest)."""
    rest = req.rest
    route = routes.get(rest) or (prefixes or {}).get(rest.split("/", 1)[0])
    return not_found(rest) if route is None else route(rest, req)


# ---- Chalice routes as regexes ------------------------------------------------------------

_PARAM = re.compile(r"\{(\w+)(\+?)\}")
_GREEDY = "__greedy"  # group-name suffix marking a {name+} tail


@lru_cache(maxsize=8)
def route_patterns(routes: tuple[str, ...]) -> list[tuple[str, re.Pattern[str]]]:
    """Chalice routes as regexes, in the order API Gateway prefers them: exact routes
    first, then {name} segments, then greedy {name+} tails (longer first in each)."""
    out = []
    for route in sorted(routes, key=lambda r: ("+}" in r, "{" in r, -len(r))):
        rx = ""
        for part in route.strip("/").split("/"):
            m = _PARAM.fullmatch(part)
            if m and m.group(2):
                rx += f"/(?P<{m.group(1)}{_GREEDY}>.+)"
            elif m:
                rx += f"/(?P<{m.group(1)}>[^/]+)"
            elif part:
                rx += "/" + re.escape(part)
        out.append((route, re.compile((rx or "/") + "/?$")))
    return out


def resolve_route(routes: Iterable[str], path: str,
                  greedy_suffix: str = "") -> tuple[str, dict[str, str]] | None:
    """(Chalice route, path parameters) for a request path, or None. A greedy parameter
    is named `name` + greedy_suffix (API Gateway says 'name'; Chalice's local gateway
    looks it up as 'name+')."""
    for route, rx in route_patterns(tuple(routes)):
        m = rx.match(path or "/")
        if m:
            return route, {k.removesuffix(_GREEDY) + (greedy_suffix if k.endswith(_GREEDY)
                                                      else ""): v
                           for k, v in m.groupdict().items()}
    return None
