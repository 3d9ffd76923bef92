"""The object store: one small interface over a local folder (file://) and S3 (s3://, boto3).

Keys are '/'-separated and relative to the store's root prefix (an experiment prefix in
practice). Every write is atomic: readers see a whole object or none, never a partial one, so
"the manifest exists" can mean "the snapshot is committed".
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol
from urllib.parse import urlparse

from jobs.errors import PermanentError, TemporaryError


class StoreError(TemporaryError):
    """The store could not be reached or answered with a server error."""


class StoreConfigError(PermanentError):
    """A malformed URI, a missing bucket, refused credentials: fix the settings, then retry."""


class NotFound(PermanentError):
    """The key does not exist."""


class ObjectStore(Protocol):
    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: str | os.PathLike, move: bool = False) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, path: str | os.PathLike) -> None: ...
    def open_read(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def list_keys(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def child(self, prefix: str) -> "ObjectStore": ...


def join_uri(base: str, *parts: str) -> str:
    """Append '/'-separated parts to a store URI."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def _check_key(key: str) -> str:
    key = key.strip("/")
    if not key or any(p in ("", ".", "..") for p in key.split("/")):
        raise StoreConfigError(f"invalid store key {key!r}")
    return key


class ReadCounter:
    """Counts bytes read through a store (for I/O tests and benchmarks). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes_by_key: dict[str, int] = {}
        self.reads_by_key: dict[str, int] = {}

    def add(self, key: str, n: int, new_read: bool) -> None:
        with self._lock:
            self.bytes_by_key[key] = self.bytes_by_key.get(key, 0) + n
            if new_read:
                self.reads_by_key[key] = self.reads_by_key.get(key, 0) + 1

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_key.values())


class LocalStore:
    """A folder on local disk; writes go to a temp file in the same folder, then os.replace."""

    def __init__(self, root: str | os.PathLike, counter: ReadCounter | None = None, _prefix: str = ""):
        self.root = Path(root).resolve()
        self.prefix = _prefix.strip("/")
        self.counter = counter
        self.uri = join_uri(f"file://{self.root}", self.prefix)

    def _path(self, key: str) -> Path:
        key = _check_key(key)
        return self.root / self.prefix / key if self.prefix else self.root / key

    def child(self, prefix: str) -> "LocalStore":
        return LocalStore(self.root, self.counter, join_uri(self.prefix, prefix).strip("/"))

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self._atomic_write(path, lambda f: f.write(data))

    def put_file(self, key: str, path: str | os.PathLike, move: bool = False) -> None:
        """Copy a local file in; with `move`, rename it in when it is on the same file system
        (atomic and free: a 1 GB averaged model is not copied a second time)."""
        target = self._path(key)
        if move:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                return
            except OSError:
                pass  # another file system: copy below

        def copy(f):
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, 16 << 20)

        self._atomic_write(target, copy)

    def _atomic_write(self, path: Path, write) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise StoreError(f"cannot write {path}: {e.strerror or e}") from e

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.uri}/{key} does not exist") from None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e.strerror or e}") from e
        if self.counter:
            self.counter.add(key, len(data), True)
        return data

    def get_file(self, key: str, path: str | os.PathLike) -> None:
        with self.open_read(key) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)

    def local_path(self, key: str) -> Path | None:
        """The file behind a key (for zero-copy memory mapping), or None if missing."""
        path = self._path(key)
        return path if path.is_file() else None

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"{self.uri}/{key} does not exist") from None
        if self.counter:
            self.counter.add(key, path.stat().st_size, True)
        return f

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"{self.uri}/{key} does not exist") from None

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.root / self.prefix if self.prefix else self.root
        start = base / prefix.strip("/") if prefix.strip("/") else base
        if not start.exists():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(".") and name.endswith(".part"):
                    continue  # an unfinished atomic write
                keys.append(Path(dirpath, name).relative_to(base).as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """An S3 bucket (any S3-API server) through boto3.

    Endpoint and credentials come from the standard AWS environment and config files
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Large objects go up and down as concurrent
    multipart transfers.
    """

    def __init__(self, bucket: str, prefix: str = "", counter: ReadCounter | None = None, _client=None):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.counter = counter
        self.uri = join_uri(f"s3://{bucket}", self.prefix)
        # a fresh session per store: the default session caches credentials for the process
        self._client = _client or boto3.session.Session().client(
            "s3",
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )
        self._transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=32 << 20, max_concurrency=8)

    def child(self, prefix: str) -> "S3Store":
        return S3Store(self.bucket, join_uri(self.prefix, prefix).strip("/"), self.counter, self._client)

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn):
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        try:
            return fn()
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"s3://{self.bucket}/{self._key(key) if key else ''} does not exist") from None
            if code == "NoSuchBucket":
                raise StoreConfigError(f"bucket s3://{self.bucket} does not exist: create it or fix --bucket") from None
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"):
                raise StoreConfigError(
                    f"S3 refused {what} on s3://{self.bucket} ({code}): check AWS_ACCESS_KEY_ID / "
                    f"AWS_SECRET_ACCESS_KEY and the bucket policy"
                ) from None
            if status >= 500 or code in ("SlowDown", "RequestTimeout"):
                raise StoreError(f"S3 {what} failed on s3://{self.bucket} ({code}); retry later") from None
            raise StoreConfigError(f"S3 {what} failed on s3://{self.bucket}: {code} {e}") from None
        except NoCredentialsError:
            raise StoreConfigError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        except EndpointConnectionError as e:
            raise StoreError(
                f"cannot reach the S3 endpoint {e.kwargs.get('endpoint_url', '')}: check AWS_ENDPOINT_URL "
                f"and that the server is up"
            ) from None
        except BotoCoreError as e:
            raise StoreError(f"S3 {what} failed: {e}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data))

    def put_file(self, key: str, path: str | os.PathLike, move: bool = False) -> None:
        """Upload a local file (multipart, concurrent parts); `move` is for the caller, who may
        delete the file afterwards."""
        self._call(
            "upload",
            key,
            lambda: self._client.upload_file(str(path), self.bucket, self._key(key), Config=self._transfer),
        )

    def get_bytes(self, key: str) -> bytes:
        body = self._call("get", key, lambda: self._client.get_object(Bucket=self.bucket, Key=self._key(key)))
        data = self._call("read", key, lambda: body["Body"].read())
        if self.counter:
            self.counter.add(key, len(data), True)
        return data

    def get_file(self, key: str, path: str | os.PathLike) -> None:
        tmp = f"{path}.part"
        self._call(
            "download",
            key,
            lambda: self._client.download_file(self.bucket, self._key(key), tmp, Config=self._transfer),
        )
        os.replace(tmp, path)
        if self.counter:
            self.counter.add(key, os.path.getsize(path), True)

    def open_read(self, key: str) -> BinaryIO:
        body = self._call("get", key, lambda: self._client.get_object(Bucket=self.bucket, Key=self._key(key)))
        if self.counter:
            self.counter.add(key, int(body.get("ContentLength", 0)), True)
        return body["Body"]

    def local_path(self, key: str) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
            return True
        except NotFound:
            return False

    def size(self, key: str) -> int:
        head = self._call("head", key, lambda: self._client.head_object(Bucket=self.bucket, Key=self._key(key)))
        return int(head["ContentLength"])

    def list_keys(self, prefix: str = "") -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        full = base + prefix.strip("/")
        if prefix.strip("/") and not full.endswith("/"):
            full += "/"

        def run():
            keys = []
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][len(base):] for obj in page.get("Contents", []))
            return keys

        return sorted(self._call("list", "", run))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def check(self) -> None:
        """Fail fast with a clear error if the bucket is unreachable or refuses us."""
        try:
            self._call("head_bucket", "", lambda: self._client.head_bucket(Bucket=self.bucket))
        except NotFound:
            raise StoreConfigError(f"bucket s3://{self.bucket} does not exist: create it or fix --bucket") from None


def open_store(uri: str, counter: ReadCounter | None = None) -> ObjectStore:
    """Open `file:///abs/dir`, `file://rel/dir`, a plain path, or `s3://bucket[/prefix]`."""
    if not uri or not isinstance(uri, str):
        raise StoreConfigError("empty store URI: pass --bucket file://DIR or s3://BUCKET")
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreConfigError(f"malformed S3 URI {uri!r}: expected s3://BUCKET[/PREFIX]")
        return S3Store(parsed.netloc, parsed.path, counter)
    if parsed.scheme == "file":
        path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        if not path:
            raise StoreConfigError(f"malformed file URI {uri!r}: expected file://DIR")
        return LocalStore(path, counter)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return LocalStore(uri, counter)
    raise StoreConfigError(f"unsupported store URI scheme {parsed.scheme!r} in {uri!r}: use file:// or s3://")


def iter_chunks(f: BinaryIO, size: int = 8 << 20) -> Iterator[bytes]:
    while True:
        chunk = f.read(size)
        if not chunk:
            return
        yield chunk
