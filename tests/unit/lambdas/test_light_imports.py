"""A health check must not pay for the science stack: VOSI availability through the Lambda
API handler, in a fresh interpreter, imports none of DuckDB, numpy, astropy, pyarrow or
numba (each costs 0.1-1 s of cold start). Checked on sys.modules, not on timings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("duckdb", "numpy", "astropy", "pyarrow", "numba", "deltalake", "fsspec", "sqlglot",
         "pandas", "urllib3")

PROBE = """
import json, sys
from chalicelib.lambdas import handlers
event = {"resource": "/{proxy+}", "path": "/tap/availability", "httpMethod": "GET",
         "headers": {"Host": "h.example.org"}, "multiValueHeaders": None,
         "queryStringParameters": None, "multiValueQueryStringParameters": None,
         "pathParameters": {"proxy": "tap/availability"}, "stageVariables": None,
         "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": "GET",
                            "path": "/tap/availability", "requestId": "r1"},
         "body": None, "isBase64Encoded": False}
reply = handlers.api(event)
print(json.dumps({"status": reply["statusCode"], "body": reply["body"],
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)}))
"""


def test_availability_through_the_api_handler_loads_no_science_stack(tmp_path: Path) -> None:
    code = f"HEAVY = {HEAVY!r}\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True,
                         env={"PATH": "/usr/bin:/bin", "ARCHIVE_URL": str(tmp_path / "a"),
                              "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == 200 and "<vosi:available>true</vosi:available>" in got["body"]
    assert got["loaded"] == []


def test_the_probe_would_see_the_science_stack(tmp_path: Path) -> None:
    """The same probe after a TAP-sync import lists them: the check above can fail."""
    code = (f"HEAVY = {HEAVY!r}\nimport chalicelib.services.tap.sync\n" + PROBE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True,
                         env={"PATH": "/usr/bin:/bin", "ARCHIVE_URL": str(tmp_path / "a"),
                              "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    loaded = json.loads(out.stdout.strip().splitlines()[-1])["loaded"]
    assert {"duckdb", "numpy", "pyarrow"} <= set(loaded)


ANSWER = """
import base64, json, sys
from chalicelib.lambdas import handlers
events = json.load(open(sys.argv[1]))
out = {}
for name, event in events.items():
    reply = handlers.api(event)
    body = reply["body"]
    if reply.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("latin-1")
    out[name] = [reply["statusCode"], body]
out["pandas"] = "pandas" in sys.modules
print(json.dumps(out))
"""


def _answers(events: Path, archive: Path, home: Path, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", ANSWER, str(events)], capture_output=True,
                         text=True, cwd=ROOT, timeout=300, check=True,
                         env={"PATH": "/usr/bin:/bin", "ARCHIVE_URL": str(archive),
                              "RATE_LIMIT": "0", "PYTHONPATH": str(ROOT), "HOME": str(home),
                              **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_api_function_answers_the_same_without_pandas(tmp_path: Path) -> None:
    """WITHOUT_PANDAS=1 (the API function's setting in the template) keeps pandas out of
    the process; DataLink, a TAP cone, SIA, cutouts, previews, files, coverage and the
    metadata pages answer byte for byte as with it."""
    from chalicelib.devtools.benchmarks.bench_coldstart import build_archive, proxy_event

    events = build_archive(tmp_path)
    del events["availability"]  # it loads no pyarrow at all (the test above)
    key = events["cutout"]["path"].removeprefix("/cutout/")
    did, cut = events["datalink"]["queryStringParameters"]["ID"], \
        events["cutout"]["queryStringParameters"]
    events |= {  # the rest of what the API function serves, read-only
        "preview": proxy_event(f"/preview/{key}"),
        "data": proxy_event(f"/data/{key}"),
        "soda": proxy_event("/soda/sync", {"ID": did, "CIRCLE":
                                           f"{cut['ra']} {cut['dec']} 0.05"}),
        "coverage": proxy_event("/coverage"),
        "tap_tables": proxy_event("/tap/tables"),
        "oai": proxy_event("/oai", {"verb": "Identify"}),
        "landing": proxy_event("/"),
    }
    (tmp_path / "events.json").write_text(json.dumps(events))
    lean = _answers(tmp_path / "events.json", tmp_path / "archive", tmp_path,
                    WITHOUT_PANDAS="1")
    usual = _answers(tmp_path / "events.json", tmp_path / "archive", tmp_path)
    assert lean.pop("pandas") is False and usual.pop("pandas") is True
    assert set(lean) == set(events)
    def same(body: str) -> str:  # OAI-PMH stamps each answer with its time
        return re.sub(r"<responseDate>[^<]*</responseDate>", "", body)

    for name, (status, body) in lean.items():
        assert status == 200, (name, body[:500])
        assert [status, same(body)] == [usual[name][0], same(usual[name][1])], name
