"""The UWS HTTP adapter every async service shares: one service's UWS request as a web
Reply on behalf of the current caller, inline uploads kept for the job, and local result
files served to whoever may see the job."""

from __future__ import annotations

import uuid

from ..jobs import runtime as jobs
from ..jobs.runtime import JobKind
from ..jobs.uws.service import may_see
from ..lake import current
from ..web.callers import anonymous_owner, new_owner_token, owner_cookie
from ..web.replies import Reply
from ..web.request import Request


def local_result(req: Request) -> Reply:
    """Serve results/<service>/<job>/<id> from a local archive (S3 uses presigned URLs)
    to whoever may see the job."""
    path = req.path.get("rest") or ""
    parts = path.split("/")
    arch = current.archive()
    if arch.is_s3 or len(parts) != 3 or any(p in ("", ".", "..") for p in parts):
        return Reply.text("Not found", 404)
    key = "results/" + path
    job = jobs.store().get(parts[1])
    if job is None or not may_see(job, req.caller) or not arch.exists(key):
        return Reply.text("Not found", 404)
    mime = next((r.get("mime_type") for r in job.results
                 if r.get("href", "").endswith(key)), None)
    return Reply(200, arch.read_bytes(key), mime or "application/octet-stream")


def keep_uploads(params) -> dict[str, list[str]]:
    """Inline UPLOAD parts outlive the request: store each in the archive and point the
    job's UPLOAD parameter at it (read back by tapupload as archive:uploads/...)."""
    values = params.to_dict()
    if not params.files or "upload" not in values:
        return values
    arch = current.archive()
    prefix = f"uploads/{uuid.uuid4().hex}"
    for name, part in params.files.items():
        arch.write_bytes(f"{prefix}/{name}", part.content)
    values["upload"] = [v.replace("param:", f"archive:{prefix}/") for v in values["upload"]]
    return values


def handle_uws(kind: JobKind, req: Request, sub: str, list_url: str) -> Reply:
    """One async service's UWS request (`sub`: the path under its job list), as a web
    Reply, on behalf of the request's caller. A caller without an identity creating a job
    gets an owner token (a cookie) so that its job list shows its own jobs."""
    method, params, base = req.method, req.params, req.base
    owner, token = req.caller, None
    if owner is None and method.upper() == "POST" and not sub.strip("/"):
        token = new_owner_token()
        owner = anonymous_owner(token)
    resp = jobs.service(kind, base).handle(method, sub, keep_uploads(params), None, owner, list_url)
    headers = {k: v for k, v in resp.headers.items() if k != "Content-Type"}
    if token and resp.status < 400:
        headers["Set-Cookie"] = owner_cookie(token, base)
    return Reply(resp.status, resp.body, resp.content_type, headers)
