"""Regression tests for the defects found by hostile and unusual input (issue 16), each
named after its item, run against the local server over the session archive."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from chalicelib import config, dali
from chalicelib.query import runtime
from tests.support import REPO_ROOT

VOTABLE_ERROR = b'name="QUERY_STATUS" value="ERROR"'


@pytest.fixture(scope="module")
def image_key(archive) -> str:
    data = Path(archive.url) / "data"
    return next(p for p in sorted(data.rglob("level2_*.fits"))).relative_to(data).as_posix()


def _raw(base: str, request: bytes) -> bytes:
    host, port = urlparse(base).hostname, urlparse(base).port
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(request)
        return s.recv(65536)


# ---- 3: the Host header is not trusted ------------------------------------------------------

def test_defect_03_host_header_never_reaches_access_urls(server):
    r = requests.get(server + "/tap/capabilities", headers={"Host": "evil.example:1234"})
    assert r.status_code == 200 and b"evil.example" not in r.content
    assert server.encode() in r.content
    r = requests.get(server + "/tap/sync", headers={"Host": "evil.example:1234"},
                     params={"LANG": "ADQL", "QUERY": "SELECT TOP 1 access_url FROM "
                             "ivoa.obscore"})
    assert r.status_code == 200 and b"evil.example" not in r.content


def test_defect_03_forwarded_headers_only_behind_a_declared_proxy(server, monkeypatch):
    fwd = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    assert b"evil.example" not in requests.get(server + "/sia/capabilities",
                                               headers=fwd).content
    monkeypatch.setenv("TRUSTED_PROXY", "1")
    config.reset()
    proxied = requests.get(server + "/sia/capabilities", headers={
        "X-Forwarded-Host": "archive.example.org", "X-Forwarded-Proto": "https"})
    assert b"https://archive.example.org/sia" in proxied.content


def test_defect_03_catalogues_do_not_grow_with_hosts(server):
    for i in range(12):
        requests.get(server + "/tap/availability", headers={"Host": f"h{i}.example"})
        requests.get(server + "/sia/query", headers={"Host": f"h{i}.example"},
                     params={"MAXREC": "0"})
    assert len(runtime._catalogues) <= runtime.MAX_CATALOGUES


# ---- 4: limits checked before any work ------------------------------------------------------

def _polygon(n: int) -> str:
    return ",".join(f"{10 + 0.001 * i:.4f},{10 + (i % 2) * 0.001}" for i in range(n))


def test_defect_04_big_polygons_and_queries_are_refused_at_once(server, monkeypatch):
    from chalicelib.query import adql

    query = ("SELECT obs_id FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), "
             f"POLYGON('ICRS', {_polygon(10_000)}))=1")
    with monkeypatch.context() as m:  # refused before the parser sees it
        m.setattr(adql, "parse", lambda *a, **k: pytest.fail("the long query was parsed"))
        r = requests.post(server + "/tap/sync", data={"LANG": "ADQL", "QUERY": query})
    assert r.status_code == 400 and VOTABLE_ERROR in r.content
    assert b"100,000 are accepted" in r.content
    query = query.replace(_polygon(10_000), _polygon(dali.MAX_VERTICES + 1))
    r = requests.post(server + "/tap/sync", data={"LANG": "ADQL", "QUERY": query})
    assert r.status_code == 400 and f"at most {dali.MAX_VERTICES}".encode() in r.content
    pos = "POLYGON " + _polygon(dali.MAX_VERTICES + 1).replace(",", " ")
    for path in ("/sia/query", "/coverage"):
        r = requests.post(server + path, data={"POS": pos})
        assert r.status_code == 400 and f"at most {dali.MAX_VERTICES}".encode() in r.content


def test_defect_04_the_largest_accepted_polygon_answers(server):
    query = ("SELECT COUNT(*) AS n FROM ivoa.obscore WHERE INTERSECTS(s_region, "
             f"POLYGON('ICRS', {_polygon(dali.MAX_VERTICES)}))=1")
    r = requests.post(server + "/tap/sync", data={"LANG": "ADQL", "QUERY": query,
                                                  "RESPONSEFORMAT": "csv"})
    assert r.status_code == 200 and r.text.splitlines()[0] == "n"


# ---- 8: RFC 2231 multipart field names ------------------------------------------------------

def test_defect_08_rfc2231_multipart_names(server):
    boundary = "b0undary"
    parts = [("LANG", "ADQL"), ("QUERY", "SELECT TOP 1 obs_id FROM ivoa.obscore"),
             ("RESPONSEFORMAT", "csv")]
    body = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name*=UTF-8''{k}"
                   f"\r\n\r\n{v}\r\n" for k, v in parts) + f"--{boundary}--\r\n"
    r = requests.post(server + "/tap/sync", data=body.encode(), headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200 and r.text.splitlines()[0] == "obs_id"


# ---- 9-11: numbers that are not finite or not in range --------------------------------------

@pytest.mark.parametrize("center,size", [
    ("10,10", "1e308"), ("1e308,0px", "10px"), ("1e20,0px", "1e308deg"),
    ("10,10", "1e308rad"), ("inf,0", "1"), ("nan,0", "1"), ("1e308,0", "1")])
def test_defect_09_cutout_huge_numbers(server, image_key, center, size):
    ra, dec = center.removesuffix("px").split(",")
    urls = [(f"{server}/data/{image_key}", {"center": center, "size": size})]
    if not center.endswith("px"):  # the REST and descriptor syntaxes take ra, dec in deg
        q = {"ra": ra, "dec": dec, "size": size}
        urls += [(f"{server}/cutout/{image_key}", q),
                 (f"{server}/cutout", {**q, "path": image_key})]
    for url, query in urls:
        r = requests.get(url, params=query)
        assert r.status_code == 400 and r.text.startswith("UsageError"), (url, r.text)


@pytest.mark.parametrize("pos", ["POLYGON 10 10 11 10 Infinity 11", "CIRCLE nan 1 1",
                                 "CIRCLE 10 10 1e400", "POLYGON 10 10 11 10 nan 11"])
def test_defect_10_sia_refuses_non_finite_positions(server, pos):
    r = requests.get(server + "/sia/query", params={"POS": pos})
    assert r.status_code == 400 and VOTABLE_ERROR in r.content


@pytest.mark.parametrize("pos", ["CIRCLE nan 1 1", "CIRCLE 1 2 -1", "CIRCLE 1 95 1",
                                 "POLYGON 10 10 11 10 Infinity 11", "RANGE 1 2 3 4",
                                 "CIRCLE 1 2 200"])
def test_defect_11_coverage_refuses_what_sia_refuses(server, pos):
    r = requests.get(server + "/coverage", params={"POS": pos})
    assert r.status_code == 400 and VOTABLE_ERROR in r.content, (pos, r.text)
    if "CIRCLE" in pos and "nan" not in pos and "95" not in pos:
        assert b" deg" in r.content and b"radian" not in r.content


def test_defect_11_coverage_polygon_longitudes_wrap(server):
    """RA 1000 is RA 280: the same answer as the wrapped polygon, not a 500."""
    wrapped = requests.get(server + "/coverage", params={"POS": "POLYGON 10 10 280 10 10 11"})
    raw = requests.get(server + "/coverage", params={"POS": "POLYGON 10 10 1000 10 10 11"})
    assert raw.status_code == wrapped.status_code == 200 and raw.content == wrapped.content


# ---- 13 and the class guard: one place maps exceptions to error documents -------------------

def test_unexpected_errors_are_a_500_with_a_request_id_and_no_detail(server, monkeypatch,
                                                                      caplog):
    from chalicelib.services import sia

    def broken(*_a, **_k):
        raise RuntimeError("/secret/local/path s3://private-bucket AWS_SECRET")

    monkeypatch.setattr(sia, "where", broken)
    r = requests.get(server + "/sia/query", params={"POS": "CIRCLE 1 2 0.1"})
    assert r.status_code == 500 and VOTABLE_ERROR in r.content
    rid = r.headers["X-Request-Id"]
    assert rid.encode() in r.content
    for secret in (b"secret", b"private-bucket", b"AWS_SECRET", b"RuntimeError",
                   b"Traceback"):
        assert secret not in r.content
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_caller_mistakes_are_logged_as_one_line_without_traceback(server, caplog):
    caplog.set_level("INFO", logger="chalicelib.web")
    r = requests.get(server + "/data/x.fits", params={"center": "1e308,0px", "size": "1"})
    assert r.status_code in (400, 404)
    assert not any(rec.exc_info for rec in caplog.records)


# ---- 1: jobs have owners ---------------------------------------------------------------------

@pytest.mark.parametrize("service,form", [
    ("tap", {"LANG": "ADQL", "QUERY": "SELECT TOP 1 obs_id FROM ivoa.obscore"}),
    ("soda", {"ID": "ivo://nowhere?x", "CIRCLE": "1 2 0.1"}),
    ("spectrophotometry", {"POINT": "1.0,2.0"})])
def test_defect_01_jobs_are_private(server, service, form):
    alice, bob = requests.Session(), requests.Session()
    url = f"{server}/{service}/async"
    created = alice.post(url, data=form, allow_redirects=False)
    if created.status_code == 400:  # a validator refused the form: nothing to own
        pytest.skip(created.text)
    assert created.status_code == 303 and "uws_owner" in alice.cookies
    job_url = created.headers["Location"]
    job_id = job_url.rsplit("/", 1)[1]
    assert job_id in alice.get(url).text
    bob.post(url, data=form, allow_redirects=False)  # bob becomes a caller with a token
    assert job_id not in bob.get(url).text
    assert job_id not in requests.get(url).text  # a stranger without a token lists nothing
    for method, sub, data in (("GET", "", None), ("GET", "/parameters", None),
                              ("GET", "/results", None), ("POST", "/phase", {"PHASE": "RUN"}),
                              ("POST", "/destruction", {"DESTRUCTION": "2030-01-01T00:00:00Z"}),
                              ("POST", "", {"ACTION": "DELETE"}), ("DELETE", "", None)):
        r = bob.request(method, job_url + sub, data=data, allow_redirects=False)
        assert r.status_code == 404, (method, sub, r.status_code)
    assert alice.get(job_url).status_code == 200  # bob's attempts changed nothing
    assert b"PENDING" in alice.get(job_url + "/phase").content
    # a client that keeps no cookie (TOPCAT, taplint) reaches the job by its URL alone
    assert requests.get(job_url).status_code == 200
    assert alice.delete(job_url, allow_redirects=False).status_code == 303


def test_defect_01_owner_token_header_and_gateway_identities():
    from chalicelib.web.callers import anonymous_owner, identify

    token = "t" * 32
    assert identify({"X-Owner-Token": token}) == anonymous_owner(token)
    assert identify({"Cookie": f"a=b; uws_owner={token}"}) == anonymous_owner(token)
    assert identify({"X-Owner-Token": "short"}) is None
    assert identify({}, {"identity": {"userArn": "arn:aws:iam::1:user/al"}}) == \
        "iam:arn:aws:iam::1:user/al"
    assert identify({"X-Owner-Token": token},
                    {"authorizer": {"claims": {"sub": "u-1"}}}) == "cognito:u-1"
    assert identify({}, {"identity": {"apiKeyId": "k1", "sourceIp": "1.2.3.4"}}) == "apikey:k1"
    assert token not in anonymous_owner(token)


def test_defect_01_results_are_served_to_their_owner_only(server):
    alice = requests.Session()
    r = alice.post(server + "/tap/async", data={
        "LANG": "ADQL", "QUERY": "SELECT TOP 1 obs_id FROM ivoa.obscore", "PHASE": "RUN"})
    job_url = r.url
    for _ in range(100):
        if b"COMPLETED" in alice.get(job_url + "/phase").content:
            break
        time.sleep(0.1)
    result = alice.get(job_url + "/results/result", allow_redirects=False)
    href = result.headers["Location"]
    assert alice.get(href).status_code == 200
    bob = requests.Session()
    bob.post(server + "/tap/async", data={"LANG": "ADQL", "QUERY": "SELECT 1"})
    assert bob.get(href).status_code == 404


# ---- 13: async errors speak to the caller, not in Python ---------------------------------

def _finished(session: requests.Session, job_url: str) -> bytes:
    for _ in range(200):
        phase = session.get(job_url + "/phase").content
        if phase not in (b"PENDING", b"QUEUED", b"EXECUTING"):
            return phase
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


def test_defect_13_async_usage_errors_have_no_class_names_or_tracebacks(server, caplog):
    caplog.set_level("INFO")
    s = requests.Session()
    r = s.post(server + "/tap/async", data={"LANG": "ADQL", "PHASE": "RUN",
                                           "QUERY": "SELECT nosuch FROM ivoa.obscore"})
    assert _finished(s, r.url) == b"ERROR"
    error = s.get(r.url + "/error").text
    assert "Invalid ADQL" in error and "nosuch" in error
    assert "ValueError" not in error and "Traceback" not in error
    assert not [rec for rec in caplog.records if rec.exc_info]
    assert any("usage error" in rec.getMessage() for rec in caplog.records)


# ---- 2 (class guard): outbound HTTP only through the guarded client -------------------------

NETWORK_MODULES = {"requests", "urllib3", "urllib.request", "http.client", "httpx", "aiohttp",
                   "socket"}


def test_defect_02_outbound_fetches_only_through_one_guarded_client():
    """Any module of the service that could open a connection to a URL a caller names
    must be chalicelib/outbound.py (developer tooling, which serves or drives the local
    server, is not part of the service)."""
    import ast

    root = REPO_ROOT / "chalicelib"
    tooling = ("benchmarks", "synth", "devtools", "localserver.py", "demo.py", "__main__.py")
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel == "outbound.py" or rel.endswith("/outbound.py") or rel.startswith(tooling) \
                or any(f"/{t}" in f"/{rel}" for t in tooling):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{rel}: {n}" for n in names
                          if n in NETWORK_MODULES or n.split(".")[0] in {"requests", "urllib3"}]
    assert offenders == []


# ---- load: rate limits per caller (429) and refusals when full (503) ------------------------

def test_rate_limiter_token_bucket():
    from chalicelib.web.load import RateLimiter, ServiceBusy

    lim = RateLimiter(rate=2.0, burst=3.0, max_callers=2)
    for _ in range(3):
        lim.admit("a", now=100.0)
    with pytest.raises(ServiceBusy) as refused:
        lim.admit("a", now=100.0)
    assert refused.value.status == 429 and refused.value.retry_after == pytest.approx(0.5)
    lim.admit("a", now=100.5)  # one token back after 1/rate seconds
    lim.admit("b", now=100.5)  # another caller has its own bucket
    lim.admit("c", now=100.5)
    assert len(lim._buckets) == 2  # bounded: the least recently seen is forgotten


def test_callers_over_their_rate_get_429_and_cannot_spoof_their_address(server, monkeypatch):
    monkeypatch.setenv("RATE_LIMIT", "0.01")
    monkeypatch.setenv("RATE_BURST", "3")
    config.reset()
    codes = [requests.get(server + "/tap/availability",
                          headers={"X-Client-Address": f"10.0.0.{i}"}).status_code
             for i in range(5)]
    assert codes[:3] == [200] * 3 and codes[3:] == [429, 429]
    r = requests.get(server + "/tap/sync", params={"LANG": "ADQL", "QUERY": "SELECT 1"})
    assert r.status_code == 429 and VOTABLE_ERROR in r.content
    assert int(r.headers["Retry-After"]) >= 1 and b"TooManyRequests" in r.content
    identified = requests.get(server + "/tap/availability", headers={"X-Owner-Token": "o" * 30})
    assert identified.status_code == 200  # an identified caller counts on its own


def test_sync_queries_beyond_capacity_get_503_with_retry_after(server, monkeypatch):
    import threading

    from chalicelib.web import load as web

    monkeypatch.setattr(web, "_sync_slots", threading.BoundedSemaphore(1))
    with web.sync_slot():  # the only slot is taken
        t0 = time.perf_counter()
        r = requests.get(server + "/tap/sync", params={"LANG": "ADQL", "QUERY": "SELECT 1"})
        assert r.status_code == 503 and VOTABLE_ERROR in r.content
        assert r.headers["Retry-After"] == "5" and time.perf_counter() - t0 < 10
        r = requests.get(server + "/sia/query", params={"POS": "CIRCLE 1 2 0.1"})
        assert r.status_code == 503
    ok = requests.get(server + "/tap/sync", params={
        "LANG": "ADQL", "QUERY": "SELECT TOP 1 obs_id FROM ivoa.obscore"})
    assert ok.status_code == 200


# ---- load: a slow query does not hold up a cone search ----------------------------------------

def test_a_busy_catalogue_does_not_hold_up_a_cone_search(server):
    """One query runs at a time on a catalogue's connection; while one is taken (held
    here, as a slow query would), a cone is answered by another."""
    requests.get(server + "/tap/sync", params={"LANG": "ADQL", "QUERY": "SELECT TOP 1 obs_id "
                                              "FROM ivoa.obscore"})  # the first lane exists
    busy = runtime.catalogue(server)
    opened = busy.current()
    cone = {"LANG": "ADQL", "RESPONSEFORMAT": "csv", "QUERY":
            "SELECT COUNT(*) AS n FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', 0, 0), "
            "s_region) = 1"}
    with opened.lock:
        busy.active += 1
        try:
            r = requests.get(server + "/tap/sync", params=cone, timeout=60)
        finally:
            busy.active -= 1
    assert r.status_code == 200 and r.text.splitlines()[0] == "n"
    key = next(k for k, lanes in runtime._catalogues.items() if busy in lanes)
    assert 2 <= len(runtime._catalogues[key]) <= runtime.LANES
