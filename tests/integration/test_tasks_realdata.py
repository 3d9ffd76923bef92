"""Each task end to end on real data: the tiny model trains a head run and a grid run (head
frozen) on a slice of the real English training file, then is evaluated through the store on
English dev and at least three other languages' real files; `orchestrator sweep` for every task
on synthetic and on local real data; gradient accumulation gives the full-batch update.

Timings are printed (run with -s to see them)."""
from __future__ import annotations

import json
import time

import pytest
import torch
import yaml
from click.testing import CliRunner

from jobs import layout
from jobs.evaluate import run_evaluate
from jobs.results import from_parquet_bytes
from jobs.snapshots import read_manifest
from jobs.spec import DatasetRef, EvaluateSpec, HeadRef, TrainSpec
from jobs.store import open_store
from jobs.train import run_train

# whole pipelines of real job processes: minutes on 2 idle cores, far more beside other CPU work
pytestmark = pytest.mark.timeout(1500)

R = "{root}"
CASES = {
    "nli": dict(
        train=DatasetRef("xnli", "en", "train", path=f"{R}/xnli/xnli.test.en.csv", limit=256),
        dev=DatasetRef("xnli", "en", "validation", path=f"{R}/xnli/dev-en.tsv", limit=64),
        targets=[DatasetRef("xnli", l, s, path=f"{R}/xnli/dev-{l}.tsv", half=h, limit=64)
                 for l in ("de", "sw", "zh") for s, h in (("validation", "first"), ("test", "second"))],
        lr=1e-3,
    ),
    "ner": dict(
        train=DatasetRef("wikiann", "en", "train", path=f"{R}/panx/train-en.tsv", limit=256),
        dev=DatasetRef("wikiann", "en", "validation", path=f"{R}/panx/dev-en.tsv", limit=64),
        targets=[DatasetRef("wikiann", l, "test", path=f"{R}/panx/dev-{l}.tsv", half="second", limit=64) for l in ("de", "ar")]
        + [DatasetRef("masakhaner2", l, "test", path=f"{R}/masakhaner/{l}/test.txt", limit=64) for l in ("yor", "swa")],
        lr=2e-3,
    ),
    "tydiqa": dict(
        train=DatasetRef("tydiqa", "en", "train", path=f"{R}/tydiqa_goldp/tydiqa.goldp.en.train.json", half="first", limit=128),
        dev=DatasetRef("tydiqa", "en", "validation", path=f"{R}/tydiqa_goldp/tydiqa.goldp.en.train.json", half="second", limit=32),
        targets=[DatasetRef("tydiqa", l, "test", path=f"{R}/tydiqa_goldp/tydiqa.goldp.{l}.train.json", half="second", limit=32) for l in ("ko", "sw")]
        + [DatasetRef("xquad", "de", "test", path=f"{R}/xquad/xquad.de.json", limit=32),
           DatasetRef("mlqa", "zh", "test", path=f"{R}/mlqa/dev-context-zh-question-zh.json", limit=32)],
        lr=2e-3,
    ),
}


def _ref(ref: DatasetRef, root) -> DatasetRef:
    import dataclasses

    return dataclasses.replace(ref, path=ref.path.format(root=root))


@pytest.mark.parametrize("task", ["nli", "ner", "tydiqa"])
def test_task_trains_and_evaluates_on_real_files(task, tmp_path, realdata_dir):
    case = CASES[task]
    t0 = time.perf_counter()
    uri = f"file://{tmp_path}/store"
    train, dev = _ref(case["train"], realdata_dir), _ref(case["dev"], realdata_dir)
    common = dict(experiment_uri=uri, task=task, base_model="tiny", train_data=train, dev_data=dev,
                  learning_rate=case["lr"], batch_size=16, seed=0, epochs=1, max_length=128, eval_batch_size=64)
    head_spec = TrainSpec(stage="head", **common)
    t_epoch = time.perf_counter()
    run_train(head_spec)
    epoch_seconds = time.perf_counter() - t_epoch
    store = open_store(uri)
    head_ref = layout.head_ref(head_spec.run_key)
    head = HeadRef(head_ref, read_manifest(store, head_ref)["sha256"])

    spec = TrainSpec(head=head, **dict(common, seed=1))
    key = run_train(spec)
    [snapshot] = json.loads(store.get_bytes(layout.run_complete_key(key)))["snapshots"]
    assert read_manifest(store, snapshot)["head_sha256"] == head.sha256

    # the grid run kept the shared head frozen
    from safetensors.torch import load_file

    from jobs.snapshots import WeightsCache

    cache = WeightsCache(store, tmp_path / "wcache")
    head_weights = load_file(str(cache.path(head_ref, read_manifest(store, head_ref))))
    run_weights = load_file(str(cache.path(snapshot, read_manifest(store, snapshot))))
    assert head_weights and all(torch.equal(v, run_weights[k]) for k, v in head_weights.items())

    targets = tuple(_ref(r, realdata_dir) for r in case["targets"])
    run_evaluate(EvaluateSpec(experiment_uri=uri, task=task, base_model="tiny", refs=(snapshot,), source_dev=dev,
                              targets=targets, max_length=128))
    frame = from_parquet_bytes(store.get_bytes(layout.results_key(snapshot)))
    primary = frame[frame["metric"] == ("acc" if task == "nli" else "f1")]
    got = set(zip(primary["dataset"], primary["language"], primary["split"]))
    want = {(r.dataset, r.language, r.split) for r in (dev, *targets)}
    assert got == want
    assert len({l for _, l, _ in got if l != "en"}) >= 3
    assert frame["value"].between(0, 1).all() and frame["value"].notna().all()
    assert (primary["n_examples"] > 0).all()
    if task == "tydiqa":
        assert set(frame["metric"]) == {"f1", "em"}
    print(f"\n[timing] {task}: one epoch on the real English slice ({train.limit} examples) incl. load/tokenise "
          f"{epoch_seconds:.1f}s; whole test {time.perf_counter() - t0:.1f}s")


