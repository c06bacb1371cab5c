"""Spectrophotometry: forced PSF photometry against the synthetic truth, the UWS job end to
end, flagged (never fatal) bad epochs, parameter limits and range-read economy."""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from chalicelib.jobs.uws import UWSUsageError

BASE = "http://phot.test"


@pytest.fixture(scope="module")
def phot_env(tmp_path_factory):
    """One week of 256 px images (the 64 px session archive undersamples the PSF too much
    for a 3 % check), ingested into its own archive that runtime and jobs point at."""
    from chalicelib.devtools.synth import synthesize
    from chalicelib.ingest.delivery import ingest
    from chalicelib.jobs import runtime as jobs
    from chalicelib.lake.storage import Archive
    from chalicelib.query import runtime

    out = tmp_path_factory.mktemp("phot-synth")
    synthesize(out, weeks=1, image_size=256, images_per_week=24, seed=7)
    root = tmp_path_factory.mktemp("phot-archive")
    arch = Archive.from_env(str(root))
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        ingest(d, arch)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHIVE_URL", str(root))
        mp.delenv("JOBS_DIR", raising=False)
        mp.delenv("SPECTROPHOTOMETRY_STATE_MACHINE_ARN", raising=False)
        runtime.reset()
        jobs.reset()
        yield {"archive": runtime.archive(), "truth": pq.read_table(out / "truth.parquet")}
        jobs.reset()
        runtime.reset()


def _catalogue():
    from chalicelib.query import runtime

    return runtime.catalogue(BASE)


def _request(truth, n: int | None = None, **extra: list[str]):
    from chalicelib.photometry import steps

    rows = truth.to_pylist()[:n]
    params = {"point": [f"{r['ra']},{r['dec']}" for r in rows], **extra}
    return steps.parse(params), rows


def test_fluxes_match_truth(phot_env) -> None:
    from chalicelib.photometry import engine, steps

    req, rows = _request(phot_env["truth"])
    items, _ = steps.plan_items(_catalogue(), req)
    assert len({it[0] for it in items}) == len(rows)  # every source is on some image
    meas = steps.measure_items(phot_env["archive"], req.sources, items, req.half)
    rel, pull = [], []
    for m in meas:
        if m["flags"] & engine.SERIOUS_FLAGS or not math.isfinite(m["flux"]):
            continue
        src = rows[m["source"]]
        truth = np.interp(m["lam"], src["wavelength_um"], src["flux_ujy"])
        rel.append(m["flux"] / truth - 1)
        pull.append((m["flux"] - truth) / m["flux_err"])
    assert len(rel) >= 0.8 * len(meas) and len(rel) > 50
    assert np.median(np.abs(rel)) < 0.01  # the brief asks for 3 %; we get ~0.02 %
    assert 0.7 < np.std(pull) < 1.5
    assert abs(np.median(pull)) < 0.5


def _handle(rest: str, method: str, params):
    """The service's entry point, as app.py calls it, for an anonymous caller."""
    from chalicelib.services import photometry as service
    from chalicelib.web.request import Request

    return service.handle(Request(method, params, BASE, {"rest": rest}))


