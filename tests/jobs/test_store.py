"""The object store on a local folder and on a real S3 server (SeaweedFS)."""
import pytest

from jobs.store import LocalStore, NotFound, S3Store, StoreConfigError, StoreError, open_store


def exercise(store):
    store.put_bytes("a/b/c.json", b"{}")
    store.put_bytes("a/b/d.bin", b"x" * 10)
    assert store.get_bytes("a/b/c.json") == b"{}"
    assert store.exists("a/b/d.bin") and not store.exists("a/b/zz")
    assert store.size("a/b/d.bin") == 10
    assert store.list_keys("a/") == ["a/b/c.json", "a/b/d.bin"]
    assert store.child("a").list_keys("b") == ["b/c.json", "b/d.bin"]
    with pytest.raises(NotFound):
        store.get_bytes("missing")
    store.delete("a/b/d.bin")
    assert not store.exists("a/b/d.bin")


def test_local_store(tmp_path):
    exercise(open_store(f"file://{tmp_path}/exp"))


def test_local_writes_are_atomic(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put_bytes("k", b"old")

    def boom(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(StoreError, match="No space left"):
        store._atomic_write(tmp_path / "k", boom)
    assert store.get_bytes("k") == b"old"  # the old object is intact
    assert store.list_keys() == ["k"]  # and no temp file is left behind


@pytest.mark.s3
def test_s3_store(s3_env, tmp_path):
    store = open_store("s3://test/exp-store-test")
    exercise(store)
    big = tmp_path / "big.bin"
    big.write_bytes(b"y" * (70 << 20))  # above the multipart threshold
    store.put_file("big.bin", big)
    store.get_file("big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


@pytest.mark.s3
def test_s3_bad_credentials_and_bucket(s3_env, monkeypatch):
    with pytest.raises(StoreConfigError, match="bucket s3://nope does not exist"):
        open_store("s3://nope").check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreConfigError, match="check AWS_ACCESS_KEY_ID"):
        open_store("s3://test").check()


def test_s3_unreachable_endpoint(monkeypatch):
    from tests.conftest import free_ports

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(StoreError, match="cannot reach the S3 endpoint"):
        S3Store("test").check()


@pytest.mark.parametrize("uri, message", [
    ("s3://", "malformed S3 URI"),
    ("gs://bucket/x", "unsupported store URI scheme 'gs'"),
    ("", "empty store URI"),
])
def test_bad_uris(uri, message):
    with pytest.raises(StoreConfigError, match=message):
        open_store(uri)


def test_local_put_file_move_renames_in(tmp_path):
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "out.bin"
    src.write_bytes(b"weights")
    store.put_file("a/model.safetensors", src, move=True)
    assert store.get_bytes("a/model.safetensors") == b"weights"
    assert not src.exists()  # renamed, not copied
    src.write_bytes(b"again")
    store.put_file("b/model.safetensors", src)  # the default keeps the source
    assert src.exists() and store.get_bytes("b/model.safetensors") == b"again"
