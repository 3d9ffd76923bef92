"""What survives what, on real processes: `python -m jobs` killed with SIGKILL at chosen points
(fail points, jobs/faults.py) and run again; a real S3 server (SeaweedFS) killed in the middle of
a commit and started again; two average jobs for the same draw released at the same instant; a
scratch disk and a store disk that fill up (small tmpfs mounts in a private mount namespace); the
local backend re-running a job after a temporary failure, as a Kubernetes Job would."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from jobs import layout
from jobs.errors import EXIT_TEMPORARY
from jobs.snapshots import check_committed, read_manifest
from jobs.spec import AverageSpec, DatasetRef, EvaluateSpec, short_hash, spec_to_json
from jobs.store import LocalStore, open_store

from tests.fault_support import fingerprint, job_env, kill9, release, run_job, start_job, wait_paused, weed, weed_server  # noqa: F401 (fixtures)
from tests.jobs.average_support import load, make_runs, max_abs_diff, naive_mean

CONFIGS = [(1e-5, 16), (2e-5, 16), (3e-5, 32)]
METHODS = ("r-last", "r-ca", "soup-2")  # 9 outputs over 3 runs, chains with and without subtractions


def _members(infos: list[dict], method: str) -> list[str]:
    snaps = [s for i in infos for s in sorted(i["snapshots"], key=lambda s: s["step"])]
    if method == "r-ca":
        return [s["ref"] for s in snaps]
    if method == "r-last":
        return [max(i["snapshots"], key=lambda s: s["step"])["ref"] for i in infos]
    return [s["ref"] for s in sorted(snaps, key=lambda s: -s["dev_score"])[:2]]


def assert_exact(store, states: dict, run_keys, seed: int) -> None:
    """Every output of the draw is committed, its files check out, and it equals the naive mean."""
    h = short_hash(list(run_keys), 8)
    infos = [read_manifest(store, layout.run_sum_ref(k)) for k in run_keys]
    for method in METHODS:
        for k in range(1, len(run_keys) + 1):
            ref = layout.draw_average_ref(seed, h, method, k)
            m = read_manifest(store, ref)
            assert check_committed(store, ref, m, verify=True) == [], ref
            expected = naive_mean([states[r] for r in _members(infos[:k], method)])
            assert max_abs_diff(load(store, ref), expected) < 1e-6, ref


def average_spec(uri: str, run_keys, seed: int = 0) -> str:
    return spec_to_json(AverageSpec(experiment_uri=uri, task="nli", methods=METHODS, run_keys=tuple(run_keys), draw_seed=seed))


def manifests_under(store, prefix: str) -> list[str]:
    return [k for k in store.list_keys(prefix) if k.endswith("/" + layout.MANIFEST)]


# ---- kill -9 of an average job in the middle of a commit, then a re-run ----------------------------------------


def test_an_average_job_killed_mid_commit_then_rerun_commits_every_output_exactly(tmp_path):
    store = LocalStore(tmp_path / "store")
    runs, states = make_runs(store, tmp_path / "src", CONFIGS, snapshots=2)
    keys = [r.run_key for r in runs]
    spec = average_spec(store.uri, keys)

    # killed inside its third commit: two outputs committed, the third's weights stored, no manifest
    env = job_env(tmp_path, {"XLT_FAILPOINTS": "commit.before-manifest@3=kill"})
    first = run_job("average", spec, env)
    assert first.returncode == -9, first.stderr
    committed = {k: store.get_bytes(k) for k in manifests_under(store, "averages/")}
    assert len(committed) == 2
    weights = [k for k in store.list_keys("averages/") if k.endswith(layout.WEIGHTS)]
    assert len(weights) == 3  # the third is not a model: no manifest
    left = sorted(p.name for p in Path(env["TMPDIR"]).iterdir())
    assert any(n.startswith("xlt-average-") for n in left) and any(n.startswith("xlt-job-") for n in left), left

    # a clean re-run commits the 7 missing outputs (rewriting the third's weights); the 2
    # committed ones are not rewritten; the dead job's scratch is swept, the re-run's removed
    again = run_job("average", spec, job_env(tmp_path))
    assert again.returncode == 0, again.stderr
    assert len(manifests_under(store, "averages/")) == 9
    assert all(store.get_bytes(k) == v for k, v in committed.items())
    assert_exact(store, states, keys, 0)
    assert store.part_files() == []
    assert list(Path(env["TMPDIR"]).iterdir()) == []


# ---- kill -9 of an evaluate job; a re-run scores what is missing and names what it cannot --------


DEV = DatasetRef("synthetic-nli", "en", "validation", limit=16)
TARGET = DatasetRef("synthetic-nli", "xx-near", "test", limit=16)


def test_an_evaluate_job_killed_mid_way_then_rerun_scores_every_model_it_can(tmp_path):
    import torch

    from jobs.common import build_model
    from jobs.models import load_tokenizer
    from jobs.results import from_parquet_bytes
    from jobs.tasks import get_task
    from tests.jobs.average_support import commit_run, run_spec

    store = LocalStore(tmp_path / "store")
    task = get_task("nli")
    base = {k: v.detach().clone() for k, v in build_model(task, "tiny").state_dict().items()}
    g = torch.Generator().manual_seed(0)
    snaps = [{k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone() for k, v in base.items()} for _ in range(4)]
    _, manifests = commit_run(store, tmp_path / "src", run_spec(store.uri, 1e-5, 16, 1), snaps, [0.4, 0.5, 0.6, 0.7], head_sha=None)
    refs = [m["ref"] for m in manifests]
    bad = refs[2]
    weights = store.local_path(layout.weights_key(bad))
    weights.write_bytes(weights.read_bytes()[:-64])  # a truncated model among good ones
    spec = spec_to_json(EvaluateSpec(experiment_uri=store.uri, task="nli", base_model="tiny", refs=tuple(refs), source_dev=DEV,
                                     targets=(TARGET,), max_length=64, batch_size=32))

    env = job_env(tmp_path, {"XLT_FAILPOINTS": "evaluate.model@2"})
    proc = start_job("evaluate", spec, env)
    proc.stdin.write(spec)
    proc.stdin.close()
    wait_paused(env, "evaluate.model", proc)
    kill9(proc)  # while it is about to score the second model
    assert store.list_keys("results/") == [layout.results_key(refs[0])]
    first_result = store.get_bytes(layout.results_key(refs[0]))

    again = run_job("evaluate", spec, job_env(tmp_path))
    assert again.returncode == 3, again.stderr
    errors = [line for line in again.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 2 and "Traceback" not in again.stderr, again.stderr
    assert f"cannot evaluate {bad}: model {bad}: model.safetensors has" in errors[0]
    assert errors[1].endswith(f"1 of 3 model(s) could not be evaluated ({bad}); the other 2 were")
    assert store.get_bytes(layout.results_key(refs[0])) == first_result  # not scored again
    assert not store.exists(layout.results_key(bad))
    tokenizer = load_tokenizer("tiny")
    examples = task.load(TARGET)
    features = task.encode(tokenizer, examples, 64)
    for ref, state, m in zip(refs, snaps, manifests):
        if ref == bad:
            continue
        frame = from_parquet_bytes(store.get_bytes(layout.results_key(ref)))
        model = build_model(task, "tiny")
        model.load_state_dict(state, strict=False)
        expected = task.evaluate(model, tokenizer, examples, features, 32)
        got = frame[frame["language"] == "xx-near"].set_index("metric")["value"].to_dict()
        assert got == pytest.approx(expected, abs=1e-6), ref
        assert frame[frame["language"] == "en"]["value"].iloc[0] == m["dev_score"]
    assert list(Path(env["TMPDIR"]).iterdir()) == []  # the killed job's scratch was swept, the re-run's removed


# ---- S3: an outage in the middle of a commit; two jobs for one draw at once; backend retries -----


@pytest.fixture(scope="module")
def s3_runs(weed_server, tmp_path_factory):
    weed = weed_server
    if weed.proc is None:
        weed.start()
    import os

    saved = {k: os.environ.get(k) for k in weed.server.env()}
    os.environ.update(weed.server.env())
    try:
        uri = f"s3://test/faults-{uuid.uuid4().hex[:8]}"
        runs, states = make_runs(open_store(uri), tmp_path_factory.mktemp("s3-src"), CONFIGS, snapshots=2)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return uri, [r.run_key for r in runs], states


def _s3_env(weed, tmp_path, extra=None):
    return job_env(tmp_path, dict(weed.server.env(), **(extra or {})))


@pytest.mark.s3
def test_an_s3_outage_mid_commit_is_exit_75_with_nothing_committed_and_the_backend_retry_completes(weed, s3_runs, tmp_path, monkeypatch):
    """The server is killed while the job sits between its first model's weights and manifest:
    the job retries for its budget, exits 75 in one line with nothing committed; the local
    backend runs it again after a pause (as a Kubernetes Job would; the default number of
    retries is the Jobs' backoffLimit), the server is back by then, and the re-run commits
    every output exactly."""
    from orchestrator.backends.local import LocalBackend, retryable
    from orchestrator.k8s_render import ClusterSettings
    from orchestrator.plan import JobRequest

    assert LocalBackend().retries == ClusterSettings().backoff_limit == 3
    assert retryable(75) and retryable(-9) and not retryable(3) and not retryable(0)
    uri, keys, states = s3_runs
    env = _s3_env(weed, tmp_path, {"XLT_FAILPOINTS": "commit.before-manifest@1", "XLT_STORE_RETRY_SECONDS": "2"})
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # the backend's job processes inherit them
    spec = AverageSpec(experiment_uri=uri, task="nli", methods=METHODS, run_keys=tuple(keys), draw_seed=0)
    backend = LocalBackend(parallelism=1, log_dir=tmp_path / "logs", show_progress=False, retries=2, retry_delay=0.5)
    log = tmp_path / "logs" / "avg.log"
    timings = {}

    def outage():
        wait_paused(env, "commit.before-manifest")  # the first model's weights are stored
        weed.stop()
        timings["stopped"] = time.monotonic()
        release(env, "commit.before-manifest")
        deadline = time.time() + 120
        while time.time() < deadline and not (log.exists() and b"--- exit 75: retry 1 of 2" in log.read_bytes()):
            time.sleep(0.05)
        timings["failed"] = time.monotonic()
        weed.start()

    t = threading.Thread(target=outage)
    t.start()
    [outcome] = backend.run([JobRequest("average", "average", "avg", spec, {})])
    t.join()
    text = log.read_text()
    first, _, second = text.partition("--- exit 75: retry 1 of 2")
    assert outcome.ok and outcome.attempts == 2, text
    assert timings["failed"] - timings["stopped"] < 30  # the retry budget, not forever
    errors = [line for line in first.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot reach the S3 endpoint" in errors[0] and "gave up after" in errors[0], first
    assert "Traceback" not in text
    assert "committed 9 averaged models" in second  # so the first attempt committed none
    for k, v in weed.server.env().items():
        monkeypatch.setenv(k, v)
    assert_exact(open_store(uri), states, keys, 0)


@pytest.mark.s3
def test_two_average_jobs_for_one_draw_at_once_both_end_well_with_one_set_of_bytes(weed, s3_runs, tmp_path, monkeypatch):
    uri, keys, states = s3_runs
    env = _s3_env(weed, tmp_path, {"XLT_FAILPOINTS": "commit.before-manifest@1"})
    spec = average_spec(uri, keys, seed=7)
    procs = [start_job("average", spec, env) for _ in range(2)]
    for p in procs:
        p.stdin.write(spec)
        p.stdin.close()
    for p in procs:
        wait_paused(env, "commit.before-manifest", p)
    release(env, "commit.before-manifest")  # both race for every manifest from here on
    for p in procs:
        p.wait(120)
    errs = [p.stderr.read() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert not any("Traceback" in e or " ERROR " in e for e in errs), errs
    for k, v in weed.server.env().items():
        monkeypatch.setenv(k, v)
    store = open_store(uri)
    h = short_hash(list(keys), 8)
    assert len(manifests_under(store, f"averages/s7-{h}/")) == 9
    assert_exact(store, states, keys, 7)


@pytest.mark.s3
def test_an_average_job_that_finds_other_bytes_committed_keeps_them_and_ends_well(weed, s3_runs, tmp_path, monkeypatch):
    """The same draw averaged to bf16 by a job that reaches each commit after an fp32 job has
    committed it: it overwrites nothing, keeps the committed model (its files check out), exit 0."""
    uri, keys, states = s3_runs
    fp32 = average_spec(uri, keys, seed=8)
    bf16 = spec_to_json(AverageSpec(experiment_uri=uri, task="nli", methods=METHODS, run_keys=tuple(keys), draw_seed=8, output_dtype="bf16"))
    env = _s3_env(weed, tmp_path, {"XLT_FAILPOINTS": "commit.before-weights@1"})
    late = start_job("average", bf16, env)
    late.stdin.write(bf16)
    late.stdin.close()
    wait_paused(env, "commit.before-weights", late)  # computed, about to commit
    first = run_job("average", fp32, _s3_env(weed, tmp_path))
    assert first.returncode == 0, first.stderr
    for k, v in weed.server.env().items():
        monkeypatch.setenv(k, v)
    store = open_store(uri)
    h = short_hash(list(keys), 8)
    before = {k: store.get_bytes(k) for k in store.list_keys(f"averages/s8-{h}/") if not k.endswith("draw.json")}
    release(env, "commit.before-weights")
    late.wait(120)
    err = late.stderr.read()
    assert late.returncode == 0, err
    kept = [line for line in err.splitlines() if "already committed with other bytes" in line and "kept it" in line]
    assert len(kept) == 9 and " ERROR " not in err, err
    assert {k: store.get_bytes(k) for k in before} == before  # not a byte overwritten
    assert all(read_manifest(store, layout.draw_average_ref(8, h, m, k))["dtype"] == "fp32" for m in METHODS for k in (1, 2, 3))
    assert_exact(store, states, keys, 8)


# ---- full disks: the job's scratch, the store -----------------------------------------------------


def _unshare_ok() -> str | None:
    if not shutil.which("unshare"):
        return "no unshare(1)"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a private mount namespace: {probe.stderr.strip()}"


BIG = {"embeddings.word_embeddings.weight": (4000, 32), "encoder.layer.0.dense.weight": (32, 32), "classifier.weight": (3, 32)}  # 0.5 MB


def _in_tmpfs(mount: Path, size: str, then: list[str], env: dict, stdin: str, copy_from: Path | None = None) -> subprocess.CompletedProcess:
    mount.mkdir(parents=True, exist_ok=True)
    script = f'mount -t tmpfs -o size={size} tmpfs "{mount}"'
    if copy_from is not None:
        script += f' && cp -a "{copy_from}/." "{mount}/"'
    script += ' && exec "$@"'
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *then], input=stdin,
                          capture_output=True, text=True, env=env, timeout=180)


def test_a_full_scratch_or_store_disk_is_exit_75_naming_the_path(tmp_path):
    reason = _unshare_ok()
    if reason:
        pytest.skip(reason)
    src = tmp_path / "store"
    store = LocalStore(src / "exp")
    runs, _ = make_runs(store, tmp_path / "src", CONFIGS[:2], snapshots=1, shapes=BIG)
    keys = [r.run_key for r in runs]
    before = fingerprint(src)
    job = [sys.executable, "-m", "jobs", "average", "--spec", "-"]

    # the scratch (TMPDIR) on a 256 kB disk: the averages do not fit there
    mount = tmp_path / "small-tmp"
    env = job_env(tmp_path, {"TMPDIR": str(mount)})
    spec = spec_to_json(AverageSpec(experiment_uri=store.uri, task="nli", methods=("r-last",), run_keys=tuple(keys), draw_seed=0))
    full = _in_tmpfs(mount, "256k", job, env, spec)
    assert full.returncode == EXIT_TEMPORARY, full.stderr
    errors = [line for line in full.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(mount) in errors[0], full.stderr
    assert "Traceback" not in full.stderr
    assert fingerprint(src) == before  # nothing committed, nothing half-written

    # the store on a disk with room for its inputs only: the first average does not fit
    used = sum(-(-p.stat().st_size // 4096) * 4096 for p in src.rglob("*") if p.is_file())  # tmpfs counts whole pages
    mount = tmp_path / "small-store"
    spec = spec_to_json(AverageSpec(experiment_uri=f"file://{mount}/exp", task="nli", methods=("r-last",), run_keys=tuple(keys), draw_seed=0))
    full = _in_tmpfs(mount, f"{used // 1024 + 160}k", job, job_env(tmp_path), spec, copy_from=src)
    assert full.returncode == EXIT_TEMPORARY, full.stderr
    errors = [line for line in full.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and f"{mount}/exp/averages/" in errors[0], full.stderr
    assert "Traceback" not in full.stderr