def _wait(job_id: str, timeout: float = 60):
    from chalicelib.jobs import runtime as jobs

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = jobs.store().get(job_id)
        if job.phase in ("COMPLETED", "ERROR", "ABORTED"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def _result(phot_env, job, name: str) -> bytes:
    href = next(r["href"] for r in job.results if r["id"] == name)
    return phot_env["archive"].read_bytes(href.split(":", 1)[1])


def test_job_end_to_end(phot_env) -> None:
    from astropy.io.votable import parse
    from pyvo.dal.query import DALResults

    from chalicelib.web.params import Params

    rows = phot_env["truth"].to_pylist()[:4]
    pairs = [("POINT", f"{r['ra']},{r['dec']}") for r in rows] + [("PHASE", "RUN")]
    reply = _handle("async", "POST", Params(pairs))
    assert reply.status == 303
    job = _wait(reply.headers["Location"].rsplit("/", 1)[1])
    assert job.phase == "COMPLETED", job.error_summary
    ids = {r["id"] for r in job.results}
    assert {"result", "long", "long-parquet", "plot-1", "plot-4"} <= ids

    body = _result(phot_env, job, "result")
    table = parse(io.BytesIO(body)).get_first_table().to_table()
    assert list(table["source_id"]) == [1, 2, 3, 4]
    assert str(table["flux"].unit) == "uJy" and str(table["lambda"].unit) == "um"
    n = [len(v) for v in table["flux"]]
    assert all(k >= 1 for k in n)
    assert [len(s.split()) for s in table["obs_publisher_did"]] == n
    assert table["flags"][0].dtype == np.int64
    assert len(DALResults(parse(io.BytesIO(body)), url=BASE).to_table()) == 4

    long = parse(io.BytesIO(_result(phot_env, job, "long"))).get_first_table().to_table()
    assert len(long) == sum(n)
    parquet = pq.read_table(io.BytesIO(_result(phot_env, job, "long-parquet")))
    assert parquet.num_rows == sum(n) and "obs_publisher_did" in parquet.column_names
    assert _result(phot_env, job, "plot-1").startswith(b"\x89PNG")


def test_capabilities_and_validation_over_http(phot_env) -> None:
    from chalicelib.web.params import Params

    assert "UWS#async-1.1" in _handle("capabilities", "GET", Params()).body
    assert _handle("async", "POST", Params([("PHASE", "RUN")])).status == 400
    assert _handle("nothing", "GET", Params()).status == 404


@pytest.mark.parametrize("params, message", [
    ({}, "POINT"),
    ({"point": ["1,2"] * 1001}, "limit per job is 1000"),
    ({"point": ["1,100"]}, "sky position"),
    ({"point": ["1"]}, "POINT"),
    ({"point": ["1,2"], "bkg_region_size": ["1"]}, "BKG_REGION_SIZE"),
    ({"point": ["1,2"], "time": ["60001 60000"]}, "TIME"),
    ({"point": ["1,2"], "max_images": ["0"]}, "MAX_IMAGES"),
])
def test_parameter_errors(params, message) -> None:
    from chalicelib.photometry import steps

    with pytest.raises(UWSUsageError, match=message):
        steps.parse(params)


def test_image_limit_is_an_error_not_a_truncation(phot_env, monkeypatch) -> None:
    from chalicelib.photometry import steps

    req, _ = _request(phot_env["truth"], 10)
    monkeypatch.setattr(steps, "MAX_IMAGES_PER_JOB", 3)
    with pytest.raises(UWSUsageError, match="limit per job is 3"):
        steps.plan_items(_catalogue(), req)


def test_filters_and_max_images(phot_env) -> None:
    from chalicelib.photometry import steps

    cat = _catalogue()
    req, _ = _request(phot_env["truth"], 20)
    items, _ = steps.plan_items(cat, req)
    deep, _ = steps.plan_items(cat, _request(phot_env["truth"], 20,
                                             collection=["spherex_qr2_deep"])[0])
    assert {it[3] for it in deep} <= {"spherex_qr2_deep"} and len(deep) < len(items)
    req1, _ = _request(phot_env["truth"], 20, max_images=["1"])
    one, notes = steps.plan_items(cat, req1)
    assert len(one) == len({it[0] for it in items})
    assert sum(notes["skipped_by_max_images"].values()) == len(items) - len(one)
    none, _ = steps.plan_items(cat, _request(phot_env["truth"], 20, time=["1 2"])[0])
    assert none == []
    blue, _ = steps.plan_items(cat, _request(phot_env["truth"], 20, band=["7e-7 1e-6"])[0])
    assert 0 < len(blue) < len(items)


def _nan_image_copy(arch, key: str) -> str:
    """The file with every IMAGE pixel NaN, stored under a new key."""
    from chalicelib.cutout.fitsrange import RangeReader, read_layout

    data = bytearray(arch.read_bytes(key))
    image = read_layout(RangeReader(arch, key)).image()
    nan = np.full(image.data_bytes // 4, np.nan, ">f4").tobytes()
    data[image.data_start:image.data_start + len(nan)] = nan
    new = key.replace(".fits", "-nan.fits")
    arch.write_bytes(new, bytes(data))
    return new


def test_bad_images_give_flagged_measurements(phot_env) -> None:
    from chalicelib.photometry import engine, steps

    arch = phot_env["archive"]
    req, _ = _request(phot_env["truth"], 1)
    items, _ = steps.plan_items(_catalogue(), req)
    key = items[0][1]
    src = req.sources[0]
    arch.write_bytes("data/broken.fits", b"SIMPLE  = not a fits file" * 200)
    cases = [
        ("data/broken.fits", src["ra"], src["dec"], engine.FLAG_READ_ERROR),
        ("data/missing.fits", src["ra"], src["dec"], engine.FLAG_READ_ERROR),
        (key, (src["ra"] + 180) % 360, -src["dec"], engine.FLAG_OFF_IMAGE),
        (_nan_image_copy(arch, key), src["ra"], src["dec"], engine.FLAG_NO_DATA),
    ]
    for path, ra, dec, bit in cases:
        m = engine.measure(arch, path, ra, dec)
        assert m.flags & bit, (path, hex(m.flags), m.error)
        assert math.isnan(m.flux)
    good = engine.measure(arch, key, src["ra"], src["dec"])
    assert math.isfinite(good.flux) and not good.flags & engine.SERIOUS_FLAGS


def test_range_reads_are_small(phot_env) -> None:
    from chalicelib.cutout.fitsrange import clear_caches
    from chalicelib.photometry import engine, steps

    arch = phot_env["archive"]
    req, _ = _request(phot_env["truth"], 5)
    items, _ = steps.plan_items(_catalogue(), req)
    clear_caches()
    for src_index, key, *_ in items:
        src = req.sources[src_index]
        cold = engine.measure(arch, key, src["ra"], src["dec"])
        warm = engine.measure(arch, key, src["ra"], src["dec"])
        size = arch.size(key)
        assert 0 < warm.bytes_read <= cold.bytes_read < 0.15 * size
        assert warm.bytes_read < 0.06 * size  # headers cached: stamp rows + one PSF plane


def test_step_functions_steps(phot_env) -> None:
    """plan -> measure per batch -> assemble with one failed batch, as the state machine
    calls them; the failed batch becomes flagged rows and the job completes."""
    from astropy.io.votable import parse

    from chalicelib.jobs import runtime as jobs
    from chalicelib.photometry import engine, steps
    from chalicelib.web.params import Params

    rows = phot_env["truth"].to_pylist()[:12]
    pairs = [("POINT", f"{r['ra']},{r['dec']}") for r in rows]
    reply = _handle("async", "POST", Params(pairs))
    job_id = reply.headers["Location"].rsplit("/", 1)[1]
    store = jobs.store()
    store.update_if(job_id, None, phase="EXECUTING")
    event = {"job_id": job_id, "service": steps.SERVICE,
             "parameters": store.get(job_id).parameters}
    planned = steps.plan(event)
    assert len(planned["batches"]) >= 2
    outs = [steps.measure({"job_id": job_id, "service": steps.SERVICE, "index": i,
                           "batch": b}) for i, b in enumerate(planned["batches"])]
    assert all(len(str(o)) < 1000 for o in outs)  # Map output stays small
    outs[0] = {"index": 0, "batch": planned["batches"][0], "failed": True,
               "error": {"Error": "Lambda.Unknown", "Cause": "boom"}}
    done = steps.assemble({"job_id": job_id, "service": steps.SERVICE, "plan": planned,
                           "measurements": outs})
    assert done["completed"]
    job = store.get(job_id)
    assert job.phase == "COMPLETED"
    long = parse(io.BytesIO(_result(phot_env, job, "long"))).get_first_table().to_table()
    failed = (long["flags"] & engine.FLAG_BATCH_FAILED) != 0
    assert failed.sum() == len(planned["batches"][0])
    assert b"Lambda.Unknown: boom" in _result(phot_env, job, "result")  # INFO: why
    flux = np.ma.filled(long["flux"], np.nan)  # NaN is written as an empty (null) cell
    assert np.isnan(flux[failed]).all() and np.isfinite(flux[~failed]).mean() > 0.8


def test_plan_too_large_for_the_state_goes_to_the_archive(phot_env, monkeypatch) -> None:
    from chalicelib.photometry import steps

    monkeypatch.setattr(steps, "INLINE_PLAN_BYTES", 10)
    rows = phot_env["truth"].to_pylist()[:3]
    event = {"job_id": "plan-ref", "parameters": {"point": [f"{r['ra']},{r['dec']}"
                                                            for r in rows]}}
    planned = steps.plan(event)
    assert all(set(b) == {"ref"} for b in planned["batches"])
    out = steps.measure({"job_id": "plan-ref", "index": 0, "batch": planned["batches"][0]})
    assert out["n"] > 0



def test_header_shortcuts_match_astropy(phot_env) -> None:
    """The WCS and WCS-WAVE built from raw cards agree with astropy's readers."""
    from astropy.wcs import WCS

    from chalicelib.cutout.fitsrange import RangeReader, read_layout
    from chalicelib.cutout.wavetab import WaveTable
    from chalicelib.photometry import fileinfo, steps

    req, _ = _request(phot_env["truth"], 3)
    items, _ = steps.plan_items(_catalogue(), req)
    pix = np.random.default_rng(1).uniform(0, 255, (50, 2))
    for key in {it[1] for it in items}:
        layout = read_layout(RangeReader(phot_env["archive"], key))
        image = layout.image()
        ours, ref = fileinfo.sky_wcs(layout, image), WCS(image.header, naxis=2, fix=False)
        assert np.abs(ours.all_pix2world(pix, 0) - ref.all_pix2world(pix, 0)).max() < 1e-9
        table = layout.find("WCS-WAVE")
        wave = WaveTable.parse(image.header, table.header, layout.small[table.index])
        lookup = fileinfo.wave_lookup(layout, image)
        for x, y in pix[:10]:
            expect = wave.grid(np.array([x]), np.array([y]))[0, 0]
            assert np.allclose(lookup.at(x, y), expect, rtol=1e-12)


def _votable(rows: list[dict], ids: bool) -> bytes:
    from astropy.table import Table

    cols = {"ra": [r["ra"] for r in rows], "dec": [r["dec"] for r in rows]}
    if ids:
        cols = {"source_id": [r["source_id"] for r in rows], **cols}
    buf = io.BytesIO()
    Table(cols).write(buf, format="votable")
    return buf.getvalue()


def test_upload_of_a_source_table(phot_env) -> None:
    from astropy.io.votable import parse

    from chalicelib.web.params import Params, Upload

    rows = phot_env["truth"].to_pylist()[:3]
    files = {"src": Upload("src.xml", _votable(rows, ids=True))}
    pairs = [("UPLOAD", "src,param:src"), ("POINT", f"{rows[0]['ra']},{rows[0]['dec']}"),
             ("PHASE", "RUN")]
    reply = _handle("async", "POST", Params(pairs, files))
    assert reply.status == 303, reply.body
    job = _wait(reply.headers["Location"].rsplit("/", 1)[1])
    assert job.phase == "COMPLETED", job.error_summary
    table = parse(io.BytesIO(_result(phot_env, job, "result"))).get_first_table().to_table()
    assert list(table["source_id"]) == [1] + [r["source_id"] for r in rows]
    assert all(len(v) >= 1 for v in table["flux"])
    assert {f"plot-{rows[2]['source_id']}", "plot-1"} <= {r["id"] for r in job.results}


def test_upload_errors(phot_env) -> None:
    from chalicelib.web.params import Params, Upload

    rows = phot_env["truth"].to_pylist()[:2]
    bad = [({"src": Upload("x", b"not a votable")}, "not a readable VOTable"),
           ({"src": Upload("x", _votable(rows * 501, ids=False))}, "limit per job is 1000"),
           ({"src": Upload("x", _votable(rows * 2, ids=True))}, "unique")]
    for files, message in bad:
        reply = _handle("async", "POST", Params([("UPLOAD", "src,param:src")], files))
        assert reply.status == 400 and message in reply.body.decode(), reply.body
