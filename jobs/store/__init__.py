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

import os
from urllib.parse import urlparse

from jobs.store.base import (  # noqa: F401  (the store's public names)
    DEFAULT_RETRY_SECONDS, RETRY_ENV, NotFound, ObjectStore, ReadCounter, StoreConfigError, StoreDiskFull, StoreError,
    decode_json, iter_chunks, join_uri, read_json, retry_budget, retry_seconds, with_retries,
)
from jobs.store.local import LocalStore
from jobs.store.s3 import S3Store


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
