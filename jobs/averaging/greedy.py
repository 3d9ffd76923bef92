"""Greedy soup (method `greedy`): members chosen by English dev forward passes.

Wortsman et al.'s greedy soup over the snapshots of the first k runs, for every k: candidates
are ranked by their English dev score (from the train job); the best starts the soup; each next
candidate joins if the soup's English dev score does not drop. The members' average is then
computed by the same streaming pass as every other method (jobs.averaging.engine). Only
`GreedySoup.select_all` imports this module: a job without greedy soup loads no task code here.
"""
from __future__ import annotations

from typing import Sequence

import torch

from jobs.averaging.methods import RunInfo, Selection, ranked_snapshots
from jobs.common import build_model, log, setup_torch
from jobs.models import load_tokenizer
from jobs.snapshots import WeightsCache, read_manifest
from jobs.spec import AverageSpec, DatasetRef, from_mapping, task_options
from jobs.store import ObjectStore
from jobs.tasks import get_task
from jobs.tensorio import DTYPE_BY_NAME, MappedFile
from jobs.train import eval_autocast


def greedy_selection(store: ObjectStore, spec: AverageSpec, runs: Sequence[RunInfo], cache: WeightsCache) -> dict[int, Selection]:
    """The greedy soup of the first k runs for every k = 1..K, with its English dev score and
    the trace of every candidate tried (the manifest's `greedy`).

    Soup scores are memoised by member set, so the k + 1 pass replays the k pass for free until
    a snapshot of run k + 1 comes up."""
    run_spec = runs[0]["spec"]
    task = get_task(spec.task, **task_options(run_spec, spec.task))
    tokenizer = load_tokenizer(run_spec["base_model"])
    dev = from_mapping(DatasetRef, run_spec["dev_data"], "dev_data")
    examples = task.load(dev)
    features = task.encode(tokenizer, examples, run_spec.get("max_length", 128))
    batch_size = run_spec.get("eval_batch_size", 64)
    device = setup_torch(spec.num_threads)
    model = build_model(task, run_spec["base_model"], device=device)
    model.eval()

    snapshots = [s for run in runs for s in run["snapshots"]]
    manifests = {s["ref"]: read_manifest(store, s["ref"]) for s in snapshots}
    paths, verification = cache.fetch(manifests.items())
    verification.wait()
    files = {ref: MappedFile(p) for ref, p in paths.items()}
    memo: dict[tuple[str, ...], float] = {}
    evaluated = 0

    def soup_state(members: list[str]) -> dict[str, torch.Tensor]:
        first = files[members[0]]
        state = {}
        for name, info in first.infos.items():
            if not info.is_float:
                state[name] = first.tensor(name).clone()
                continue
            acc = torch.zeros(info.shape, dtype=torch.float64)
            for ref in members:
                acc.add_(files[ref].tensor(name))
            state[name] = (acc / len(members)).to(DTYPE_BY_NAME[info.dtype])
        return state

    def score(members: list[str]) -> float:
        nonlocal evaluated
        key = tuple(sorted(members))
        if key not in memo:
            model.load_state_dict(soup_state(members), strict=False)
            with eval_autocast(device, run_spec.get("precision")):
                memo[key] = float(task.score(model, tokenizer, examples, features, batch_size))
            evaluated += 1
        return memo[key]

    selection = {}
    try:
        for k in range(1, len(runs) + 1):
            ranked = ranked_snapshots(runs[:k])
            soup = [ranked[0]]
            best = float(ranked[0]["dev_score"])  # one snapshot: the train job's score, no forward pass
            trace = [{"ref": ranked[0]["ref"], "dev_score": best, "added": True}]
            for cand in ranked[1:]:
                s = score([m["ref"] for m in soup] + [cand["ref"]])
                added = s >= best
                trace.append({"ref": cand["ref"], "dev_score": s, "added": added})
                if added:
                    soup.append(cand)
                    best = s
            selection[k] = Selection.uniform(soup, dev_score=best, dev_metric=task.metric, greedy=trace)
            log.info("greedy soup k=%d: %d of %d snapshots, English dev %.4f", k, len(soup), len(ranked), best)
    finally:
        for f in files.values():
            f.close()
    log.info("greedy soup: %d forward passes over English dev", evaluated)
    return selection
