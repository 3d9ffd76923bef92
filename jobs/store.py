"""The object store: one small interface over a local folder (file://) and S3 (s3://, boto3).

Keys are '/'-separated and relative to the store's root prefix (an experiment prefix in
practice). Every write is atomic: readers see a whole object or none, never a partial one, so
"the manifest exists" can mean "the snapshot is committed". `create_bytes` writes an object only
if the key does not exist yet (S3 `If-None-Match: *`, a hard link on a local folder): the one
writer of a manifest wins, the others learn that they lost.

Transient failures (connection errors, 5xx, throttling on S3; any OSError but a missing file or
a full disk on a local folder) are retried with exponential backoff and full jitter for up to
$XLT_STORE_RETRY_SECONDS (default 60) per call, then raised as StoreError (exit 75).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol, TypeVar
from urllib.parse import urlparse

from jobs.errors import DiskFull, MalformedFile, PermanentError, TemporaryError, is_disk_full

log = logging.getLogger("jobs")
T = TypeVar("T")

RETRY_ENV = "XLT_STORE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 60.0
_FIRST_DELAY = 0.25  # seconds; doubles per attempt, capped, then drawn uniformly below that (full jitter)
_MAX_DELAY = 10.0
# local OSErrors a retry cannot fix soon: reported at once (still exit 75, the job may land elsewhere)
_NO_RETRY_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EINVAL}


class StoreError(TemporaryError):
    """The store could not be reached or answered with a server error."""

    retryable = True


class StoreDiskFull(DiskFull, StoreError):
    """The local store's disk is full (ENOSPC/EDQUOT): not retried within the job."""

    retryable = False


class StoreConfigError(PermanentError):
    """A malformed URI, a missing bucket, refused credentials: fix the settings, then retry."""


class NotFound(PermanentError):
    """The key does not exist."""


