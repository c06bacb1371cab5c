"""The HTTP API: routes only. Protocol logic lives in chalicelib and is tested there."""

from __future__ import annotations

from chalice import Chalice, Response

from chalicelib import landing, runtime
from chalicelib.web import Params, Reply, base_url

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


def _request():
    req = app.current_request
    query = {k: req.query_params.getlist(k) for k in req.query_params or {}}
    params = Params.parse(query, req.raw_body, req.headers.get("content-type"))
    base = base_url(dict(req.headers), req.context.get("stage"))
    runtime.remember_base(base)
    return req, params, base


def _respond(reply: Reply) -> Response:
    headers = {"Content-Type": reply.content_type, **reply.headers}
    return Response(body=reply.body, status_code=reply.status, headers=headers)


@app.route("/", methods=["GET"])
def index():
    _, _, base = _request()
    rel = runtime.catalogue(base).release
    return _respond(Reply(200, landing.page(base, rel.number, rel.deliveries),
                          "text/html; charset=utf-8"))


@app.route("/tap", methods=["GET"])
def tap_root():
    _, _, base = _request()
    return _respond(Reply.redirect(base + "/", 303))


@app.route("/tap/{rest+}", methods=["GET", "POST", "DELETE"], content_types=FORMS)
def tap():
    rest = _greedy()
    from chalicelib import tap as tap_service

    req, params, base = _request()
    return _respond(tap_service.handle(rest, req.method, params, base))


@app.route("/sia", methods=["GET"])
def sia_root():
    _, _, base = _request()
    return _respond(Reply.redirect(base + "/sia/capabilities", 303))


@app.route("/sia/{rest+}", methods=ANY, content_types=FORMS)
def sia():
    rest = _greedy()
    from chalicelib import sia as sia_service

    req, params, base = _request()
    return _respond(sia_service.handle(rest, req.method, params, base))


@app.route("/datalink/links", methods=ANY, content_types=FORMS)
def datalink_links():
    from chalicelib import datalink

    _, params, base = _request()
    return _respond(datalink.links(params, base))


@app.route("/results/{rest+}", methods=["GET"])
def results():
    rest = _greedy()
    from chalicelib import jobs

    return _respond(jobs.local_result(rest))


@app.route("/coverage", methods=ANY, content_types=FORMS)
def coverage_search():
    from chalicelib import coverage as coverage_service

    _, params, base = _request()
    return _respond(coverage_service.search(params, base))


@app.route("/coverage/{collection}", methods=["GET"])
def coverage_moc(collection):
    from chalicelib import coverage as coverage_service

    _, params, base = _request()
    return _respond(coverage_service.moc(collection, params, base))


@app.route("/soda/{rest+}", methods=["GET", "POST", "DELETE"], content_types=FORMS)
def soda():
    from chalicelib import soda as soda_service

    req, params, base = _request()
    return _respond(soda_service.handle(_greedy(), req.method, params, base))


@app.route("/data/{path+}", methods=["GET"])
def data_file():
    from chalicelib import files

    _, params, base = _request()
    return _respond(files.data(_greedy("path"), params, base))


@app.route("/cutout", methods=ANY, content_types=FORMS)
def cutout_by_param():
    from chalicelib import files

    _, params, base = _request()
    return _respond(files.cutout_route(None, params, base))


@app.route("/cutout/{path+}", methods=["GET"])
def cutout_by_path():
    from chalicelib import files

    _, params, base = _request()
    return _respond(files.cutout_route(_greedy("path"), params, base))


@app.route("/preview/{path+}", methods=["GET"])
def preview():
    from chalicelib import files

    _, _, base = _request()
    return _respond(files.preview(_greedy("path"), base))


@app.route("/spectrophotometry/{rest+}", methods=["GET", "POST", "DELETE"],
           content_types=FORMS)
def spectrophotometry():
    from chalicelib.photometry import service

    req, params, base = _request()
    return _respond(service.handle(_greedy(), req.method, params, base))
