"""Transient store errors are retried with backoff and jitter within a bounded budget
($XLT_STORE_RETRY_SECONDS), then surface as StoreError (exit 75); permanent ones are not retried.
The S3 cases stop and restart a real SeaweedFS server."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from jobs.store import NotFound, StoreConfigError, StoreDiskFull, StoreError, open_store, retry_budget, retry_seconds, with_retries

from tests.fault_support import weed, weed_server  # noqa: F401 (fixtures)


def test_backoff_retries_transient_errors_only_within_the_budget(monkeypatch):
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise StoreError("503 from the server")
        return "ok"

    assert with_retries("get", flaky, budget=30) == "ok" and len(calls) == 4
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert all(g < 0.25 * 2 ** (i + 1) + 0.1 for i, g in enumerate(gaps)), gaps  # full jitter below the doubling cap

    for permanent in (NotFound("gone"), StoreConfigError("bad bucket"), StoreDiskFull("cannot write /x: No space left on device")):
        calls.clear()

        def fail(e=permanent):
            calls.append(1)
            raise e

        with pytest.raises(type(permanent)):
            with_retries("put", fail, budget=30)
        assert len(calls) == 1  # not retried

    start = time.monotonic()
    with pytest.raises(StoreError, match=r"gave up after \d+ attempts in [\d.]+ s; XLT_STORE_RETRY_SECONDS=1\)"):
        with_retries("put", lambda: (_ for _ in ()).throw(StoreError("still down")), budget=1)
    assert 0.9 < time.monotonic() - start < 2.5

    monkeypatch.setenv("XLT_STORE_RETRY_SECONDS", "soon")
    with pytest.raises(StoreConfigError, match="XLT_STORE_RETRY_SECONDS='soon'"):
        retry_seconds()
    with retry_budget(0):
        assert retry_seconds() == 0


@pytest.mark.s3
def test_an_s3_outage_within_the_budget_is_ridden_out_and_a_longer_one_is_a_store_error(weed, monkeypatch):
    for key, value in weed.server.env().items():
        monkeypatch.setenv(key, value)
    store = open_store(f"s3://test/retries-{uuid.uuid4().hex[:8]}")
    store.put_bytes("a.json", b"{}")
    weed.stop()
    start = time.monotonic()
    with pytest.raises(StoreError, match="cannot reach the S3 endpoint.*gave up after"):
        with retry_budget(2):
            store.get_bytes("a.json")
    assert time.monotonic() - start < 15  # bounded: the budget plus one attempt's own tries

    restarted = threading.Timer(1.0, weed.start)
    restarted.start()
    try:
        with retry_budget(60):
            store.put_bytes("b.json", b"[1]")  # fails while the server is down, then gets through
            assert store.get_bytes("a.json") == b"{}"
    finally:
        restarted.join()
    assert store.get_bytes("b.json") == b"[1]"
