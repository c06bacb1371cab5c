"""TAP's routes: /tap/{rest+} -> the resource that answers it."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from ...web.replies import Reply
from ...web.request import Request
from ...web.routes import Handler, dispatch

# The resources load their modules on first use: VOSI availability (a health check, often
# the first call of a container) then answers without importing pyarrow, DuckDB or numpy.


def _meta() -> Any:
    from . import meta  # deferred: cold start (pyarrow, sqlglot)

    return meta


def _sync(rest: str, req: Request) -> Reply:
    from .sync import sync  # deferred: cold start (the query stack)

    return sync(req.params, req.base, req.settings)


def _async(rest: str, req: Request) -> Reply:
    from .asyncjobs import handle_async  # deferred: cold start (the query stack)

    return handle_async(rest[len("async"):], req)


def _availability(rest: str, req: Request) -> Reply:
    from .availability import availability  # deferred: keeps this module light

    return availability()


# rest of the path -> (rest, request) -> Reply; async/... and tables/<name> go by their
# first segment
ROUTES: dict[str, Handler] = {
    "sync": _sync,
    "availability": _availability,
    "capabilities": lambda rest, req: Reply.xml(_meta().capabilities(req.base)),
    "tables": lambda rest, req: Reply.xml(_meta().tableset(req.params.get("detail"))),
    "examples": lambda rest, req: Reply(200, _meta().examples(req.base),
                                        "application/xhtml+xml"),
}
PREFIXES: dict[str, Handler] = {
    "async": _async,
    "tables": lambda rest, req: _table(rest.split("/", 1)[1]),
}


def _table(name: str) -> Reply:
    xml = _meta().table_document(name)
    return Reply.xml(xml) if xml else Reply.text(f"no table {name!r}", 404)


def handle(req: Request) -> Reply:
    return dispatch(req, ROUTES, lambda rest: Reply.text(f"Not found: /tap/{escape(rest)}", 404),
                    PREFIXES)