class ObjectStore(Protocol):
    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def create_bytes(self, key: str, data: bytes) -> bool: ...
    def put_file(self, key: str, path: str | os.PathLike, move: bool = False) -> None: ...
    def create_file(self, key: str, path: str | os.PathLike, move: bool = False) -> bool: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, path: str | os.PathLike) -> None: ...
    def open_read(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def list_keys(self, prefix: str = "") -> list[str]: ...
    def list_sizes(self, prefix: str = "") -> dict[str, int]: ...
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


_budget_override = threading.local()


class retry_budget:
    """Within this context, store calls of this thread retry for at most `seconds` (0: never)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        self.saved = getattr(_budget_override, "seconds", None)
        _budget_override.seconds = self.seconds
        return self

    def __exit__(self, *exc):
        _budget_override.seconds = self.saved
        return False


def retry_seconds() -> float:
    """The retry budget of one store call, from $XLT_STORE_RETRY_SECONDS (default 60 s)."""
    override = getattr(_budget_override, "seconds", None)
    if override is not None:
        return override
    raw = os.environ.get(RETRY_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")):
        raise StoreConfigError(f"{RETRY_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def with_retries(what: str, fn: Callable[[], T], budget: float | None = None) -> T:
    """Call `fn`; retry a retryable StoreError with exponential backoff and full jitter until the
    budget (seconds) is spent, then raise the last error, saying how long it tried."""
    budget = retry_seconds() if budget is None else budget
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except StoreError as e:
            if not getattr(e, "retryable", True):
                raise
            attempt += 1
            elapsed = time.monotonic() - start
            left = budget - elapsed
            if left <= 0:
                if attempt == 1:
                    raise
                raise type(e)(f"{e} (gave up after {attempt} attempts in {elapsed:.1f} s; {RETRY_ENV}={budget:g})") from None
            delay = min(left, random.uniform(0, min(_MAX_DELAY, _FIRST_DELAY * 2 ** attempt)))
            log.warning("store %s failed (%s); retry %d in %.2f s", what, e, attempt, delay)
            time.sleep(delay)


def _local_error(action: str, path, e: OSError) -> StoreError:
    if is_disk_full(e):
        return StoreDiskFull(f"cannot {action} {path}: No space left on device (the store's disk is full: free space, then retry)")
    err = StoreError(f"cannot {action} {path}: {e.strerror or e}")
    if e.errno in _NO_RETRY_ERRNOS:
        err.retryable = False
    return err


def decode_json(data: bytes, where: str, constants: bool = True):
    """Parse UTF-8 JSON bytes, or raise MalformedFile naming `where` (a key or a path) in one
    line. `constants=False` also refuses NaN, Infinity and numbers too large for a float."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedFile(f"{where}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None

    def refuse(token):
        raise ValueError(f"{token} is not a finite number")

    def parse_float(token):
        value = float(token)
        if value in (float("inf"), float("-inf")):
            raise ValueError(f"{token} is too large for a float")
        return value

    try:
        if constants:
            return json.loads(text)
        return json.loads(text, parse_constant=refuse, parse_float=parse_float)
    except json.JSONDecodeError as e:
        hint = "; truncated?" if "\n" not in text[e.pos:].rstrip() else ""  # the error is on the last line
        raise MalformedFile(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}{hint})") from None
    except ValueError as e:
        raise MalformedFile(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise MalformedFile(f"{where}: not valid JSON (nested too deeply)") from None


def read_json(store: "ObjectStore", key: str, what: str = "") -> dict:
    """The JSON object at `key`; a malformed one (or not an object) is a MalformedFile naming
    the key, in one line."""
    where = f"{what + ' ' if what else ''}{key}"
    value = decode_json(store.get_bytes(key), where)
    if not isinstance(value, dict):
        raise MalformedFile(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


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
        with_retries("write", lambda: self._atomic_write(path, lambda f: f.write(data)))

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` only if nothing is there: a hard link of a finished temp file
        (atomic and exclusive). True if this call created it, False if the key existed."""
        path = self._path(key)

        def create() -> bool:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                return self._exclusive_write(path, lambda f: f.write(data))
            except OSError as e:
                raise _local_error("write", path, e) from e

        return with_retries("create", create)

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

        with_retries("write", lambda: self._atomic_write(target, copy))

    def create_file(self, key: str, path: str | os.PathLike, move: bool = False) -> bool:
        """`put_file`, but only where nothing is at `key` yet (a hard link: atomic and exclusive).
        True if this call created it, False if the key existed (then `path` is left as it was)."""
        target = self._path(key)

        def create() -> bool:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if move:
                    try:
                        os.link(path, target)
                    except FileExistsError:
                        return False
                    except OSError as e:
                        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                            raise  # else: another file system, or no hard links here: copy below
                    else:
                        os.unlink(path)
                        return True
                def copy(f):
                    with open(path, "rb") as src:
                        shutil.copyfileobj(src, f, 16 << 20)

                return self._exclusive_write(target, copy)
            except OSError as e:
                raise _local_error("write", target, e) from e

        return with_retries("create", create)

    @staticmethod
    def _exclusive_write(path: Path, write) -> bool:
        """Write a temp file beside `path`, then hard-link it in only if nothing is there (atomic
        and exclusive). True if this call created `path`, False if it existed."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

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
            raise _local_error("write", path, e) from e

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)

        def read() -> bytes:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise NotFound(f"{self.uri}/{key} does not exist") from None
            except OSError as e:
                raise _local_error("read", path, e) from e

        data = with_retries("read", read)
        if self.counter:
            self.counter.add(key, len(data), True)
        return data

    def get_file(self, key: str, path: str | os.PathLike) -> None:
        def copy() -> None:
            with self.open_read(key) as src:
                try:
                    with open(path, "wb") as dst:
                        shutil.copyfileobj(src, dst, 16 << 20)
                except OSError as e:
                    if is_disk_full(e):
                        raise DiskFull(f"cannot write {path}: No space left on device") from None
                    raise

        with_retries("read", copy)

    def local_path(self, key: str) -> Path | None:
        """The file behind a key (for zero-copy memory mapping), or None if missing."""
        path = self._path(key)
        return path if path.is_file() else None

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)

        def open_() -> BinaryIO:
            try:
                return open(path, "rb")
            except FileNotFoundError:
                raise NotFound(f"{self.uri}/{key} does not exist") from None
            except OSError as e:
                raise _local_error("read", path, e) from e

        f = with_retries("open", open_)
        if self.counter:
            self.counter.add(key, os.fstat(f.fileno()).st_size, True)
        return f

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)

        def stat() -> int:
            try:
                return path.stat().st_size
            except FileNotFoundError:
                raise NotFound(f"{self.uri}/{key} does not exist") from None
            except OSError as e:
                raise _local_error("stat", path, e) from e

        return with_retries("stat", stat)

    def _base(self) -> Path:
        return self.root / self.prefix if self.prefix else self.root

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object under `prefix` (unfinished `.part` writes left out)."""
        base = self._base()
        start = base / prefix.strip("/") if prefix.strip("/") else base
        if not start.exists():
            return {}
        sizes = {}
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(".") and name.endswith(".part"):
                    continue  # an unfinished atomic write
                p = Path(dirpath, name)
                try:
                    sizes[p.relative_to(base).as_posix()] = p.stat().st_size
                except FileNotFoundError:
                    pass  # deleted while listing
        return dict(sorted(sizes.items()))

    def list_keys(self, prefix: str = "") -> list[str]:
        return list(self.list_sizes(prefix))

    def part_files(self, prefix: str = "") -> list[Path]:
        """Unfinished atomic writes (`.NAME.XXXX.part`) under `prefix`: left by a killed writer."""
        base = self._base()
        start = base / prefix.strip("/") if prefix.strip("/") else base
        return sorted(Path(d, n) for d, _, files in os.walk(start) for n in files if n.startswith(".") and n.endswith(".part"))

    def delete(self, key: str) -> None:
        path = self._path(key)

        def unlink() -> None:
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                raise _local_error("delete", path, e) from e

        with_retries("delete", unlink)


def _exclusive_keys(client) -> set:
    """Keys whose uploads through `client` carry `If-None-Match: *` (a single PutObject and the
    CompleteMultipartUpload of a multipart upload): s3transfer's upload_file cannot pass it, so an
    event handler adds it to the requests of the keys in this set (shared by a client's stores)."""
    keys = getattr(client, "_xlt_exclusive_keys", None)
    if keys is None:
        keys = set()

        def add_condition(params, **kwargs):
            if params.get("Key") in keys:
                params["IfNoneMatch"] = "*"

        for op in ("PutObject", "CompleteMultipartUpload"):
            client.meta.events.register(f"before-parameter-build.s3.{op}", add_condition)
        client._xlt_exclusive_keys = keys
    return keys


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
        self._exclusive = _exclusive_keys(self._client)

    def child(self, prefix: str) -> "S3Store":
        return S3Store(self.bucket, join_uri(self.prefix, prefix).strip("/"), self.counter, self._client)

    def _key(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    _THROTTLED = {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                  "TooManyRequests", "ServiceUnavailable", "InternalError", "RequestTimeTooSkewed",
                  "ConditionalRequestConflict", "OperationAborted"}
    _REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}

    def _call(self, what: str, key: str, fn, retry: bool = True):
        """One S3 operation with errors mapped to store errors; transient ones are retried
        (see `with_retries`). `fn` must be safe to call again from the start."""
        if not retry:
            return self._call_once(what, key, fn)
        return with_retries(what, lambda: self._call_once(what, key, fn))

    def _classify(self, what: str, key: str, code: str, status: int, detail: str) -> Exception:
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"s3://{self.bucket}/{self._key(key) if key else ''} does not exist")
        if code == "NoSuchBucket":
            return StoreConfigError(f"bucket s3://{self.bucket} does not exist: create it or fix --bucket")
        if code in self._REFUSED:
            return StoreConfigError(
                f"S3 refused {what} on s3://{self.bucket} ({code}): check AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY and the bucket policy"
            )
        if status >= 500 or status in (409, 429) or code in self._THROTTLED:
            return StoreError(f"S3 {what} of {self._key(key) if key else ''} failed on s3://{self.bucket} ({code or status}); retry later")
        return StoreConfigError(f"S3 {what} failed on s3://{self.bucket}: {code} {detail}")

    def _call_once(self, what: str, key: str, fn):
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        try:
            return fn()
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise self._classify(what, key, code, status, str(e)) from None
        except S3UploadFailedError as e:  # upload_file wraps the ClientError of a part in its message
            import re

            m = re.search(r"An error occurred \((\w+)\)", str(e))
            code = m.group(1) if m else ""
            status = int(code) if code.isdigit() else (0 if code else 500)
            raise self._classify(what, key, code, status, str(e).splitlines()[0]) from None
        except NoCredentialsError:
            raise StoreConfigError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        except EndpointConnectionError as e:
            raise StoreError(
                f"cannot reach the S3 endpoint {e.kwargs.get('endpoint_url', '')}: check AWS_ENDPOINT_URL "
                f"and that the server is up"
            ) from None
        except BotoCoreError as e:
            raise StoreError(f"S3 {what} failed: {e}") from None
        except OSError as e:  # the local side of a transfer (a download's scratch file)
            if is_disk_full(e):
                raise DiskFull(f"cannot write {e.filename or 'a downloaded file'}: No space left on device") from None
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data))

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` only if nothing is there (`If-None-Match: *`). True if this call
        created it, False if the key existed (412), including when an earlier attempt of this
        very call created it and its answer was lost: the caller compares contents."""
        from botocore.exceptions import ClientError

        def put() -> bool:
            try:
                self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
                return True
            except ClientError as e:
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if status == 412 or e.response.get("Error", {}).get("Code") == "PreconditionFailed":
                    return False
                raise

        return self._call("create", key, put)

    def put_file(self, key: str, path: str | os.PathLike, move: bool = False) -> None:
        """Upload a local file (multipart, concurrent parts); `move` is for the caller, who may
        delete the file afterwards."""
        self._call(
            "upload",
            key,
            lambda: self._client.upload_file(str(path), self.bucket, self._key(key), Config=self._transfer),
        )

    def create_file(self, key: str, path: str | os.PathLike, move: bool = False) -> bool:
        """`put_file`, but only where nothing is at `key` yet (`If-None-Match: *`, checked when
        the upload completes). True if this call created it, False if the key existed."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError

        full = self._key(key)

        def upload() -> bool:
            try:
                self._client.upload_file(str(path), self.bucket, full, Config=self._transfer)
                return True
            except S3UploadFailedError as e:
                if "PreconditionFailed" in str(e) or "(412)" in str(e):
                    return False
                raise
            except ClientError as e:
                if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                    return False
                raise

        self._exclusive.add(full)
        try:
            return self._call("upload", key, upload)
        finally:
            self._exclusive.discard(full)

    def get_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return body["Body"].read()

        data = self._call("get", key, get)
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

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object under `prefix`, from the listing (no request per object)."""
        base = f"{self.prefix}/" if self.prefix else ""
        full = base + prefix.strip("/")
        if prefix.strip("/") and not full.endswith("/"):
            full += "/"

        def run():
            sizes = {}
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                sizes.update((obj["Key"][len(base):], int(obj["Size"])) for obj in page.get("Contents", []))
            return sizes

        return dict(sorted(self._call("list", "", run).items()))

    def list_keys(self, prefix: str = "") -> list[str]:
        return list(self.list_sizes(prefix))

    def incomplete_uploads(self, prefix: str = "") -> list[tuple[str, str, float, int]]:
        """(key, upload id, initiated as a Unix time, bytes uploaded so far) of every multipart
        upload under `prefix` that was started and never completed or aborted."""
        base = f"{self.prefix}/" if self.prefix else ""
        full = base + prefix.strip("/")

        def run():
            out = []
            for page in self._client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=full):
                for up in page.get("Uploads", []):
                    out.append((up["Key"][len(base):], up["UploadId"], up["Initiated"].timestamp(), 0))
            return out

        return self._call("list uploads", "", run)

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._call("abort upload", key, lambda: self._client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def check(self) -> None:
        """Fail fast with a clear error if the bucket is unreachable or refuses us."""
        try:
            # a probe: no retry budget here (botocore still retries a few times); the jobs retry
            self._call("head_bucket", "", lambda: self._client.head_bucket(Bucket=self.bucket), retry=False)
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
