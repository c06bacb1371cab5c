"""Property-based fuzzing of every endpoint (issue 12), over HTTP against the local server.

Properties, for any request the strategies make: never a 5xx; every error in the
service's documented form (a VOTable with QUERY_STATUS=ERROR where the service answers
VOTable, plain text starting with a fault word for SODA, files and UWS); no error text
showing tracebacks, local paths, Python class names or settings. UWS jobs follow the
state machine under random operation sequences. The strategies and the check are the
ones `python -m chalicelib bench fuzz` runs at scale (chalicelib/benchmarks/bench_fuzz.py).

Bounded and reproducible: derandomized, no example database, a few hundred examples per
test; the file runs in about a minute. Regression tests of the bugs fuzzing found follow.
"""

from __future__ import annotations

import re

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chalicelib.devtools.benchmarks import bench_fuzz as fz

VOTABLE_ERROR = b'name="QUERY_STATUS" value="ERROR"'


def fuzz(n: int):
    # no shrinking: a failure is reported as found (described in full by the assertion),
    # since shrinking one over HTTP can take minutes
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def ctx(server) -> fz.Context:
    return fz.context_from(server)


@pytest.fixture(scope="module")
def secrets(archive) -> tuple[str, ...]:
    return (archive.url,)


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s


def _check(session, server, probe: fz.Probe, secrets) -> requests.Response:
    r = fz.send(session, server, probe)
    found = fz.problems(probe, r.status_code, r.headers.get("Content-Type", ""), r.content,
                        secrets)
    assert not found, (found, probe.describe(), r.text[:500])
    if probe.method == "POST" and probe.path.endswith("/async") and r.status_code == 303:
        session.delete(r.headers["Location"], allow_redirects=False)  # keep the store small
    return r


def _fuzz_test(strategy_of, n: int):
    @fuzz(n)
    @given(data=st.data())
    def test(server, ctx, secrets, session, data):
        _check(session, server, data.draw(strategy_of(ctx), label="request"), secrets)
    return test


test_fuzz_tap_sync_adql = _fuzz_test(fz.tap_sync, 300)
test_fuzz_tap_uploads = _fuzz_test(fz.uploads, 80)
test_fuzz_sia_query = _fuzz_test(fz.sia, 200)
test_fuzz_datalink_links = _fuzz_test(fz.datalink, 80)
test_fuzz_coverage = _fuzz_test(fz.coverage, 80)
test_fuzz_soda_sync = _fuzz_test(fz.soda, 150)
test_fuzz_data_cutout_preview = _fuzz_test(fz.files, 150)
test_fuzz_spectrophotometry_creation = _fuzz_test(fz.photometry, 80)
test_fuzz_async_creation_and_lists = _fuzz_test(fz.async_creation, 100)
test_fuzz_path_segments = _fuzz_test(fz.paths, 200)


@fuzz(30)
@given(service=st.sampled_from(sorted(fz.JOBS)), ops=fz.uws_ops())
def test_fuzz_uws_operation_sequences_follow_the_state_machine(server, secrets, session,
                                                                service, ops):
    answers: list[tuple[fz.Probe, requests.Response]] = []
    bad = fz.run_uws(session, server, service, ops, lambda p, r: answers.append((p, r)))
    for p, r in answers:
        bad += [f"{f}: {p.describe()} -> {r.text[:200]!r}" for f in fz.problems(
            p, r.status_code, r.headers.get("Content-Type", ""), r.content, secrets)]
    assert not bad, bad


def test_the_checks_catch_what_they_should():
    """The property is only as good as its check: a 500, a Python error in a VOTable
    service's plain answer, a traceback or a local path are all reported."""
    p = fz.Probe("votable", "GET", "/sia/query", params=[("POS", "x")])
    assert fz.problems(p, 500, "text/plain", b"oops")[0].startswith("5xx")
    assert fz.problems(p, 400, "text/plain", b"UsageError: x")[0].startswith("form")
    doc = b'<VOTABLE><INFO name="QUERY_STATUS" value="ERROR">KeyError at /tmp/x</INFO>'
    assert fz.problems(p, 400, "application/x-votable+xml", doc) == ["leak: /tmp/, KeyError"]
    echo = fz.Probe("text", "GET", "/soda/sync", params=[("ID", "ValueError")])
    assert fz.problems(echo, 404, "text/plain", b"NotFoundFault: ValueError") == []
    assert fz.leaks("see /srv/archive/x", "", ("/srv/archive",)) == ["/srv/archive"]


