"""`orchestrator soup` and `orchestrator export` (issue 8): the tiny preset end to end, re-runs,
the --until-plateau stop rule through a scripted scorer, and one-line errors on bad input.

Run it with: .venv/bin/python -m pytest tests/orchestrator/test_soup.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from jobs import layout
from jobs.common import load_model_from_ref
from jobs.snapshots import WeightsCache, read_manifest, sha256_file
from jobs.store import open_store
from jobs.tasks import get_task

from orchestrator.backends.local import LocalBackend
from orchestrator.cli import main
from orchestrator.commands import soup as soup_cmd
from orchestrator.context import open_experiment

# whole pipelines of real job processes: minutes on 2 idle cores, far more beside other CPU work
pytestmark = pytest.mark.timeout(1500)

# tiny and fast: 4 configurations x 2 seeds, one epoch with two snapshots, a few examples
TINY_SOUP = {
    "task": "nli",
    "base_model": "tiny",
    "grid": {"learning_rates": [3.0e-4, 1.0e-3], "batch_sizes": [16, 32], "seeds": [1, 2]},
    "epochs": 1,
    "snapshots_per_epoch": 2,
    "head": {"enabled": True, "learning_rate": 5.0e-4, "batch_size": 32, "seed": 0},
    "data": {
        "train": {"dataset": "synthetic-nli", "language": "en", "split": "train", "limit": 192},
        "dev": {"dataset": "synthetic-nli", "language": "en", "split": "validation", "limit": 64},
        "targets": [{"dataset": "synthetic-nli", "languages": ["xx-near", "xx-far"], "splits": ["validation"], "limit": 64}],
    },
}


class RecordingBackend(LocalBackend):
    """The local backend, remembering every job it ran."""

    def __init__(self, calls: list, **kwargs):
        super().__init__(show_progress=False, **kwargs)
        self.calls = calls

    def run(self, requests, title="jobs"):
        self.calls.extend(requests)
        return super().run(requests, title)


def write_config(path: Path, **changes) -> Path:
    cfg = json.loads(json.dumps(TINY_SOUP))
    cfg.update(changes)
    path.write_text(yaml.safe_dump(cfg))
    return path


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def souped(tmp_path_factory):
    """One real soup of 3 runs on the tiny preset (head, 3 runs, average, evaluate, export)."""
    root = tmp_path_factory.mktemp("soup")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)  # job logs go to ./.logs
    calls: list = []
    mp.setattr(soup_cmd, "make_backend", lambda exp, parallelism, backend: RecordingBackend(calls, parallelism=parallelism))
    config = write_config(root / "soup.yaml")
    bucket = f"file://{root / 'store'}"
    out = root / "out"
    result = invoke("soup", "--config", str(config), "--bucket", bucket, "--runs", "3", "--parallelism", "3", "--out", str(out))
    yield {"root": root, "config": config, "bucket": bucket, "out": out, "calls": calls, "output": result.output,
           "exit_code": result.exit_code, "mp": mp}
    mp.undo()


def soup_record(souped) -> dict:
    store = open_store(souped["bucket"]).child("nli-tiny")
    [key] = store.list_keys("soups/")
    return json.loads(store.get_bytes(key))


@pytest.mark.slow
def test_soup_exports_a_loadable_model_equal_to_the_stored_average(souped):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert souped["exit_code"] == 0, souped["output"]
    record = soup_record(souped)
    assert [c.spec.run_key for c in souped["calls"] if c.stage == "train"] == record["draw"]["run_keys"]
    assert len(record["runs"]) == 3 and record["runs_trained"] == 3
    ref = record["ref"]
    assert ref.endswith("/r-ca/k03")

    out = souped["out"]
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    store = open_store(souped["bucket"]).child("nli-tiny")
    task = get_task("nli")
    stored, manifest = load_model_from_ref(task, "tiny", store, ref, WeightsCache(store))
    stored.eval()
    batch = tokenizer(["a cat sits here", "le chat dort"], ["an animal sits", "personne ne dort"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, stored(**batch).logits, rtol=1e-5, atol=1e-6)
    # the exported weights are exactly the stored tensors
    from safetensors.torch import load_file

    exported, original = load_file(str(out / "model.safetensors")), load_file(str(WeightsCache(store).path(ref)))
    assert exported.keys() == original.keys() and all(torch.equal(exported[k], original[k]) for k in original)

    card = (out / "README.md").read_text()
    for run in record["runs"]:
        assert run["run_key"] in card and str(run["learning_rate"]) in card
    assert len(manifest["constituents"]) == 6  # 3 runs x 2 snapshots
    for c in manifest["constituents"]:
        assert c["ref"] in card and c["sha256"] in card
    assert "English dev" in card and "xx-near" in card and "xlt-averaging 0.1.0" in card
    assert "Running average" in card
    assert "running R-CA" in souped["output"]  # the plateau table, printed
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["english_dev"] is not None and [r["k"] for r in recipe["running_average"]] == [1, 2, 3]


@pytest.mark.slow
def test_rerun_reuses_runs_and_exports_identical_weights(souped):
    assert souped["exit_code"] == 0, souped["output"]
    before = len(souped["calls"])
    args = ["soup", "--config", str(souped["config"]), "--bucket", souped["bucket"], "--runs", "3"]
    again = invoke(*args, "--out", str(souped["out"]), "--force")
    assert again.exit_code == 0, again.output
    other = souped["root"] / "out2"
    third = invoke(*args, "--out", str(other))
    assert third.exit_code == 0, third.output
    new_jobs = souped["calls"][before:]
    assert [j.kind for j in new_jobs if j.kind in ("train", "average", "evaluate")] == []  # all reused
    digest = sha256_file(other / "model.safetensors")
    assert digest == sha256_file(souped["out"] / "model.safetensors")

    # `export` of the same ref to a file:// prefix writes the same weights
    ref = soup_record(souped)["ref"]
    target = souped["root"] / "exported"
    result = invoke("export", "--bucket", souped["bucket"], "--ref", f"nli-tiny/{ref}", "--out", f"file://{target}")
    assert result.exit_code == 0, result.output
    assert sha256_file(target / "model.safetensors") == digest
    assert (target / "README.md").read_text().count("runs/") >= 6


def test_until_plateau_stops_launching_runs(tmp_path):
    """Scripted English dev scores: the running average plateaus after 4 of 6 runs."""
    config = write_config(
        tmp_path / "grid.yaml",
        grid={"learning_rates": [1.0e-4, 3.0e-4, 1.0e-3], "batch_sizes": [16, 32], "seeds": [1, 2]},
        head={"enabled": False},
    )
    exp = open_experiment(f"file://{tmp_path / 'store'}", None, str(config), {})

    class FakeBackend:
        log_location = f"logs in {tmp_path}/"
        estimates_cost = False

        def __init__(self):
            self.launched = []

        def run(self, requests, title="jobs"):
            self.launched += [r for r in requests]
            return [type("Outcome", (), {"ok": True, "request": r})() for r in requests]

    script = [0.50, 0.60, 0.605, 0.607, 0.70, 0.71]
    scored = []

    def scorer(prefix):
        scored.append(list(prefix))
        return script[: len(prefix)]

    backend = FakeBackend()
    result = soup_cmd.train_soup(exp, backend, runs=6, seed=1, until_plateau=0.01, parallelism=2, scorer=scorer)
    draw = result.draw.run_keys
    assert len(draw) == 6
    assert [r.spec.run_key for r in backend.launched] == list(draw[:4])  # two waves, in draw order
    assert result.trained == list(draw[:4])
    assert scored == [list(draw[:2]), list(draw[:4])]
    # the draw is PROTOCOL's shuffle of the grid, recorded in the store
    record = json.loads(exp.store.get_bytes(soup_cmd.soup_key(result.name)))
    assert record["draw"]["run_keys"] == list(draw) and record["seed"] == 1

    # without a plateau every run is launched
    backend = FakeBackend()
    result = soup_cmd.train_soup(exp, backend, runs=6, seed=1, until_plateau=0.001, parallelism=2, scorer=lambda p: [0.1 * i for i in range(len(p))])
    assert [r.spec.run_key for r in backend.launched] == list(draw)


def test_plateau_rule():
    assert not soup_cmd.plateaued([0.5, 0.51], 0.1)  # needs two additions
    assert soup_cmd.plateaued([0.5, 0.51, 0.515], 0.02)
    assert not soup_cmd.plateaued([0.5, 0.51, 0.6], 0.02)
    assert not soup_cmd.plateaued([0.5, 0.6, 0.61], 0.02)
    assert soup_cmd.plateaued([0.5, 0.49, 0.48], 0.0)  # a drop is no improvement


def test_too_many_runs_is_one_line_and_does_nothing(tmp_path):
    config = write_config(tmp_path / "c.yaml")
    result = CliRunner().invoke(main, ["soup", "--config", str(config), "--bucket", f"file://{tmp_path / 'store'}", "--runs", "5", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "only 4 distinct (learning rate, batch size) configurations" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "store").rglob("*.json"))


def test_non_empty_output_is_refused(tmp_path):
    config = write_config(tmp_path / "c.yaml")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["soup", "--config", str(config), "--bucket", f"file://{tmp_path / 'store'}", "--runs", "2", "--out", str(out)])
    assert result.exit_code == 1 and "not empty; pass --force" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert not list((tmp_path / "store").rglob("*.json"))  # no head, no draw


def test_export_errors_are_one_line(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}").child("nli-tiny")
    store.put_bytes("soups/placeholder.json", b"{}")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", "--bucket", f"file://{tmp_path / 'store'}", "--ref", "nli-tiny/averages/s0-00000000/r-ca/k03", "--out", str(out)])
    assert result.exit_code == 1
    assert "model ref 'averages/s0-00000000/r-ca/k03' does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()

    out.mkdir()
    (out / "model.safetensors").write_bytes(b"keep")
    result = CliRunner().invoke(main, ["export", "--bucket", f"file://{tmp_path / 'store' / 'nli-tiny'}", "--ref", "averages/x/r-ca/k01", "--out", str(out)])
    assert result.exit_code == 1 and "not empty" in result.output
    assert (out / "model.safetensors").read_bytes() == b"keep"
