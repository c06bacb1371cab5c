"""Ingest a delivery where it lies: checked and moved in place, never copied to /tmp.

A real week is ~21,000 files and ~1.5 TB, far beyond a Lambda's /tmp (10 GB at most),
so nothing of a file is stored locally: its size and checksum come from S3 (the ETag of
a plain single-part upload is its MD5; a full-object ChecksumSHA256 when the manifest
gives a sha256) or, failing that, from hashing it as it streams past in bounded chunks;
its HDUs from range reads of the headers alone; and it is moved by a server-side copy
(CopyObject, UploadPartCopy above the copy threshold). Memory and /tmp stay flat
whatever the size of the delivery: a worker holds one chunk per file in flight.

The work splits into three steps so that a week too big for one function fans out
(infra/statemachines/ingest.asl.json: a Step Functions Map over batches):

- `plan`: read the manifest and the record tables, validate every row, cut the file
  list into batches (index ranges, so the state stays small);
- `run_batch`: check and copy one batch of files; leaves a marker saying it is done;
- `commit`: once every batch's marker is there, append the rows and create the release
  (delivery.commit_rows): the single commit point. A failure anywhere before it leaves
  files under data/ that no release names and no table row; rerunning copies again and
  commits once (a delivery already released is skipped).

The FITS header reader is passed in (`HeaderReader`): the range-read machinery lives in
cutout/fitsrange.py, a layer above this one, and the entry points hand it down.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..config import settings
from ..lake import releases
from ..lake.storage import Archive
from .delivery import (
    SCIENCE_HDUS,
    DeliveryError,
    Summary,
    check_artifacts_listed,
    commit_rows,
    parse_manifest,
    read_records,
    validate_records,
)

# (location, key) -> (HDU names, bytes read); raises ValueError/OSError if not FITS
HeaderReader = Callable[[Archive, str], tuple[list[str], int]]
STAGING = "staging/ingest"  # per-delivery batch markers, under the archive


@dataclass
class Stats:
    """What checking and moving cost: bytes actually read, and how each file went."""

    files: int = 0
    bytes: int = 0  # sizes of the files moved
    bytes_read: int = 0  # through this process: headers and streamed checksums
    checksums: dict[str, int] = field(default_factory=dict)  # s3-sha256 / s3-md5 / streamed
    copies: dict[str, int] = field(default_factory=dict)  # copy / multipart / stream

    def add(self, other: Stats) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.bytes_read += other.bytes_read
        for mine, theirs in ((self.checksums, other.checksums), (self.copies, other.copies)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v

    def to_json(self) -> dict:
        return {"files": self.files, "bytes": self.bytes, "bytes_read": self.bytes_read,
                "checksums": dict(self.checksums), "copies": dict(self.copies)}


def load_manifest(src: Archive) -> tuple[dict, str]:
    """The manifest and its MD5 (which names this version of the delivery)."""
    try:
        data = src.read_bytes("manifest.json")
    except FileNotFoundError:
        raise DeliveryError(f"{src.url}: no manifest.json") from None
    return parse_manifest(data), hashlib.md5(data).hexdigest()


def _records(src: Archive, manifest: dict) -> dict:
    def read(name: str) -> bytes | None:
        try:
            return src.read_bytes(name)
        except FileNotFoundError:
            return None

    rec = read_records(read, manifest)
    validate_records(manifest, rec)
    if not manifest.get("metadata_only"):
        check_artifacts_listed(manifest, rec["artifact"])
    return rec


def _files(manifest: dict) -> list[dict]:
    files = manifest["files"]
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and {"key", "size"} <= set(f) for f in files):
        raise DeliveryError("manifest.json 'files' must list objects with key and size")
    for f in files:
        parts = str(f["key"]).split("/")
        if not f["key"] or any(p in ("", ".", "..") for p in parts) or "\\" in f["key"]:
            raise DeliveryError(f"file key {f['key']!r} points outside the delivery")
    return files


def plan(src: Archive, archive: Archive, batch_files: int | None = None) -> dict:
    """Validate the manifest and every row; cut the files into batches."""
    manifest, digest = load_manifest(src)
    delivery = manifest["delivery"]
    latest = releases.load(archive)
    if delivery in latest.runs:
        return {"delivery": delivery, "manifest": digest, "skipped": True,
                "release": latest.number, "batches": [], "files": 0, "bytes": 0}
    _records(src, manifest)
    files = [] if manifest.get("metadata_only") else _files(manifest)
    n = max(1, batch_files or settings().ingest_batch_files)
    batches = [{"index": i // n, "start": i, "stop": min(i + n, len(files))}
               for i in range(0, len(files), n)]
    return {"delivery": delivery, "manifest": digest, "skipped": False, "batches": batches,
            "files": len(files), "bytes": sum(int(f["size"]) for f in files)}


def _marker(archive: Archive, delivery: str, digest: str, index: int) -> str:
    return f"{STAGING}/{delivery}/{digest}/{index:06d}.json"


def _same_manifest(src: Archive, digest: str) -> dict:
    manifest, now = load_manifest(src)
    if now != digest:
        raise DeliveryError("manifest.json changed while the delivery was being ingested; "
                            "upload it again to start over")
    return manifest


def check_file(src: Archive, archive: Archive, entry: dict, headers: HeaderReader) -> Stats:
    """One file: present with the manifest's size and checksum, FITS with the expected
    HDUs (range reads of the headers), then copied into the archive server-side."""
    cfg = settings()
    key = entry["key"]
    where = "data/" + key
    out = Stats(files=1, bytes=int(entry["size"]))
    try:
        info = src.head(where)
    except FileNotFoundError:
        raise DeliveryError(f"file {key} is missing") from None
    if info.size != int(entry["size"]):
        raise DeliveryError(f"file {key}: {info.size} bytes, the manifest says "
                            f"{entry['size']}")
    how = _verify_checksum(src, where, entry, info, cfg.ingest_hash_chunk, out)
    out.checksums[how] = 1
    try:
        names, read = headers(src, where)
    except (ValueError, OSError) as e:
        raise DeliveryError(f"file {key} is not readable FITS: {e}") from None
    out.bytes_read += read
    if "/level2/" in key and names[:len(SCIENCE_HDUS)] != SCIENCE_HDUS:
        raise DeliveryError(f"file {key}: HDUs {names}, expected {SCIENCE_HDUS}")
    copied = src.copy_to(where, archive, where, info.size, cfg.ingest_copy_threshold,
                         cfg.ingest_part_bytes, workers=4)
    out.copies[copied] = 1
    return out


def _verify_checksum(src: Archive, where: str, entry: dict, info, chunk: int,
                     out: Stats) -> str:
    key = entry["key"]
    want_sha, want_md5 = entry.get("sha256"), entry.get("md5")
    if want_sha and info.sha256:
        if info.sha256 != want_sha.lower():
            raise DeliveryError(f"file {key}: SHA-256 differs from the manifest")
        return "s3-sha256"
    if want_md5 and info.md5:
        if info.md5 != want_md5.lower():
            raise DeliveryError(f"file {key}: size or checksum differs from manifest")
        return "s3-md5"
    if not (want_sha or want_md5):
        return "none"
    md5, sha = hashlib.md5(), hashlib.sha256() if want_sha else None
    for piece in src.chunks(where, chunk):
        out.bytes_read += len(piece)
        md5.update(piece)
        if sha is not None:
            sha.update(piece)
    if (want_md5 and md5.hexdigest() != want_md5.lower()) or \
            (sha is not None and sha.hexdigest() != want_sha.lower()):
        raise DeliveryError(f"file {key}: size or checksum differs from manifest")
    return "streamed"


def run_batch(src: Archive, archive: Archive, digest: str, batch: dict,
              headers: HeaderReader, workers: int | None = None) -> dict:
    """Check and copy files[start:stop]; a marker records the batch as done."""
    manifest = _same_manifest(src, digest)
    files = _files(manifest)[int(batch["start"]):int(batch["stop"])]
    stats = Stats()
    with ThreadPoolExecutor(workers or settings().ingest_workers) as pool:
        for one in pool.map(lambda f: check_file(src, archive, f, headers), files):
            stats.add(one)
    doc = {"index": batch["index"], **stats.to_json()}
    archive.write_bytes(_marker(archive, manifest["delivery"], digest, int(batch["index"])),
                        _json(doc))
    return doc


def commit(src: Archive, archive: Archive, digest: str, batches: int | None = None) -> Summary:
    """Append the rows and create the release, once every batch has reported done."""
    t0 = time.perf_counter()
    manifest = _same_manifest(src, digest)
    delivery = manifest["delivery"]
    latest = releases.load(archive)
    if delivery in latest.runs:
        return Summary(delivery, latest.number, skipped=True)
    rec = _records(src, manifest)
    files = [] if manifest.get("metadata_only") else _files(manifest)
    n = settings().ingest_batch_files
    expected = batches if batches is not None else -(-len(files) // max(1, n))
    done = Stats()
    for i in range(expected):
        try:
            doc = _read_json(archive.read_bytes(_marker(archive, delivery, digest, i)))
        except FileNotFoundError:
            raise DeliveryError(f"batch {i} of {delivery} has not been copied; nothing "
                                "was committed") from None
        done.add(Stats(doc["files"], doc["bytes"], doc["bytes_read"], doc["checksums"],
                       doc["copies"]))
    if done.files != len(files):
        raise DeliveryError(f"{done.files} files copied, the manifest lists {len(files)}")
    summary = Summary(delivery, 0, files=done.files, bytes=done.bytes,
                      seconds={"validate": time.perf_counter() - t0})
    # the markers stay (a few hundred bytes a batch: ingest only ever adds); vacuum
    # (retention.py) removes those of released deliveries
    return commit_rows(archive, rec, delivery, uuid.uuid4().hex[:12], summary)


def ingest_in_place(src: Archive, archive: Archive, headers: HeaderReader) -> tuple[
        Summary, Stats]:
    """All three steps in this process (a delivery small enough for one function, the
    CLI, benchmarks): memory and local disk stay as flat as in the fanned-out form."""
    t0 = time.perf_counter()
    p = plan(src, archive)
    if p["skipped"]:
        return Summary(p["delivery"], p["release"], skipped=True), Stats()
    stats = Stats()
    t1 = time.perf_counter()
    for batch in p["batches"]:
        doc = run_batch(src, archive, p["manifest"], batch, headers)
        stats.add(Stats(doc["files"], doc["bytes"], doc["bytes_read"], doc["checksums"],
                        doc["copies"]))
    t2 = time.perf_counter()
    summary = commit(src, archive, p["manifest"], len(p["batches"]))
    summary.seconds = {"plan": t1 - t0, "files": t2 - t1, **summary.seconds}
    return summary, stats


def _json(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def _read_json(data: bytes) -> dict:
    return json.loads(data)
