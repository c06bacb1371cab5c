"""A week bigger than the ingest function's /tmp, checked and moved in place on S3.

S3 is a moto server in its own process (its memory and disk are not ours), so what this
process allocates and writes is the ingest's alone: traced with tracemalloc, and /tmp
(tempfile's folder) watched by a thread. The fan-out runs the real ASL in moto's Step
Functions with the Lambda tasks routed in-process to the handler, as tests/test_infra.py
does for the other state machines.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from moto import mock_aws
from moto.awslambda.models import LambdaFunction

from chalicelib import config
from chalicelib.cutout.fitsrange import hdu_names
from chalicelib.devtools.benchmarks.bench_ingest_s3 import start_moto
from chalicelib.ingest import streaming
from chalicelib.ingest.delivery import DeliveryError
from chalicelib.lake import releases
from chalicelib.lake.storage import Archive
from chalicelib.lambdas import handlers
from chalicelib.query.catalogue import Catalogue

ROOT = Path(__file__).resolve().parents[3]
ASL = ROOT / "infra/statemachines/ingest.asl.json"
REGION = "us-east-1"
TMP_LIMIT = 8 << 20  # the function's /tmp in these tests: ~10x less than the delivery
PART = 5 << 20  # S3's smallest multipart part


@pytest.fixture(scope="module")
def s3_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server in a subprocess on a free loopback port; stopped after."""
    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto-tmp"))
    yield endpoint
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from chalicelib.devtools.synth import synthesize

    [folder] = synthesize(tmp_path_factory.mktemp("week"), weeks=1, image_size=512,
                          images_per_week=6)
    return Path(folder)


