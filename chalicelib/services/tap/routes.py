"""TAP's routes: /tap/{rest+} -> the resource that answers it."""

from __future__ import annotations

from collections.abc import Callable
from xml.sax.saxutils import escape

from ...web.params import Params, Reply
from . import meta as tapmeta
from .asyncjobs import handle_async
from .sync import sync

# rest of the path -> (method, params, base) -> Reply; async/... and tables/<name> go by
# their first segment
ROUTES: dict[str, Callable[[str, str, Params, str], Reply]] = {
    "sync": lambda rest, method, params, base: sync(params, base),
    "availability": lambda rest, method, params, base: tapmeta.availability(),
    "capabilities": lambda rest, method, params, base: Reply.xml(tapmeta.capabilities(base)),
    "tables": lambda rest, method, params, base: Reply.xml(
        tapmeta.tableset(params.get("detail"))),
    "examples": lambda rest, method, params, base: Reply(200, tapmeta.examples(base),
                                                         "application/xhtml+xml"),
}
PREFIXES: dict[str, Callable[[str, str, Params, str], Reply]] = {
    "async": lambda rest, method, params, base: handle_async(rest[len("async"):], method,
                                                             params, base),
    "tables": lambda rest, method, params, base: _table(rest.split("/", 1)[1]),
}


def _table(name: str) -> Reply:
    xml = tapmeta.table_document(name)
    return Reply.xml(xml) if xml else Reply.text(f"no table {name!r}", 404)


def handle(rest: str, method: str, params: Params, base: str) -> Reply:
    rest = rest.strip("/")
    route = ROUTES.get(rest) or PREFIXES.get(rest.split("/", 1)[0])
    if route is None:
        return Reply.text(f"Not found: /tap/{escape(rest)}", 404)
    return route(rest, method, params, base)
