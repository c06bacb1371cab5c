"""TAP's routes: /tap/{rest+} -> the resource that answers it."""

from __future__ import annotations

from xml.sax.saxutils import escape

from ...web.replies import Reply
from ...web.request import Request
from ...web.routes import Handler, dispatch
from . import meta as tapmeta
from .asyncjobs import handle_async
from .sync import sync

# rest of the path -> (rest, request) -> Reply; async/... and tables/<name> go by their
# first segment
ROUTES: dict[str, Handler] = {
    "sync": lambda rest, req: sync(req.params, req.base, req.settings),
    "availability": lambda rest, req: tapmeta.availability(),
    "capabilities": lambda rest, req: Reply.xml(tapmeta.capabilities(req.base)),
    "tables": lambda rest, req: Reply.xml(tapmeta.tableset(req.params.get("detail"))),
    "examples": lambda rest, req: Reply(200, tapmeta.examples(req.base),
                                        "application/xhtml+xml"),
}
PREFIXES: dict[str, Handler] = {
    "async": lambda rest, req: handle_async(rest[len("async"):], req),
    "tables": lambda rest, req: _table(rest.split("/", 1)[1]),
}


def _table(name: str) -> Reply:
    xml = tapmeta.table_document(name)
    return Reply.xml(xml) if xml else Reply.text(f"no table {name!r}", 404)


def handle(req: Request) -> Reply:
    return dispatch(req, ROUTES, lambda rest: Reply.text(f"Not found: /tap/{escape(rest)}", 404),
                    PREFIXES)
