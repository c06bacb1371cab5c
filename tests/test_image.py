"""The Lambda container image (infra/image/build.sh), built and run here with buildah.

Inside the image, with its own Python and only the runtime dependencies: every handler of
infra/template.yaml imports; a delivery ingests into a local archive; and the real entry
point (`python3 -m awslambdaric`) fetches API Gateway events from a Lambda Runtime API
served on 127.0.0.1 (infra/image/runtime_api.py) and answers a VOSI availability, a TAP
cone search, an SIA query, a DataLink request and a cutout. The answers are checked
against the delivery records (brute-force geometry) and the parent FITS file (pixels).

Slow (debootstrap + wheels on a fresh machine, minutes); reuses an image already built
from the same inputs. Skips without buildah/debootstrap (.ci/run installs them) or root.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table

from chalicelib.devtools.benchmarks.bench_coldstart import proxy_event  # the same events
from tests.support.fitscheck import cutout_matches_parent

ROOT = Path(__file__).resolve().parents[1]
IMAGE_DIR = ROOT / "infra" / "image"
pytestmark = pytest.mark.slow

BUILDAH = ["buildah", "--storage-driver", "vfs"]


def _have_tools() -> str | None:
    if not (shutil.which("buildah") and shutil.which("debootstrap")):
        return "buildah/debootstrap not installed (apt-get install -y buildah debootstrap)"
    if os.geteuid() != 0:
        return "building the image needs root (debootstrap, buildah vfs)"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    why = _have_tools()
    if why:
        pytest.skip(why)
    out = subprocess.run(["bash", str(IMAGE_DIR / "build.sh")], capture_output=True,
                         text=True, timeout=3600, env={**os.environ, "PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def container(image, tmp_path_factory):
    """A working container of the image; yields (name, mount point on this machine)."""
    name = subprocess.run(BUILDAH + ["from", "--pull-never", "localhost/" + image],
                          capture_output=True, text=True, check=True).stdout.strip()
    mnt = Path(subprocess.run(BUILDAH + ["mount", name], capture_output=True, text=True,
                              check=True).stdout.strip())
    yield name, mnt
    subprocess.run(BUILDAH + ["umount", name], capture_output=True)
    subprocess.run(BUILDAH + ["rm", name], capture_output=True)


def run_in(container, *cmd: str, env: dict[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    """A command inside the image (its environment as configured, plus `env`)."""
    name, _ = container
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(BUILDAH + ["run", "--isolation", "chroot", *flags, name, "--",
                                     *cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workspace(container, tmp_path_factory):
    """Two synthetic weeks: the first ingested here into an archive copied into the
    image at /work-test/archive, the second copied in as a delivery to ingest there."""
    from chalicelib.devtools.synth import synthesize
    from chalicelib.ingest.delivery import ingest
    from chalicelib.lake.storage import Archive

    out = tmp_path_factory.mktemp("image-synth")
    weeks = synthesize(out, weeks=2, image_size=64, images_per_week=12, seed=11)
    arch = out / "archive"
    ingest(weeks[0], Archive.from_env(str(arch)))
    _, mnt = container
    work = mnt / "work-test"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copytree(arch, work / "archive")
    shutil.copytree(weeks[1], work / "delivery")
    shutil.copy(IMAGE_DIR / "runtime_api.py", work / "runtime_api.py")
    planes = pa.concat_tables([pq.read_table(w / "plane.parquet") for w in weeks])
    return {"work": work, "planes": planes, "weeks": weeks}


def _template_handlers() -> list[str]:
    text = (ROOT / "infra" / "template.yaml").read_text()
    return sorted(set(re.findall(r"Command:\s*\[([\w.]+)\]", text)))


def test_image_runs_its_handlers_ingests_and_answers(container, workspace) -> None:
    env = {"ARCHIVE_URL": "/work-test/archive", "RATE_LIMIT": "0"}
    handlers = _template_handlers()
    assert len(handlers) >= 7
    # the image's own Python, only the runtime packages: every handler imports
    probe = ("import importlib, importlib.util, json, sys\n"
             f"for h in {handlers!r}:\n"
             "    mod, fn = h.rsplit('.', 1)\n"
             "    assert callable(getattr(importlib.import_module(mod), fn)), h\n"
             "import app\n"
             "missing = [m for m in ('pytest', 'moto', 'pyvo', 'photutils', 'lsdb')\n"
             "           if importlib.util.find_spec(m) is not None]\n"
             "print(json.dumps({'python': sys.version.split()[0], 'test_packages': missing,\n"
             "                  'routes': len(app.app.routes)}))\n")
    r = run_in(container, "python3", "-c", probe, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["python"].startswith("3.11.") and info["test_packages"] == []
    assert info["routes"] > 10

    # the numba kernels load from the cache compiled at build time (copied from the
    # read-only seed into /tmp on this cold start): hits only, no compilation
    kernels = ("import json\n"
               "from chalicelib.geometry import sky\n"
               "sky.warm_up()\n"
               "ks = [getattr(sky, n) for n in dir(sky) if n.startswith('_k_')]\n"
               "print(json.dumps({'kernels': len(ks),\n"
               "  'hits': sum(sum(k.stats.cache_hits.values()) for k in ks),\n"
               "  'misses': sum(sum(k.stats.cache_misses.values()) for k in ks)}))\n")
    r = run_in(container, "python3", "-c", kernels, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["kernels"] >= 5 and stats["hits"] >= 3 and stats["misses"] == 0, stats

    # an ingest of the second week, inside the image
    ingest = ("import json\n"
              "from chalicelib.ingest.delivery import ingest\n"
              "from chalicelib.lake.storage import Archive\n"
              "s = ingest('/work-test/delivery', Archive.from_env('/work-test/archive'))\n"
              "print(json.dumps({'release': s.release, 'skipped': s.skipped}))\n")
    r = run_in(container, "python3", "-c", ingest, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary == {"release": 2, "skipped": False}

    planes = workspace["planes"]
    imgs = planes.filter(pa.compute.is_valid(planes["poly"]))
    week2 = set(pq.read_table(workspace["weeks"][1] / "plane.parquet")["obs_publisher_did"]
                .to_pylist())
    row = next(r for r in imgs.to_pylist() if r["obs_publisher_did"] in week2)
    ra, dec = row["s_ra"] + 0.2, row["s_dec"] - 0.1
    key = row["access_url"].split("/data/", 1)[1] if "/data/" in (row.get("access_url") or "") \
        else None
    cone = (f"SELECT obs_publisher_did FROM ivoa.obscore "
            f"WHERE CONTAINS(POINT('ICRS', {ra}, {dec}), s_region) = 1")
    runs = {
        "availability": proxy_event("/tap/availability"),
        "tap": proxy_event("/tap/sync", query={"REQUEST": "doQuery", "LANG": "ADQL",
                                               "QUERY": cone}),
        "sia": proxy_event("/sia/query", query={"POS": f"CIRCLE {ra} {dec} 0.001"}),
        "datalink": proxy_event("/datalink/links", query={"ID": row["obs_publisher_did"]}),
    }
    api_env = {**env, "WITHOUT_PANDAS": "1"}  # the API function's (test_infra checks it)
    plan = {"runs": [{"name": n, "handler": "chalicelib.lambdas.handlers.api", "event": e,
                      "warm": 1, "env": api_env, "log": "/work-test/" + n + ".log"}
                     for n, e in runs.items()]}
    results = _drive(container, workspace, plan)

    assert "error" not in results["availability"], results["availability"]
    assert b"<vosi:available>true</vosi:available>" in _body(results["availability"])

    table = _votable(results["tap"])
    got = set(table["obs_publisher_did"].tolist())
    assert got == _brute_contains(imgs, ra, dec) and row["obs_publisher_did"] in got

    sia_ids = set(_votable(results["sia"])["obs_publisher_did"].tolist())
    assert row["obs_publisher_did"] in sia_ids and sia_ids <= got | sia_ids

    # the catalogue bound every view from the bind files seeded at build: none written
    r = run_in(container, "sh", "-c", "ls /tmp/catalogue-bind 2>/dev/null | wc -l")
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stdout

    links = _votable(results["datalink"])
    this = [i for i, s in enumerate(links["semantics"]) if s == "#this"]
    assert len(this) == 1
    access = str(links["access_url"][this[0]])
    key = access.split("/data/", 1)[1]

    # a cutout of that image, through the same entry point, pixel for pixel
    cut_plan = {"runs": [{"name": "cutout", "handler": "chalicelib.lambdas.handlers.api",
                          "event": proxy_event("/cutout/" + key,
                                               query={"ra": str(row["s_ra"]),
                                                      "dec": str(row["s_dec"]),
                                                      "size": "0.2"}),
                          "warm": 0, "env": api_env}]}
    cut = _drive(container, workspace, cut_plan)["cutout"]
    body = _body(cut)
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    parent = fits.open(workspace["work"] / "archive" / "data" / key)
    cutout_matches_parent(fits.open(io.BytesIO(body)), parent, ("IMAGE", "FLAGS", "VARIANCE"))
    for res in results.values():
        print(f"{res['name']}: cold {res['cold_s']:.2f} s, warm {res['warm_s']}")


def _drive(container, workspace, plan: dict) -> dict[str, dict]:
    (workspace["work"] / "plan.json").write_text(json.dumps(plan))
    r = run_in(container, "python3", "/work-test/runtime_api.py", "/work-test/plan.json",
               timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    results = {res["name"]: res for res in out["results"]}
    for name, res in results.items():
        log = workspace["work"] / f"{name}.log"
        assert "error" not in res, (name, res.get("error"),
                                    log.read_text()[-3000:] if log.exists() else "")
        assert res["response"]["statusCode"] == 200, (name, res["response"])
    return results


def _body(result: dict) -> bytes:
    resp = result["response"]
    body = resp.get("body") or ""
    return base64.b64decode(body) if resp.get("isBase64Encoded") else body.encode()


def _votable(result: dict):
    return parse_single_table(io.BytesIO(_body(result))).to_table(use_names_over_ids=True)


def _brute_contains(imgs: pa.Table, ra: float, dec: float) -> set[str]:
    """Images whose footprint contains (ra, dec), by direct geometry on the records."""
    from chalicelib.geometry import sky

    inside = sky.points_in_polys(np.broadcast_to(sky.xyz(ra, dec), (imgs.num_rows, 3)),
                                 sky.Polys.from_arrow(imgs["poly"]))
    return set(np.asarray(imgs["obs_publisher_did"].to_pylist())[inside])

