"""Shared fixtures: synthetic deliveries, built archives, moto S3 and the local server.

Servers bind 127.0.0.1 on ports picked at run time and are stopped at the end.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ["QUIET_HTTP"] = "1"
# The per-caller rate limit would make request-heavy tests depend on the machine's speed;
# the tests of the limiter install their own (tests/test_defects.py).
os.environ["RATE_LIMIT"] = "0"
# Merges publish the HATS copy with hats-import (seconds each); only the HATS tests
# (tests/unit/ingest/test_hats.py) turn it on.
os.environ["HATS_PUBLISH"] = "0"


@pytest.fixture(autouse=True)
def fresh_settings():
    """Each test reads the settings from the environment it sets up (chalicelib.config
    keeps them per process); a test changing the environment mid-way resets them too."""
    from chalicelib import config

    config.reset()
    yield
    config.reset()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """Two weekly deliveries of small FITS images (64 px, the field stays 3.485 deg)."""
    from chalicelib.devtools.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, weeks=2, image_size=64, images_per_week=24, seed=7)
    return out


@pytest.fixture(scope="session")
def deliveries(synth_dir) -> list[Path]:
    return sorted(p for p in synth_dir.iterdir() if p.is_dir())


@pytest.fixture(scope="session")
def archive(tmp_path_factory, deliveries):
    """A local archive with both synthetic deliveries ingested."""
    from chalicelib.ingest.delivery import ingest
    from chalicelib.lake.storage import Archive

    arch = Archive.from_env(str(tmp_path_factory.mktemp("archive")))
    for d in deliveries:
        ingest(d, arch)
    return arch


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto's S3/DynamoDB/Step Functions server on loopback, for the S3 code paths."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    old = os.environ.get("S3_ENDPOINT_URL")
    os.environ["S3_ENDPOINT_URL"] = endpoint
    yield endpoint
    if old is None:
        os.environ.pop("S3_ENDPOINT_URL", None)
    else:
        os.environ["S3_ENDPOINT_URL"] = old
    server.stop()


@pytest.fixture
def s3_archive(moto_endpoint):
    """An empty archive under a fresh bucket on the moto server."""
    import boto3

    from chalicelib.lake.storage import Archive

    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return Archive(f"s3://{bucket}/archive")


# The session archive's planes as delivered (records to check services against), and
# an SIA client of the local server.
@pytest.fixture(scope="module")
def planes(deliveries):
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(d / "plane.parquet") for d in deliveries])


@pytest.fixture(scope="module")
def images(planes):
    import pyarrow.compute as pc

    return planes.filter(pc.is_valid(planes["poly"])).to_pylist()


@pytest.fixture(scope="module")
def sia(server):
    import pyvo

    return pyvo.dal.sia2.SIA2Service(server + "/sia")


@pytest.fixture(scope="session")
def server(archive):
    """The Chalice app served locally over the session archive; yields its base URL."""
    from chalicelib.devtools.localserver import start_background

    srv, base = start_background(archive.url)
    yield base
    srv.server.shutdown()
