"""Storage access, in one place: the archive is a local folder or an s3:// prefix.

Everything that reads or writes archive objects (files, Delta tables, MOCs, job results)
goes through `Archive`, so local runs, moto and AWS behave the same.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import settings

if TYPE_CHECKING:
    import fsspec


def s3_endpoint() -> str | None:
    return settings().s3_endpoint_url


def region() -> str:
    return settings().aws_region


def duckdb_s3(con) -> None:
    """S3 for a DuckDB connection: httpfs from its PyPI package (no download) and the
    caller's AWS credentials (or the S3_ENDPOINT_URL of moto/MinIO)."""
    import duckdb_extension_httpfs  # deferred: AWS path only

    from ..geometry.sqlfunctions import sql_str as q  # deferred: numba kernels

    ext = next(Path(duckdb_extension_httpfs.__file__).parent.rglob("*.duckdb_extension"))
    con.execute(f"LOAD {q(str(ext))}")
    con.execute("SET enable_http_metadata_cache = true")  # no HEAD per file per query
    opts = {"REGION": q(region())}
    for key, env in (("KEY_ID", "AWS_ACCESS_KEY_ID"), ("SECRET", "AWS_SECRET_ACCESS_KEY"),
                     ("SESSION_TOKEN", "AWS_SESSION_TOKEN")):
        if os.environ.get(env):
            opts[key] = q(os.environ[env])
    endpoint = s3_endpoint()
    if endpoint:
        opts.update(ENDPOINT=q(endpoint.split("://", 1)[-1]), URL_STYLE="'path'",
                    USE_SSL="true" if endpoint.startswith("https") else "false")
    body = ", ".join(f"{k} {v}" for k, v in opts.items())
    con.execute(f"CREATE SECRET archive_s3 (TYPE s3, {body})")


