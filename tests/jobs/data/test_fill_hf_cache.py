"""images/scripts/fill_hf_cache.py against the Hub API fixture server: the cache it fills serves
every registered dataset and the base model with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 and a
read-only HF_HOME, as in a pod (k8s mounts the cache volume read-only), without one request.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.data import registry
from tests.hub_fixture_repos import TINY_MODEL_ID
from tests.jobs.data.test_hub_loading import REPO, child_env, expected_examples, run_child, start_hub

FILL = REPO / "images" / "scripts" / "fill_hf_cache.py"
LANGUAGES = ["en", "te", "yor", "quy"]  # at least one of every registered Hub dataset
# one split of every registered Hub dataset, offline: (dataset, language, split, hub repo, config, hub split)
OFFLINE = [
    ("mnli", "en", "train", "nyu-mll/glue", "mnli", "train"),
    ("xnli", "en", "validation", "facebook/xnli", "en", "validation"),
    ("americasnli", "quy", "validation", "nala-cub/americas_nli", "quy", "validation"),
    ("indicxnli", "te", "test", "Divyanshu/indicxnli", "te", "test"),
    ("wikiann", "te", "validation", "unimelb-nlp/wikiann", "te", "validation"),
    ("masakhaner", "yor", "validation", "masakhane/masakhaner", "yor", "validation"),
    ("masakhaner2", "yor", "test", "masakhane/masakhaner2", "yor", "test"),
    ("tydiqa", "en", "train", "google-research-datasets/tydiqa", "secondary_task", "train"),
    ("xquad", "en", "test", "google/xquad", "xquad.en", "validation"),
    ("mlqa", "en", "test", "facebook/mlqa", "mlqa.en.en", "test"),
]
NOT_FILLED = ("xnli", "ar", "test")  # a language left out of the fill


def tree_state(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def read_only_prefix(path: Path) -> list[str] | None:
    """A command prefix that runs the rest with `path` mounted read-only (a private mount namespace),
    or None where this machine does not allow it (no privilege for unshare/mount)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, str(path), "sh", "-c", 'touch "$0/.probe"', str(path)],
                           capture_output=True, text=True)
    if probe.returncode == 0 or "Read-only file system" not in probe.stderr:
        (path / ".probe").unlink(missing_ok=True)
        return None
    return ["unshare", "-m", "sh", "-c", script, str(path)]


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub-fill")
    hf_home = tmp / "hf"
    hub = start_hub()
    try:
        datasets = [name for name, info in registry.DATASETS.items() if info.hub_id is not None]
        env = child_env(hub.url, hf_home, TMPDIR=str(tmp))
        fill = subprocess.run([sys.executable, str(FILL), "--models", TINY_MODEL_ID, "--datasets", *datasets,
                               "--languages", *LANGUAGES], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        online_requests = len(hub.requests)
        scratch = tmp / "scratch"
        scratch.mkdir()
        ro = read_only_prefix(hf_home)
        before = tree_state(hf_home)
        offline_env = child_env(hub.url, hf_home, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TMPDIR=str(scratch))
        if ro is None:  # no read-only mount here: keep the datasets cache off HF_HOME by hand, check no write below
            offline_env["XLT_DATASETS_CACHE"] = str(scratch / "datasets")
        loads = [list(c[:3]) for c in OFFLINE] + [list(NOT_FILLED)]
        offline = run_child({"loads": loads, "model": TINY_MODEL_ID}, offline_env, tmp, argv_prefix=ro)
        yield {"fill": fill, "offline": offline, "offline_requests": hub.requests[online_requests:],
               "before": before, "after": tree_state(hf_home), "read_only": ro is not None}
    finally:
        hub.stop()


def test_plan_lists_the_pinned_revision_and_files_of_each_split():
    proc = subprocess.run([sys.executable, str(FILL), "--plan", "--models", "m", "--datasets", "masakhaner", "tydiqa",
                           "--languages", "yor", "fi", "en"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "model   m"
    assert "dataset masakhane/masakhaner @ refs/convert/parquet yor/test/*.parquet  (masakhaner yor/test)" in lines
    tydiqa = [line for line in lines if "tydiqa" in line]  # one config for every language: two Hub splits, once
    assert len(tydiqa) == 2 and all("@ da78f23f9119363459acbaf46bf89426ff26c259 secondary_task/" in t for t in tydiqa)


def test_fill_succeeds_for_every_dataset_and_the_model(filled):
    fill = filled["fill"]
    assert fill.returncode == 0, fill.stderr[-4000:]
    ok = [line for line in fill.stderr.splitlines() if line.startswith("ok ")]
    assert f"ok      model {TINY_MODEL_ID}" in ok
    for name, info in registry.DATASETS.items():
        if info.hub_id is not None:
            assert any(f"dataset {name} " in line for line in ok), name
    assert not [line for line in fill.stderr.splitlines() if line.startswith("FAILED")]


def test_filled_cache_serves_every_dataset_offline_without_a_request(filled):
    offline = filled["offline"]
    assert offline["env"]["HF_HUB_OFFLINE"] == "1" and offline["env"]["HF_DATASETS_OFFLINE"] == "1"
    for name, language, split, hub_repo, config, hub_split in OFFLINE:
        got = offline["loads"][f"{name}/{language}/{split}"]
        assert got["ok"], got.get("trace")
        assert got["examples"] == expected_examples(name, language, hub_repo, config, hub_split), name
    assert filled["offline_requests"] == [], "offline jobs must not reach the Hub"


def test_filled_cache_serves_the_model_offline(filled):
    got = filled["offline"]["model"]
    assert got["ok"], got.get("trace")
    assert got["class"] == "XLMRobertaForSequenceClassification" and got["hidden"] == 64


def test_offline_jobs_write_nothing_into_the_cache(filled):
    assert filled["after"] == filled["before"]
    if not filled["read_only"]:
        pytest.skip("no read-only mount on this machine (unshare/mount not permitted); checked: no file changed")


def test_an_unfilled_split_fails_offline_in_one_line(filled):
    got = filled["offline"]["loads"]["/".join(NOT_FILLED)]
    assert not got["ok"] and got["type"] == "DataError", got
    assert "\n" not in got["error"] and got["error"].startswith("cannot load xnli ar/test from the Hub"), got["error"]
    assert "path" in got["error"], got["error"]