# ---- regression tests of the bugs fuzzing found --------------------------------------------

def _tap_error(server, query: str) -> str:
    r = requests.get(server + "/tap/sync", params={"LANG": "ADQL", "QUERY": query})
    assert r.status_code == 400 and VOTABLE_ERROR in r.content, (r.status_code, r.text[:300])
    return re.search(r'value="ERROR">(.*?)</INFO>', r.text, re.S).group(1)


@pytest.mark.parametrize("template", [
    "SELECT TOP 1 obs_id FROM ivoa.obscore WHERE s_ra > {n}",
    "SELECT TOP {n} obs_id FROM ivoa.obscore",
    "SELECT obs_id FROM ivoa.obscore OFFSET {n}",
    "SELECT TOP 1 obs_id FROM ivoa.obscore ORDER BY {n}",
    "SELECT TOP 1 CAST(obs_id AS VARCHAR({n})) FROM ivoa.obscore"])
def test_bug_huge_integer_literal_is_a_usage_error_not_a_500(server, template):
    """A 5000-digit integer made int() raise ValueError (Python's 4300-digit limit) in
    the translator: a 500. Now out of range, like 1e400."""
    message = _tap_error(server, template.format(n="1" * 5000))
    assert "out of range" in message and "1" * 400 not in message
    assert "ValueError" not in message and "InternalError" not in message


def test_bug_healpix_index_of_rows_without_a_position_is_null_not_a_panic(server):
    """Rows with no s_ra/s_dec made cdshealpix panic inside the UDF: the query failed with
    the Rust assertion in its message (found by test_fuzz_tap_sync_adql)."""
    import requests

    r = requests.get(f"{server}/tap/sync", params={
        "LANG": "ADQL", "FORMAT": "csv",
        "QUERY": "SELECT ivo_healpix_index(10, s_ra, s_dec) AS h, s_dec FROM ivoa.obscore"},
        timeout=60)
    assert r.status_code == 200, r.text[:300]
    rows = [line.split(",") for line in r.text.splitlines()[1:]]
    assert rows and any(d == "" for _, d in rows)  # the archive has rows without a centre
    assert all((h == "") == (d == "") for h, d in rows)


@pytest.mark.parametrize("query", ["SELECT TOP", "SELECT obs_id FROM", "SELECT * FROM x WHERE",
                                   "SELECT 1 FROM t JOIN"])
def test_bug_syntax_errors_show_no_parser_classes_or_tokens(server, query):
    """sqlglot's messages named its classes and token reprs ("missing for <class
    'sqlglot.expressions.query.Limit'>", "got <Token token_type: TokenType.SENTINEL")."""
    message = _tap_error(server, query)
    assert message.startswith("Invalid ADQL: Syntax error")
    for internal in ("sqlglot", "&lt;class", "Token", "SENTINEL", "comments"):
        assert internal not in message, message


def test_bug_destruction_before_year_1000_keeps_the_job_readable(server):
    """strftime('%Y') wrote year 341 as '341-12-11T...', which parse_time refused when
    the job was read back: every request on the job, DELETE included, became a 400."""
    from datetime import UTC, datetime

    from chalicelib.jobs.uws.model import format_time, parse_time

    when = datetime(341, 12, 11, 17, 58, 55, 12000, tzinfo=UTC)
    assert format_time(when) == "0341-12-11T17:58:55.012Z"
    assert parse_time(format_time(when)) == when
    s = requests.Session()
    job = s.post(server + "/soda/async", data={"ID": "ivo://x/y", "CIRCLE": "10 10 0.1"},
                 allow_redirects=False).headers["Location"]
    r = s.post(job + "/destruction", data={"DESTRUCTION": "0341-12-11T17:58:55.012360"},
               allow_redirects=False)
    assert r.status_code == 303
    for sub in ("", "/phase", "/destruction", "/parameters"):
        assert s.get(job + sub).status_code in (200, 404), sub  # 404: destroyed already
    assert s.delete(job, allow_redirects=False).status_code in (303, 404)


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"])
def test_bug_timestamps_beyond_year_range_in_utc_are_usage_errors(server, when):
    """Converting these to UTC overflows datetime (OverflowError): a 500 on AFTER= of a
    job list and DESTRUCTION= of a new job or an existing one."""
    s = requests.Session()
    for service in ("tap", "soda", "spectrophotometry"):
        r = s.get(f"{server}/{service}/async", params={"AFTER": when})
        assert r.status_code == 400 and r.text.startswith("UsageError: timestamp out of range")
    r = s.post(server + "/tap/async", data={"LANG": "ADQL", "QUERY": "SELECT 1",
                                            "DESTRUCTION": when}, allow_redirects=False)
    assert r.status_code == 400 and "out of range" in r.text
    job = s.post(server + "/tap/async", data={"LANG": "ADQL", "QUERY": "SELECT 1"},
                 allow_redirects=False).headers["Location"]
    r = s.post(job + "/destruction", data={"DESTRUCTION": when}, allow_redirects=False)
    assert r.status_code == 400 and "out of range" in r.text
    assert s.delete(job, allow_redirects=False).status_code == 303