@pytest.fixture
def buckets(s3_process: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    n = os.urandom(5).hex()
    env = {"S3_ENDPOINT_URL": s3_process, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
           "AWS_REGION": REGION, "ARCHIVE_URL": f"s3://archive-{n}",
           "INGEST_TMP_BYTES": str(TMP_LIMIT), "INGEST_BATCH_FILES": "16",
           "INGEST_COPY_THRESHOLD": str(PART), "INGEST_PART_BYTES": str(PART),
           "INGEST_HASH_CHUNK": str(1 << 20), "INGEST_WORKERS": "4", "MERGE_EVERY": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("INGEST_STATE_MACHINE_ARN", raising=False)
    config.reset()
    handlers.reset()
    s3 = boto3.client("s3", endpoint_url=s3_process, region_name=REGION)
    s3.create_bucket(Bucket=f"archive-{n}")
    s3.create_bucket(Bucket=f"inbox-{n}")
    yield s3, f"inbox-{n}"
    config.reset()
    handlers.reset()


def upload_mixed(s3: Any, bucket: str, folder: Path, prefix: str,
                 corrupt: str | None = None) -> dict[str, Any]:
    """Upload a delivery three ways, so every checksum path runs: multipart (the ETag is
    no MD5: hashed as it streams), with a SHA-256 S3 keeps (listed in the manifest), and
    a plain PUT (ETag = MD5). Manifest last; returns its S3 event."""
    manifest = json.loads((folder / "manifest.json").read_text())
    multipart = TransferConfig(multipart_threshold=256 << 10, multipart_chunksize=PART)
    for i, f in enumerate(manifest["files"]):
        path, key = folder / "data" / f["key"], prefix + "data/" + f["key"]
        body = path.read_bytes()
        if f["key"] == corrupt:
            body = body[:-1] + bytes([body[-1] ^ 1])
        if i % 3 == 0:
            s3.upload_fileobj(io.BytesIO(body), bucket, key, Config=multipart)
        elif i % 3 == 1:
            f["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
    for name in ("observation", "plane", "artifact", "provenance"):
        entry = manifest["tables"][name]["file"]
        s3.upload_file(str(folder / entry), bucket, prefix + entry)
    s3.put_object(Bucket=bucket, Key=prefix + "manifest.json", Body=json.dumps(manifest))
    return {"Records": [{"s3": {"bucket": {"name": bucket},
                                "object": {"key": prefix + "manifest.json"}}}]}


class TmpWatcher:
    """The most bytes ever present under tempfile's folder, sampled every few ms."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak, self._stop = root, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            used = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
            self.peak = max(self.peak, used)
            time.sleep(0.005)

    def __enter__(self) -> TmpWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def function_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "function-tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _invoke_in_process(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
    payload = json.loads(event) if isinstance(event, str) else event
    try:
        out = handlers.ingest_from_s3(payload, None)
    except Exception as exc:  # the Lambda runtime's error answer
        return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}), \
            True, ""
    return json.dumps(out), False, ""


@pytest.fixture
def machine(buckets: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The ingest ASL in moto's executing Step Functions, its Lambda the real handler."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        monkeypatch.setattr(LambdaFunction, "_invoke_lambda", _invoke_in_process)
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="ingest", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        fn = boto3.client("lambda", region_name=REGION).create_function(
            FunctionName="ingest", Role=role, PackageType="Image",
            Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1"})
        sfn = boto3.client("stepfunctions", region_name=REGION)
        text = ASL.read_text().replace("${IngestFunctionArn}", fn["FunctionArn"])
        arn = sfn.create_state_machine(name="ingest", definition=text,
                                       roleArn=role)["stateMachineArn"]
        monkeypatch.setenv("INGEST_STATE_MACHINE_ARN", arn)
        config.reset()
        handlers.reset()
        yield sfn
        handlers.reset()


def _wait(sfn: Any, arn: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ex = sfn.describe_execution(executionArn=arn)
        if ex["status"] != "RUNNING":
            return ex
        time.sleep(0.2)
    raise AssertionError(f"{arn} still running")


def _status(s3: Any, bucket: str, prefix: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=bucket, Key=prefix + "_status.json")["Body"].read())


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


def test_a_week_bigger_than_tmp_fans_out_and_commits_once(
        buckets: tuple[Any, str], machine: Any, week: Path, function_tmp: Path) -> None:
    s3, inbox = buckets
    manifest = json.loads((week / "manifest.json").read_text())
    total = sum(f["size"] for f in manifest["files"])
    assert total > 8 * TMP_LIMIT  # the old download-to-/tmp path could not hold it
    event = upload_mixed(s3, inbox, week, "weekly/2025W35/")

    # what a warm container has loaded already: clients (botocore's service models)
    for service in ("s3", "stepfunctions"):
        handlers._client(service)
    tracemalloc.start()
    with TmpWatcher(function_tmp) as tmp:
        [started] = handlers.ingest_from_s3(event)["deliveries"]
        assert started["state"] == "running" and started["batches"] == 4  # 60 files / 16
        done = _wait(machine, started["execution"])
        _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert done["status"] == "SUCCEEDED", done
    status = _status(s3, inbox, "weekly/2025W35/")
    assert (status["state"], status["release"], status["files"]) == ("ok", 1, 60)

    # flat: nothing of the delivery in /tmp; memory is 4 batches at once x 4 workers x
    # a 1 MiB chunk plus per-step clients, not the 120 MB moved (bench ingest --s3 shows
    # it stays put as deliveries grow)
    assert tmp.peak < TMP_LIMIT and tmp.peak < 1 << 20, tmp.peak
    assert peak < min(64 << 20, total / 2), (peak, total)

    # every file arrived intact, through every path: checksums from S3 and streamed,
    # plain and multipart server-side copies
    arch = Archive.from_env()
    # moto gives a part-copied object its source's CRC (AWS computes it anew): compare
    # the bytes themselves
    plain = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], region_name=REGION,
                         config=Config(response_checksum_validation="when_required"))
    for f in manifest["files"]:
        body = plain.get_object(Bucket=arch.bucket, Key="data/" + f["key"])["Body"].read()
        assert hashlib.md5(body).hexdigest() == f["md5"], f["key"]
    markers = [json.loads(s3.get_object(Bucket=arch.bucket, Key=k)["Body"].read())
               for k in _keys(s3, arch.bucket, streaming.STAGING)]
    moved = streaming.Stats()
    for m in markers:
        moved.add(streaming.Stats(m["files"], m["bytes"], m["bytes_read"], m["checksums"],
                                  m["copies"]))
    assert moved.files == 60 and moved.bytes == total
    assert moved.checksums == {"streamed": 20, "s3-sha256": 20, "s3-md5": 20}
    big = sum(f["size"] > PART for f in manifest["files"])  # Level 2 images, some cals
    assert big > 0 and moved.copies == {"multipart": big, "copy": 60 - big}
    hashed = sum(f["size"] for i, f in enumerate(manifest["files"]) if i % 3 == 0)
    assert hashed <= moved.bytes_read < hashed + 60 * 200_000  # + headers: KB per file

    planes = Catalogue(arch).query("SELECT COUNT(*) AS n FROM spherex.plane")
    assert planes.column("n")[0].as_py() == 60

    # S3 delivers at least once: the same manifest again commits nothing
    [again] = handlers.ingest_from_s3(event)["deliveries"]
    assert (again["state"], again["skipped"], again["release"]) == ("ok", True, 1)
    assert releases.numbers(arch) == [1]


def test_a_bad_file_in_one_batch_releases_nothing_and_a_rerun_commits_once(
        buckets: tuple[Any, str], machine: Any, week: Path) -> None:
    s3, inbox = buckets
    manifest = json.loads((week / "manifest.json").read_text())
    bad = manifest["files"][50]["key"]  # in the fourth batch; the others copy fine
    event = upload_mixed(s3, inbox, week, "w/", corrupt=bad)
    [started] = handlers.ingest_from_s3(event)["deliveries"]
    done = _wait(machine, started["execution"])
    assert done["status"] == "FAILED"
    status = _status(s3, inbox, "w/")
    assert status["state"] == "rejected" and bad in status["message"]
    assert "Nothing was committed" in status["message"]
    arch = Archive.from_env()
    assert releases.numbers(arch) == []  # no partial release
    assert Catalogue(arch).query("SELECT COUNT(*) AS n FROM ivoa.obscore").column(
        "n")[0].as_py() == 0

    # the operator re-uploads the file and the manifest: one commit, every row once
    s3.upload_file(str(week / "data" / bad), inbox, "w/data/" + bad)
    [again] = handlers.ingest_from_s3(event)["deliveries"]
    assert _wait(machine, again["execution"])["status"] == "SUCCEEDED"
    assert releases.numbers(arch) == [1]
    n = Catalogue(arch).query("SELECT COUNT(*) AS n FROM spherex.plane").column("n")[0]
    assert n.as_py() == 60


def test_in_place_checks_reject_what_the_local_checks_reject(
        buckets: tuple[Any, str], week: Path) -> None:
    s3, inbox = buckets
    manifest = json.loads((week / "manifest.json").read_text())
    level2 = next(f for f in manifest["files"] if "/level2/" in f["key"])
    src = Archive(f"s3://{inbox}/x")
    arch = Archive.from_env()
    upload_mixed(s3, inbox, week, "x/")

    def check(entry: dict) -> streaming.Stats:
        return streaming.check_file(src, arch, entry, hdu_names)

    assert check(level2).files == 1
    with pytest.raises(DeliveryError, match="bytes, the manifest says"):
        check({**level2, "size": level2["size"] + 1})
    with pytest.raises(DeliveryError, match="checksum"):
        check({**level2, "md5": "0" * 32})
    with pytest.raises(DeliveryError, match="is missing"):
        check({**level2, "key": level2["key"] + ".gone"})
    s3.put_object(Bucket=inbox, Key="x/data/junk.fits", Body=b"not a FITS file" * 500)
    with pytest.raises(DeliveryError, match="not readable FITS"):
        check({"key": "junk.fits", "size": 7500})
    # a FITS file with the wrong HDUs for a Level 2 image
    cal = next(f for f in manifest["files"] if "/calibration/" in f["key"])
    body = (week / "data" / cal["key"]).read_bytes()
    fake = "qr2/level2/fake/x.fits"
    s3.put_object(Bucket=inbox, Key="x/data/" + fake, Body=body)
    with pytest.raises(DeliveryError, match="expected"):
        check({"key": fake, "size": len(body), "md5": cal["md5"]})