def file_md5(path: str | Path) -> str:
    """MD5 of a local file, read in chunks (delivery manifests carry these)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    md5: str | None = None  # hex, when the store vouches for it (S3 ETag of a plain PUT)
    sha256: str | None = None  # hex, S3's full-object ChecksumSHA256 when it was stored


def _s3_copy(src: Archive, key: str, dest: Archive, dest_key: str, size: int,
             threshold: int, part: int, workers: int) -> str:
    s3 = dest._s3_client
    source = {"Bucket": src.bucket, "Key": src._s3_key(key)}
    target = {"Bucket": dest.bucket, "Key": dest._s3_key(dest_key)}
    if size <= threshold:  # CopyObject takes objects up to 5 GB
        s3.copy_object(CopySource=source, **target)
        return "copy"
    upload = s3.create_multipart_upload(**target)["UploadId"]
    ranges = [(i + 1, start, min(start + part, size) - 1)
              for i, start in enumerate(range(0, size, part))]

    def copy_part(r: tuple[int, int, int]) -> dict:
        n, first, last = r
        got = s3.upload_part_copy(CopySource=source, CopySourceRange=f"bytes={first}-{last}",
                                  PartNumber=n, UploadId=upload, **target)
        return {"PartNumber": n, "ETag": got["CopyPartResult"]["ETag"]}

    try:
        with ThreadPoolExecutor(max(1, min(workers, len(ranges)))) as pool:
            parts = list(pool.map(copy_part, ranges))
        s3.complete_multipart_upload(UploadId=upload, MultipartUpload={"Parts": parts},
                                     **target)
    except BaseException:
        s3.abort_multipart_upload(UploadId=upload, **target)
        raise
    return "multipart"


class PreconditionFailed(Exception):
    """A conditional write lost the race: the object exists already."""


@dataclass(frozen=True)
class Archive:
    url: str

    @classmethod
    def from_env(cls, url: str | None = None) -> Archive:
        url = url or settings().archive_url
        if "://" not in url:
            url = str(Path(url).resolve())
        return cls(url.rstrip("/"))

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def bucket(self) -> str | None:
        return self.url[5:].split("/", 1)[0] if self.is_s3 else None

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.is_s3:
            import s3fs  # deferred: AWS path only

            kw = {"client_kwargs": {"region_name": region()}}
            if s3_endpoint():
                kw["endpoint_url"] = s3_endpoint()
            # no listing cache: a new release must be seen by the next request
            return s3fs.S3FileSystem(**kw, default_block_size=1 << 20,
                                     use_listings_cache=False)
        import fsspec  # deferred: local reads and lists need none (~15 ms of a cold start)

        return fsspec.filesystem("file", auto_mkdir=True)

    def path(self, key: str) -> str:
        """Full path/URL of an archive key like 'tables/ivoa.obscore' or 'data/qr2/..'."""
        return f"{self.url}/{key.lstrip('/')}"

    def _fs_path(self, key: str) -> str:
        p = self.path(key)
        return p[5:] if self.is_s3 else p

    @property
    def storage_options(self) -> dict[str, str]:
        """Options for deltalake (object_store) matching this archive."""
        if not self.is_s3:
            return {}
        opts = {"AWS_REGION": region(), "conditional_put": "etag"}
        if s3_endpoint():
            opts["AWS_ENDPOINT_URL"] = s3_endpoint()
            opts["AWS_ALLOW_HTTP"] = "true"
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            if os.environ.get(k):
                opts[k] = os.environ[k]
        return opts

    # ---- objects --------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.fs.exists(self._fs_path(key))

    def object_exists(self, key: str) -> bool:
        """Is there an object (not a folder) at key? On S3 one HEAD: s3fs's exists
        follows a missing key with a LIST, to look for a folder of that name."""
        if not self.is_s3:
            return os.path.isfile(self._fs_path(key))  # a release check, twice a query
        import botocore.exceptions  # deferred: AWS path only

        try:
            self._s3_client.head_object(Bucket=self.bucket, Key=self._s3_key(key))
            return True
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def read_bytes(self, key: str) -> bytes:
        if self.is_s3:  # one GET (s3fs sends a HEAD first)
            try:
                return self._s3_client.get_object(Bucket=self.bucket,
                                                  Key=self._s3_key(key))["Body"].read()
            except self._s3_client.exceptions.NoSuchKey:
                raise FileNotFoundError(key) from None
        return Path(self._fs_path(key)).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._fs_path(key), data)

    def replace_bytes(self, key: str, data: bytes) -> None:
        """Overwrite so that a reader sees the old or the new bytes, never a part (an S3
        PUT is atomic; locally a temporary file renamed over the key)."""
        if self.is_s3:
            self.write_bytes(key, data)
            return
        path = Path(self._fs_path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def put_file(self, local: str | Path, key: str) -> None:
        self.fs.put_file(str(local), self._fs_path(key))

    def size(self, key: str) -> int:
        return int(self.fs.size(self._fs_path(key)))

    def list(self, prefix: str) -> list[str]:
        """Keys (relative to the archive) directly under prefix; [] when absent."""
        if not self.is_s3:
            where = Path(self._fs_path(prefix))
            found = [str(c) for c in where.iterdir()] if where.is_dir() else \
                [str(where)] if where.exists() else []
        else:
            try:
                found = self.fs.ls(self._fs_path(prefix), detail=False)
            except FileNotFoundError:
                return []
        root = self._fs_path("")
        return sorted(p[len(root):].lstrip("/") for p in found)

    def delete(self, key: str) -> None:
        if self.exists(key):
            self.fs.rm(self._fs_path(key), recursive=True)

    def create_exclusive(self, key: str, data: bytes) -> None:
        """Write only if absent (S3 If-None-Match, O_EXCL locally): the commit primitive."""
        if self.is_s3:
            import botocore.exceptions  # deferred: AWS path only

            try:
                self._s3_client.put_object(Bucket=self.bucket, Key=self._s3_key(key),
                                           Body=data, IfNoneMatch="*")
            except botocore.exceptions.ClientError as e:
                if e.response["Error"]["Code"] in ("PreconditionFailed",
                                                   "ConditionalRequestConflict"):
                    raise PreconditionFailed(key) from e
                raise
            return
        path = Path(self.path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError as e:
            raise PreconditionFailed(key) from e
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Bytes [start, end) of each range, one request per range (coalesce before)."""
        path = self._fs_path(key)
        if not ranges:
            return []
        return self.fs.cat_ranges([path] * len(ranges), [r[0] for r in ranges],
                                  [r[1] for r in ranges], on_error="raise")

    def presign(self, key: str, expires: int = 3600, content_type: str | None = None) -> str:
        if not self.is_s3:
            return "file://" + self.path(key)
        params = {"Bucket": self.bucket, "Key": self._s3_key(key)}
        if content_type:  # results are stored untyped; say what they are on the way out
            params["ResponseContentType"] = content_type
        return self._s3_client.generate_presigned_url("get_object", Params=params,
                                                      ExpiresIn=expires)

    # ---- in place: what ingest needs to check and move files without a local copy ----
    def head(self, key: str) -> ObjectInfo:
        """Size and the checksums S3 keeps for an object (nothing read); a local file
        has only its size. FileNotFoundError when absent."""
        if not self.is_s3:
            return ObjectInfo(os.stat(self._fs_path(key)).st_size)
        import botocore.exceptions  # deferred: AWS path only

        try:
            h = self._s3_client.head_object(Bucket=self.bucket, Key=self._s3_key(key),
                                            ChecksumMode="ENABLED")
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from None
            raise
        etag = str(h.get("ETag", "")).strip('"')
        # S3 documents the ETag as the MD5 of the data for single-part objects stored
        # plain or with SSE-S3; multipart ETags carry '-N', SSE-KMS/-C ones are opaque
        plain = h.get("ServerSideEncryption") in (None, "AES256") and \
            not h.get("SSECustomerAlgorithm")
        md5 = etag if plain and len(etag) == 32 and "-" not in etag else None
        sha = h.get("ChecksumSHA256")
        full = sha and "-" not in sha and h.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
        return ObjectInfo(int(h["ContentLength"]), md5,
                          base64.b64decode(sha).hex() if full else None)

    def chunks(self, key: str, size: int) -> Iterator[bytes]:
        """The object's bytes, streamed in pieces of at most `size` (memory stays flat)."""
        if self.is_s3:
            body = self._s3_client.get_object(Bucket=self.bucket,
                                              Key=self._s3_key(key))["Body"]
            try:
                yield from body.iter_chunks(size)
            finally:
                body.close()
            return
        with open(self._fs_path(key), "rb") as f:
            yield from iter(lambda: f.read(size), b"")

    def copy_to(self, key: str, dest: Archive, dest_key: str, size: int,
                threshold: int = 5 << 30, part: int = 512 << 20, workers: int = 8) -> str:
        """Copy an object to another archive location without holding it: S3 to S3 on
        the server (CopyObject, UploadPartCopy in parts above `threshold`), otherwise
        streamed in `part`-bounded pieces. Returns how ('copy', 'multipart', 'stream')."""
        if self.is_s3 and dest.is_s3:
            return _s3_copy(self, key, dest, dest_key, size, threshold, part, workers)
        with dest.fs.open(dest._fs_path(dest_key), "wb") as out:
            for piece in self.chunks(key, min(part, 8 << 20)):
                out.write(piece)
        return "stream"

    def _s3_key(self, key: str) -> str:
        return self.path(key)[len(f"s3://{self.bucket}/"):]

    @cached_property
    def _s3_client(self):
        import boto3  # deferred: AWS path only
        from botocore.config import Config  # deferred: AWS path only

        # SigV4: S3 refuses SigV2 presigned URLs on new buckets
        return boto3.client("s3", endpoint_url=s3_endpoint(), region_name=region(),
                            config=Config(signature_version="s3v4"))
