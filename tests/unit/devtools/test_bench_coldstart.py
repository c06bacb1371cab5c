"""bench coldstart --s3 on this machine: every handler kind answers from an archive on a
request-counting moto S3, and the counts say which kinds touch S3 (availability none)."""

from __future__ import annotations

import re

from chalicelib.devtools.benchmarks import bench_coldstart


def test_coldstart_on_moto_s3_counts_requests_per_kind(capsys) -> None:
    bench_coldstart.main(["--host", "--s3", "--s3-delay-ms", "0", "--repeat", "1",
                          "--warm", "0"])
    out = capsys.readouterr().out
    assert "the archive on moto S3" in out
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (\w+) \|(.*)\|$", out, re.M)}
    assert set(rows) >= {"availability", "tap_cone", "sia", "datalink", "cutout"}
    counts = {}
    for name in ("availability", "tap_cone", "sia", "datalink", "cutout"):
        assert "HTTP 200" in rows[name], (name, rows[name])
        counts[name] = int(re.search(r"\((\d+) S3 requests a process\)", rows[name]).group(1))
    assert counts["availability"] == 0
    assert all(counts[k] > 0 for k in ("tap_cone", "sia", "datalink", "cutout")), counts