def test_gradient_accumulation_gives_the_full_batch_update(tmp_path, monkeypatch):
    """batch 8 as 4 micro-batches of 2 == batch 8 at once (dropout off), and the optimizer
    steps once per batch_size examples."""
    import jobs.train
    from jobs import common

    real = common.load_pretrained

    def no_dropout(task, base_model):
        model = real(task, base_model)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        return model

    monkeypatch.setattr(jobs.train, "load_pretrained", no_dropout)
    data = DatasetRef("synthetic-nli", "en", "train", limit=32)
    weights = {}
    for micro in (None, 2):
        uri = f"file://{tmp_path}/store-{micro}"
        spec = TrainSpec(experiment_uri=uri, task="nli", base_model="tiny", train_data=data,
                         dev_data=DatasetRef("synthetic-nli", "en", "validation", limit=16), learning_rate=1e-3,
                         batch_size=8, seed=1, epochs=1, micro_batch_size=micro)
        key = run_train(spec)
        store = open_store(uri)
        [ref] = json.loads(store.get_bytes(layout.run_complete_key(key)))["snapshots"]
        manifest = read_manifest(store, ref)
        assert manifest["step"] == 32 // 8  # one optimizer step per batch_size examples
        from safetensors.torch import load_file

        from jobs.snapshots import WeightsCache

        weights[micro] = load_file(str(WeightsCache(store, tmp_path / f"c{micro}").path(ref, manifest)))
    for k, v in weights[None].items():
        assert torch.allclose(v, weights[2][k], atol=1e-5), k


def _sweep_config(task: str, realdata_dir, real: bool) -> dict:
    if real:
        cfg = yaml.safe_load(open(f"configs/realdata-{task}.yaml", encoding="utf-8"))
        cfg["data"]["root"] = str(realdata_dir)
        cfg["data"]["train"]["limit"] = 96
        cfg["data"]["dev"]["limit"] = 32
    else:
        cfg = {"task": task, "base_model": "tiny", "data": {
            "train": {"dataset": f"synthetic-{task}", "language": "en", "split": "train", "limit": 96},
            "dev": {"dataset": f"synthetic-{task}", "language": "en", "split": "validation", "limit": 32},
            "targets": [{"dataset": f"synthetic-{task}", "languages": ["xx-near"], "limit": 32}]}}
    cfg.update(grid={"learning_rates": [1e-3], "batch_sizes": [32], "seeds": [1]}, epochs=1,
               head={"enabled": True, "learning_rate": 1e-3, "batch_size": 32, "seed": 0})
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("task", ["nli", "ner", "tydiqa"])
@pytest.mark.parametrize("real", [False, True], ids=["synthetic", "realdata"])
def test_orchestrator_sweep_for_every_task(task, real, tmp_path, realdata_dir):
    from orchestrator import plan
    from orchestrator.cli import main
    from orchestrator.config import load_config

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_sweep_config(task, realdata_dir, real)))
    bucket = f"file://{tmp_path}/store"
    args = ["sweep", "--config", str(path), "--bucket", bucket, "--experiment", "sw", "--parallelism", "1", "--task", task]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cfg = load_config(path, {"task": task})
    store = open_store(f"{bucket}/sw")
    head = plan.committed_head(cfg, store, store.uri)
    assert head is not None
    assert len(plan.finished_runs(cfg, store, store.uri, head)) == 1
