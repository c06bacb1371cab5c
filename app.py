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


def _request():
    req = app.current_request
    query = {k: req.query_params.getlist(k) for k in req.query_params or {}}
    params = Params.parse(query, req.raw_body, req.headers.get("content-type"))
    base = base_url(dict(req.headers), req.context.get("stage"))
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


@app.route("/tap/{rest+}", methods=["GET", "POST", "DELETE"])
def tap(rest):
    from chalicelib import tap as tap_service

    req, params, base = _request()
    return _respond(tap_service.handle(rest, req.method, params, base))