def test_bug_local_server_framing_errors_are_plain_text(server):
    """http.server answered a request line over 64 KiB (a long GET query) with its HTML
    error page; the local server's refusals are plain text."""
    r = requests.get(server + "/tap/sync", params={"LANG": "ADQL", "QUERY": "x" * 70_000})
    assert r.status_code == 414 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text.startswith("Error: 414") and "<html" not in r.text.lower()


def _upload(server, content: bytes) -> requests.Response:
    return requests.post(server + "/tap/sync", data={
        "LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.t", "UPLOAD": "t,param:t"},
        files={"t": ("t.xml", content, "application/x-votable+xml")})


def test_bug_unreadable_upload_names_no_python_exception(server):
    """astropy's parse error reached the caller as 'None:1:102: ValueError: invalid
    literal for int() with base 10: ...' (its file name and a Python class name)."""
    r = _upload(server, b'<VOTABLE><RESOURCE><TABLE><FIELD name="a" datatype="int"/><DATA>'
                        b'<TABLEDATA><TR><TD>!</TD>')
    assert r.status_code == 400 and VOTABLE_ERROR in r.content
    assert b"line 1, column " in r.content and b"invalid literal" in r.content
    assert b"ValueError" not in r.content and b"None:" not in r.content


def test_bug_upload_with_a_5000_digit_nrows_is_refused_not_a_500(server):
    """The pre-scan read TABLE nrows="..." with int(): 5000 digits raised ValueError."""
    r = _upload(server, b'<VOTABLE><RESOURCE><TABLE nrows="' + b"9" * 5000 + b'"><FIELD '
                        b'name="a" datatype="int"/></TABLE></RESOURCE></VOTABLE>')
    assert r.status_code == 400 and VOTABLE_ERROR in r.content and b"rows" in r.content


@pytest.mark.parametrize("number", ["1e", "1.e", "1E"])
def test_bug_exponent_without_digits_is_a_usage_error_not_a_500(server, number):
    """sqlglot reads '1e' as a number; float('1e') raised ValueError in the translator."""
    message = _tap_error(server, "SELECT TOP 3 obs_id FROM ivoa.obscore WHERE "
                                 f"INTERSECTS(s_region, BOX('', 10, 10, 1, {number})) = 1")
    assert f"'{number}' is not a number" in message


@pytest.mark.parametrize("last", ["²", "٣", "-1", "x"])
def test_bug_job_list_last_must_be_ascii_digits(server, last):
    """LAST=² passed str.isdigit() and then made int() raise ValueError: a 500."""
    for service in ("tap", "soda", "spectrophotometry"):
        r = requests.get(f"{server}/{service}/async", params={"LAST": last})
        assert r.status_code == 400 and r.text.startswith("UsageError: LAST must be")


def test_bug_huge_ra_in_a_cone_does_not_reach_mocpy_as_360_deg(server):
    """astropy's wrapping of RA 1.0892701853118354e+216 gave exactly 360 deg, which mocpy
    refused (ValueError 'Longitude must be in [0, 2pi[') while pruning by HEALPix: a 500
    whenever the release's files had HEALPix statistics."""
    from chalicelib.geometry import sky

    ra = 1.0892701853118354e+216
    assert sky.cap_cells(ra, 82.1721, 2.0) == sky.cap_cells(ra % 360.0, 82.1721, 2.0)
    q = ("SELECT TOP 3 CENTROID(s_region) FROM ivoa.obscore WHERE INTERSECTS(s_region, "
         f"POINT({ra!r}, 82.1721)) = 1")
    for _ in range(3):
        r = requests.post(server + "/tap/sync", data={"LANG": "ADQL", "QUERY": q,
                                                      "MAXREC": "99999999999999999999"})
        assert r.status_code == 200, r.text[-300:]
