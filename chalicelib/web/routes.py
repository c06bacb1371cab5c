"""Routing, framework-free: a service's route table (a dict from the rest of the path to
its handler) and the one translation of Chalice route patterns into regexes, which the
Lambda entry point and the local server both use."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
