"""Greedy soup: members picked by English dev forward passes (tiny XLM-R, synthetic NLI dev)."""
from __future__ import annotations

import pytest
import torch

from jobs import layout
from jobs.average import run_average
from jobs.common import build_model
from jobs.models import load_tokenizer
from jobs.snapshots import read_manifest
from jobs.spec import AverageSpec, short_hash
from jobs.store import LocalStore
from jobs.tasks import get_task

from average_support import commit_run, load, max_abs_diff, naive_mean, run_spec


@pytest.mark.slow
def test_greedy_soup_adds_a_snapshot_only_if_english_dev_does_not_drop(tmp_path):
    store = LocalStore(tmp_path / "store")
    task = get_task("nli")
    model = build_model(task, "tiny")
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    spec0 = run_spec(store.uri, 1e-5, 16, 1)
    tokenizer = load_tokenizer("tiny")
    examples = task.load(spec0.dev_data)
    features = task.encode(tokenizer, examples, spec0.max_length)

    def score(state):
        model.load_state_dict(state, strict=False)
        return float(task.score(model, tokenizer, examples, features, 64))

    g = torch.Generator().manual_seed(0)
    keys, states = [], {}
    for r, lr in enumerate((1e-5, 2e-5, 3e-5)):
        snaps = []
        for i in range(3):
            scale = 0.02 * (1 + 3 * ((r + i) % 3))  # some snapshots far from the others: soups can get worse
            snaps.append({k: (v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() and not k.startswith("classifier.") else v.clone()) for k, v in base.items()})
        key, manifests = commit_run(store, tmp_path / "src", run_spec(store.uri, lr, 16, 1), snaps, [score(s) for s in snaps])
        keys.append(key)
        states.update({m["ref"]: s for m, s in zip(manifests, snaps)})

    spec = AverageSpec(experiment_uri=store.uri, task="nli", methods=("greedy",), run_keys=tuple(keys), draw_seed=0)
    run_average(spec, tmp_path / "scratch", store=store)
    h = short_hash(list(keys), 8)
    for k in (1, 2, 3):
        m = read_manifest(store, layout.draw_average_ref(0, h, "greedy", k))
        members = [c["ref"] for c in m["constituents"]]
        infos = [read_manifest(store, layout.run_sum_ref(key)) for key in keys[:k]]
        ranked = sorted([s for i in infos for s in sorted(i["snapshots"], key=lambda s: s["step"])], key=lambda s: -s["dev_score"])
        assert members[0] == ranked[0]["ref"]  # the best snapshot starts the soup
        assert len(m["greedy"]) == len(ranked)  # every candidate was tried once, best first
        best = ranked[0]["dev_score"]
        for step in m["greedy"][1:]:
            assert step["added"] == (step["dev_score"] >= best)
            if step["added"]:
                best = step["dev_score"]
        assert m["dev_score"] == best and m["dev_metric"] == "acc"
        averaged = load(store, m["ref"])
        assert max_abs_diff(averaged, naive_mean([states[r] for r in members])) < 1e-6
        assert score(averaged) == pytest.approx(m["dev_score"], abs=0.03)
