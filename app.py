"""The HTTP API: routes only. Protocol logic lives in chalicelib and is tested there."""

from __future__ import annotations

from collections.abc import Callable

from chalice import Chalice, Response

from chalicelib.config import settings
from chalicelib.services import landing, portal
from chalicelib.web.callers import identify
from chalicelib.web.load import client_key, rate_limiter
from chalicelib.web.params import Params
from chalicelib.web.replies import TEXT, VOTABLE, Reply, guarded
from chalicelib.web.request import Request
from chalicelib.web.urls import base_url

app = Chalice(app_name="spherex-archive")
app.api.binary_types.extend([
    "application/fits", "application/gzip", "application/x-gzip", "image/png",
    "application/octet-stream", "application/vnd.apache.parquet", "multipart/form-data",
])
ANY = ["GET", "POST"]
# DALI: POST is a form (urlencoded or multipart for uploads); Chalice accepts JSON only
# unless told otherwise
FORMS = ["application/x-www-form-urlencoded", "multipart/form-data", "application/json",
         "text/plain", "application/octet-stream"]


def _greedy(name: str = "rest") -> str:
    """A greedy {name+} path parameter. Chalice does not pass these to the view; API
    Gateway names it 'name', the local server 'name+'."""
    params = app.current_request.uri_params or {}
    return params.get(name) or params.get(name + "+") or ""


def _serve(form: str, view: Callable[[Request], Reply], **path: str) -> Response:
    """Every route goes through here: the request becomes a web.request.Request (its
    caller, base URL and the settings), a caller over its rate gets a 429, and errors
    become the route's standard error form."""
    req = app.current_request
    context, headers = req.context or {}, dict(req.headers)
    conf = settings()
    caller = identify(headers, context)

    def run() -> Reply:
        limiter = rate_limiter(conf)
        if limiter is not None:
            limiter.admit(client_key(headers, context, caller))
        query = {k: req.query_params.getlist(k) for k in req.query_params or {}}
        params = Params.parse(query, req.raw_body, headers.get("content-type"))
        base = base_url(headers, context, conf)
        return view(Request(req.method, params, base, path, caller,
                            context.get("requestId"), conf))

    reply = guarded(form, run, context.get("requestId"))
    headers = {"Content-Type": reply.content_type, **reply.headers}
    return Response(body=reply.body, status_code=reply.status, headers=headers)


@app.route("/", methods=["GET"])
def index():
    def page(r: Request) -> Reply:
        from chalicelib.query import runtime  # deferred: availability need not load DuckDB

        rel = runtime.catalogue(r.base).release
        return Reply(200, portal.page(r.base, rel.number, rel.deliveries),
                     "text/html; charset=utf-8")
    return _serve(TEXT, page)


@app.route("/about", methods=["GET"])
def about():
    def page(r: Request) -> Reply:
        from chalicelib.query import runtime  # deferred: availability need not load DuckDB

        rel = runtime.catalogue(r.base).release
        return Reply(200, landing.page(r.base, rel.number, rel.deliveries),
                     "text/html; charset=utf-8")
    return _serve(TEXT, page)


@app.route("/portal/{rest+}", methods=["GET", "POST"], content_types=FORMS)
def portal_files():
    return _serve(TEXT, portal.handle, rest=_greedy())


@app.route("/tap", methods=["GET"])
def tap_root():
    return _serve(TEXT, lambda r: Reply.redirect(r.base + "/", 303))


@app.route("/tap/{rest+}", methods=["GET", "POST", "DELETE"], content_types=FORMS)
def tap():
    from chalicelib.services.tap import routes as tap_service

    return _serve(VOTABLE, tap_service.handle, rest=_greedy())


@app.route("/sia", methods=["GET"])
def sia_root():
    return _serve(TEXT, lambda r: Reply.redirect(r.base + "/sia/capabilities", 303))


@app.route("/sia/{rest+}", methods=ANY, content_types=FORMS)
def sia():
    from chalicelib.services import sia as sia_service

    return _serve(VOTABLE, sia_service.handle, rest=_greedy())


@app.route("/datalink/links", methods=ANY, content_types=FORMS)
def datalink_links():
    from chalicelib.services import datalink

    return _serve(VOTABLE, datalink.links)


@app.route("/results/{rest+}", methods=["GET"])
def results():
    from chalicelib.services import uws

    return _serve(TEXT, uws.local_result, rest=_greedy())


@app.route("/coverage", methods=ANY, content_types=FORMS)
def coverage_search():
    from chalicelib.services import coverage as coverage_service

    return _serve(VOTABLE, coverage_service.search)


@app.route("/coverage/{collection}", methods=["GET"])
def coverage_moc(collection):
    from chalicelib.services import coverage as coverage_service

    return _serve(TEXT, coverage_service.moc, collection=collection)


@app.route("/soda/{rest+}", methods=["GET", "POST", "DELETE"], content_types=FORMS)
def soda():
    from chalicelib.services import soda as soda_service

    return _serve(TEXT, soda_service.handle, rest=_greedy())


@app.route("/data/{path+}", methods=["GET"])
def data_file():
    from chalicelib.services import files

    return _serve(TEXT, files.data, path=_greedy("path"))


@app.route("/cutout", methods=ANY, content_types=FORMS)
def cutout_by_param():
    from chalicelib.services import files

    return _serve(TEXT, files.cutout_route)


@app.route("/cutout/{path+}", methods=["GET"])
def cutout_by_path():
    from chalicelib.services import files

    return _serve(TEXT, files.cutout_route, path=_greedy("path"))


@app.route("/preview/{path+}", methods=["GET"])
def preview():
    from chalicelib.services import files

    return _serve(TEXT, files.preview, path=_greedy("path"))


@app.route("/spectrophotometry/{rest+}", methods=["GET", "POST", "DELETE"],
           content_types=FORMS)
def spectrophotometry():
    from chalicelib.services import photometry as service

    return _serve(TEXT, service.handle, rest=_greedy())


@app.route("/oai", methods=ANY, content_types=FORMS)
def oai():
    from chalicelib.services import oai as oai_service

    return _serve(TEXT, oai_service.handle)
