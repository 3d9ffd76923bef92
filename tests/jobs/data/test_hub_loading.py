"""Every registered Hub dataset loads one split through a server on 127.0.0.1 that speaks the Hub's
HTTP API (tests/hub_server.py), from repositories laid out as the documented Hub listings are
(tests/hub_fixture_repos.py), with the real huggingface_hub, datasets and transformers code in a
subprocess (huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT at import; this process runs
offline). The expectations below are written from the fixture's documented rows, not from the
registry: a wrong Hub id, revision, config or split name, or a lost ClassLabel, fails here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.data import registry
from tests.hub_fixture_repos import MASAKHANER_NAMES, NLI_NAMES, TINY_MODEL_ID, WIKIANN_NAMES, dataset_repos, fixture, model_repo
from tests.hub_server import HubServer

REPO = Path(__file__).resolve().parents[3]

# (dataset, language, split) -> (Hub repo, Hub config, Hub split), as the sources name them
CASES = [
    ("mnli", "en", "validation", "nyu-mll/glue", "mnli", "validation_matched"),
    ("xnli", "de", "test", "facebook/xnli", "de", "test"),
    ("americasnli", "quy", "test", "nala-cub/americas_nli", "quy", "test"),
    ("indicxnli", "te", "validation", "Divyanshu/indicxnli", "te", "validation"),
    ("wikiann", "sw", "test", "unimelb-nlp/wikiann", "sw", "test"),
    ("masakhaner", "yor", "test", "masakhane/masakhaner", "yor", "test"),
    ("masakhaner2", "zul", "validation", "masakhane/masakhaner2", "zul", "validation"),
    ("tydiqa", "fi", "test", "google-research-datasets/tydiqa", "secondary_task", "validation"),  # target test = Hub dev
    ("xquad", "de", "test", "google/xquad", "xquad.de", "validation"),
    ("mlqa", "de", "validation", "facebook/mlqa", "mlqa.de.de", "validation"),
]
MORE = [  # the paper's other split mappings
    ("mnli", "en", "test", "nyu-mll/glue", "mnli", "validation_mismatched"),
    ("tydiqa", "fi", "validation", "google-research-datasets/tydiqa", "secondary_task", "train"),  # target dev = Hub train
    ("tydiqa", "en", "validation", "google-research-datasets/tydiqa", "secondary_task", "validation"),
]
DATE_TO_O = {"B-DATE": "O", "I-DATE": "O"}  # the paper drops MasakhaNER's DATE entities
QA_ID_PREFIX = {"fi": "finnish-", "en": "english-"}  # TyDiQA: the language is the id's prefix


def child_env(hub_url: str, hf_home: Path, **extra: str) -> dict:
    """This process's environment without any Hugging Face setting, pointed at the fixture server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "XLT_DATASETS"))}
    env.update(HF_ENDPOINT=hub_url, HF_HOME=str(hf_home), HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def run_child(spec: dict, env: dict, tmp: Path, timeout: int = 240, argv_prefix: list[str] | None = None) -> dict:
    spec_path, out_path = tmp / "spec.json", tmp / "out.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "tests.hub_child", str(spec_path), str(out_path)]
    proc = subprocess.run((argv_prefix or []) + command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0 and out_path.exists(), f"child failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(out_path.read_text())


def start_hub() -> HubServer:
    from jobs.models import resolve_base_model

    return HubServer(dataset_repos() + [model_repo(resolve_base_model("tiny"))]).start()


def expected_examples(name: str, language: str, hub_repo: str, config: str, hub_split: str) -> list[dict]:
    """What load_examples must return, from the fixture's rows and the documented label names."""
    rows = fixture(hub_repo).configs[config][hub_split]
    task = registry.get(name).task
    if task == "nli":
        return [{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": NLI_NAMES[r["label"]]}
                for r in rows if r["label"] >= 0]
    if task == "ner":
        names = MASAKHANER_NAMES if hub_repo.startswith("masakhane/") else WIKIANN_NAMES
        return [{"tokens": r["tokens"], "tags": [DATE_TO_O.get(names[t], names[t]) for t in r["ner_tags"]]} for r in rows]
    prefix = QA_ID_PREFIX.get(language, "") if name == "tydiqa" else ""
    return [{"id": r["id"], "question": r["question"], "context": r["context"],
             "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]}
            for r in rows if r["id"].startswith(prefix)]


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    """One subprocess, online against the fixture server with an empty HF_HOME: every case, datasets'
    own Hub loader on the same revisions, the failure messages and a from_pretrained."""
    tmp = tmp_path_factory.mktemp("hub-online")
    hub = start_hub()
    try:
        env = child_env(hub.url, tmp / "hf", TMPDIR=str(tmp))
        loads = [list(c[:3]) for c in CASES + MORE]
        result = run_child({"loads": loads, "datasets_hub_path": True, "errors": True, "model": TINY_MODEL_ID}, env, tmp)
        yield result, list(hub.requests)
    finally:
        hub.stop()


def test_every_registered_hub_dataset_has_a_case():
    on_hub = {name for name, info in registry.DATASETS.items() if info.hub_id is not None}
    assert on_hub == {c[0] for c in CASES}, "a registry dataset on the Hub without a loading case (or a stale case)"


@pytest.mark.parametrize("case", CASES + MORE, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_registered_dataset_loads_one_split_through_the_hub_api(online, case):
    result, requests = online
    name, language, split, hub_repo, config, hub_split = case
    got = result["loads"][f"{name}/{language}/{split}"]
    assert got["ok"], got.get("trace")
    assert got["examples"] == expected_examples(name, language, hub_repo, config, hub_split)
    assert got["examples"], "an empty split proves nothing"
    info = registry.get(name)
    assert info.hub_id == hub_repo
    # the files came from the pinned revision, through the Hub's resolve endpoint
    fetched = [path for method, path in requests if method == "GET" and f"/datasets/{hub_repo}/resolve/" in path]
    assert any(f"/{config}/{hub_split}" in p for p in fetched), fetched


def test_datasets_hub_loader_reads_the_same_rows_at_the_pinned_revisions(online):
    """datasets.load_dataset(<hub id>, ..., revision=<pin>) itself (its Hub module: README configs, or
    data_files on the parquet export) returns the fixture rows, ClassLabel names included."""
    result, _ = online
    for name, language, split, hub_repo, config, hub_split in CASES:
        got = result["datasets_hub_path"][f"{name}/{language}/{split}"]
        assert got["ok"], got.get("trace")
        assert got["rows"] == fixture(hub_repo).configs[config][hub_split], name
        if registry.get(name).task == "nli":
            assert "ClassLabel(names=['entailment', 'neutral', 'contradiction'])" in got["features"]


def test_a_script_dataset_without_a_loadable_revision_fails_in_one_line_naming_it(online):
    result, _ = online
    errors = result["errors"]
    for key in ("no_revision", "no_conversion", "script_main"):
        got = errors[key]
        assert not got["ok"] and got["type"] == "DataError", (key, got)
        assert "\n" not in got["error"], got["error"]
        assert "path" in got["error"] and "local files" in got["error"], got["error"]
    assert errors["no_revision"]["error"].startswith("masakhaner: no revision of masakhane/masakhaner")
    assert "canadian-invertebrates" in errors["no_conversion"]["error"]
    assert "refs/convert/parquet" in errors["no_conversion"]["error"]
    assert "masakhaner yor/test" in errors["script_main"]["error"] and "revision main" in errors["script_main"]["error"]


def test_from_pretrained_of_a_hub_model_through_the_hub_api(online):
    result, requests = online
    got = result["model"]
    assert got["ok"], got.get("trace")
    assert got["class"] == "XLMRobertaForSequenceClassification"
    assert (got["hidden"], got["layers"]) == (64, 2)
    assert got["ids"][0] == 0 and got["ids"][-1] == 2 and len(got["ids"]) > 2  # <s> ... </s>
    fetched = {path.rsplit("/", 1)[-1] for method, path in requests if method == "GET" and f"/{TINY_MODEL_ID}/resolve/" in path}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= fetched, fetched
