"""S3 (s3://) as an object store, through boto3 (imported only when an S3Store is made)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

from jobs.errors import DiskFull, is_disk_full
from jobs.store.base import NotFound, ReadCounter, StoreConfigError, StoreError, _check_key, join_uri, with_retries

log = logging.getLogger("jobs")


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
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                          max_pool_connections=32),  # pipelined downloads and multipart transfers run many requests at once
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

    def open_range(self, key: str, start: int, stop: int) -> BinaryIO:
        """Bytes [start, stop) of an object (a ranged GET), as a streaming body."""
        body = self._call("get", key, lambda: self._client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{stop - 1}"))
        if self.counter:
            self.counter.add(key, int(body.get("ContentLength", 0)), start == 0)
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
