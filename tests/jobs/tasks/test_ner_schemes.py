"""NER label schemes on real PAN-X / MasakhaNER sentences, against the paper's own code.

`all-subtokens` must equal trident-xtreme's `preprocess_fn` with `label_all_tokens=True`
(src/tasks/token_classification/processor/__init__.py, re-implemented below from its text) and
its scoring (`compute_metrics`: seqeval over the labelled sub-tokens); `first-subtoken` must equal
seqeval over the words of each sentence.
"""
from __future__ import annotations

import pytest
import torch

from jobs.common import build_model
from jobs.data.local import read_local
from jobs.data.registry import NER_LABELS
from jobs.models import load_tokenizer
from jobs.spec import spec_from_dict, task_options
from jobs.tasks import get_task


def original_preprocess(examples, tokenizer, label2id, label_all_tokens=True, max_length=128):
    """trident-xtreme's preprocess_fn, its logic as written (padding left out: it only adds -100s)."""
    tokenized = tokenizer([e["tokens"] for e in examples], is_split_into_words=True, truncation=True, max_length=max_length)
    labels = []
    for i, e in enumerate(examples):
        label = e["tags"]
        word_ids = tokenized.word_ids(batch_index=i)
        previous_word_idx = None
        label_ids = []
        for word_idx in word_ids:
            if word_idx is None:
                label_ids.append(-100)
            elif word_idx != previous_word_idx:
                label_ids.append(label2id[label[word_idx]])
            else:
                label_ids.append(label2id[label[word_idx]] if label_all_tokens else -100)
            previous_word_idx = word_idx
        labels.append(label_ids)
    return tokenized["input_ids"], labels


@pytest.fixture(scope="module")
def sentences(realdata_dir):
    panx = read_local("ner", realdata_dir / "panx/dev-de.tsv")[:150]
    masakha = read_local("ner", realdata_dir / "masakhaner/yor/test.txt", label_map={"B-DATE": "O", "I-DATE": "O"})[:100]
    return panx + masakha


def test_all_subtokens_labels_equal_the_original_preprocess(sentences):
    tok = load_tokenizer("tiny")
    task = get_task("ner")  # the default scheme
    assert task.label_scheme == "all-subtokens"
    label2id = {label: i for i, label in enumerate(NER_LABELS)}
    for max_length in (128, 16):  # 16: many sentences truncated
        ids, labels = original_preprocess(sentences, tok, label2id, max_length=max_length)
        features = task.encode(tok, sentences, max_length)
        assert [f["input_ids"] for f in features] == ids
        assert [f["labels"] for f in features] == labels
    # B- tags are copied to a word's later sub-tokens, as the original does
    multi = [i for i, f in enumerate(task.encode(tok, sentences, 128)) if len(f["input_ids"]) - 2 > len(sentences[i]["tokens"])]
    assert multi, "real sentences have words of several sub-tokens"


def _direct_predictions(model, features, pad_id):
    """Argmax per token, one sentence at a time (no batching code shared with the task)."""
    out = []
    with torch.inference_mode():
        for f in features:
            ids = torch.tensor([f["input_ids"]])
            out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].argmax(-1).tolist())
    return out


def test_scores_equal_seqeval_for_both_schemes(sentences):
    seqeval = pytest.importorskip("seqeval.metrics")
    tok = load_tokenizer("tiny")
    label2id = {label: i for i, label in enumerate(NER_LABELS)}
    for scheme in ("all-subtokens", "first-subtoken"):
        task = get_task("ner", label_scheme=scheme)
        torch.manual_seed(3)
        model = build_model(task, "tiny")
        model.eval()
        features = task.encode(tok, sentences, 64)
        predicted = _direct_predictions(model, features, tok.pad_token_id)
        if scheme == "all-subtokens":  # the original's compute_metrics: drop -100 positions on both sides
            _, labels = original_preprocess(sentences, tok, label2id, max_length=64)
            gold = [[NER_LABELS[l] for l in ls if l != -100] for ls in labels]
            pred = [[NER_LABELS[p] for p, l in zip(ps, ls) if l != -100] for ps, ls in zip(predicted, labels)]
        else:  # per word: a word's first sub-token; a truncated word is O
            gold = [e["tags"] for e in sentences]
            pred = []
            for e, f, ps in zip(sentences, features, predicted):
                enc = tok(e["tokens"], is_split_into_words=True, truncation=True, max_length=64)
                firsts = {}
                for t, w in enumerate(enc.word_ids()):
                    if w is not None and w not in firsts:
                        firsts[w] = t
                pred.append([NER_LABELS[ps[firsts[w]]] if w in firsts else "O" for w in range(len(e["tokens"]))])
        expected = seqeval.f1_score(gold, pred)
        assert expected > 0, "a random head still predicts some entities right: the check must not be 0 == 0"
        got = task.evaluate(model, tok, sentences, features, batch_size=16)["f1"]
        assert got == pytest.approx(expected, abs=1e-9), scheme


def test_old_specs_keep_the_first_subtoken_scheme_and_their_run_key():
    base = {
        "experiment_uri": "file:///x", "task": "ner", "base_model": "tiny",
        "train_data": {"dataset": "synthetic-ner", "language": "en", "split": "train"},
        "dev_data": {"dataset": "synthetic-ner", "language": "en", "split": "validation"},
        "learning_rate": 1e-3, "batch_size": 32, "seed": 1, "snapshots_per_epoch": 1,
    }
    legacy = spec_from_dict("train", base)
    assert task_options(legacy) == {"label_scheme": "first-subtoken"}
    new = spec_from_dict("train", dict(base, ner_labels="all-subtokens"))
    assert task_options(new) == {"label_scheme": "all-subtokens"}
    assert new.run_key != legacy.run_key
    # the feature cache never hands one scheme's features to the other
    assert get_task("ner", label_scheme="all-subtokens").feature_tag != get_task("ner", label_scheme="first-subtoken").feature_tag


def test_tables_refuse_results_of_two_schemes():
    from jobs.results import results_frame
    from orchestrator.analysis.collect import check_one_label_scheme

    row = dict(experiment="e", task="ner", ref="runs/a/snapshots/00000001", kind="snapshot", dataset="wikiann",
               language="de", split="test", metric="f1", value=0.5, n_examples=10)
    check_one_label_scheme(results_frame([dict(row, label_scheme="all-subtokens"), dict(row, label_scheme="all-subtokens")]))
    check_one_label_scheme(results_frame([row, dict(row, label_scheme="first-subtoken")]))  # old files: first-subtoken
    with pytest.raises(ValueError, match="mix label schemes"):
        check_one_label_scheme(results_frame([row, dict(row, label_scheme="all-subtokens")]))
