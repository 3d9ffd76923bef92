"""Task encoders and decoders with the tiny preset's real XLM-R tokenizer; the feature cache;
heads; gradient accumulation."""
from __future__ import annotations

import torch

from jobs.data import cache
from jobs.models import load_tokenizer
from jobs.tasks import get_task
from jobs.tasks.qa import best_span, window_settings


def test_ner_first_subtoken_scheme_labels_the_first_sub_token_of_each_word():
    tok = load_tokenizer("tiny")
    task = get_task("ner", label_scheme="first-subtoken")
    examples = [{"tokens": ["Wolfgang", "Amadeus", "Mozart", "lived", "in", "Salzburg"],
                 "tags": ["B-PER", "I-PER", "I-PER", "O", "O", "B-LOC"]}]
    [f] = task.encode(tok, examples, 128)
    labelled = [i for i, l in enumerate(f["labels"]) if l != -100]
    assert labelled == f["word_starts"] and len(labelled) == 6
    assert [task.labels[f["labels"][i]] for i in labelled] == examples[0]["tags"]
    assert f["labels"][0] == -100 and f["labels"][-1] == -100  # <s> and </s>
    [short] = task.encode(tok, examples, 5)  # truncated words are predicted O, never dropped
    assert short["word_starts"][-1] == -1 and len(short["word_starts"]) == 6


def test_qa_windows_targets_and_decoding():
    tok = load_tokenizer("tiny")
    task = get_task("tydiqa")
    assert window_settings(384) == (64, 128) and window_settings(128) == (64, 30)
    context = " ".join(f"word{i}" for i in range(150)) + " the answer is Salzburg city . " + " ".join(f"tail{i}" for i in range(50))
    start = context.index("Salzburg city")
    examples = [{"id": "1", "question": "Where?", "context": context, "answers": [{"text": "Salzburg city", "answer_start": start}]}]
    features = task.encode(tok, examples, 128)
    assert len(features) > 3 and all(len(f["input_ids"]) <= 128 for f in features)
    holding = [f for f in features if f["start_positions"] != 0]
    assert holding, "some window holds the answer"
    for f in features:
        if f["start_positions"]:
            s, e = f["offsets"][f["start_positions"]][0], f["offsets"][f["end_positions"]][1]
            assert context[s:e] == "Salzburg city"
    # logits that point at the answer in one window: decoding finds it across windows
    f = holding[0]
    n = len(f["input_ids"])
    start_logits, end_logits = torch.zeros(n), torch.zeros(n)
    start_logits[f["start_positions"]] = 5
    end_logits[f["end_positions"]] = 5
    score, s, e = best_span(start_logits, end_logits, f["offsets"])
    assert context[s:e] == "Salzburg city"
    # an end before the start, or a span longer than 30 tokens, is never chosen
    start_logits[:] = 0
    end_logits[:] = 0
    start_logits[f["end_positions"]] = 9
    end_logits[f["start_positions"]] = 9
    _, s, e = best_span(start_logits, end_logits, f["offsets"])
    assert s < e


def test_feature_cache_hits_and_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_CACHE_DIR", str(tmp_path))
    tok = load_tokenizer("tiny")
    task = get_task("nli")
    examples = [{"premise": "a b", "hypothesis": "c", "label": "neutral"}] * 3
    calls = []
    real = task.encode
    monkeypatch.setattr(task, "encode", lambda *a: calls.append(1) or real(*a))
    first = cache.encode_cached(task, tok, examples, 128)
    assert cache.encode_cached(task, tok, examples, 128) == first and len(calls) == 1
    cache.encode_cached(task, tok, examples, 64)  # another max length: another entry
    cache.encode_cached(task, tok, examples[:2], 128)  # other data: another entry
    assert len(calls) == 3 and len(list((tmp_path / "features").glob("*.pkl"))) == 3


def test_every_task_has_its_head_in_the_model():
    from jobs.common import build_model

    for name, prefix in (("nli", "classifier."), ("ner", "classifier."), ("tydiqa", "qa_outputs.")):
        task = get_task(name)
        model = build_model(task, "tiny")
        assert task.head_prefixes[0] == prefix  # nli also names bert.pooler. (tests/jobs/test_e5_preset.py)
        head = [k for k in model.state_dict() if k.startswith(task.head_prefixes)]
        assert head and all(not k.startswith("roberta.") for k in head)


def test_qa_questions_stay_whole_unless_they_leave_no_room_for_a_window(caplog):
    """The paper's code tokenizes with truncation="only_second": only the context is cut. The
    project's old mode cut questions to 64 tokens first; a question too long for any window is
    cut to fit (and logged) in the default mode."""
    tok = load_tokenizer("tiny")
    context = " ".join(f"word{i}" for i in range(200))
    question = " ".join(f"q{i}" for i in range(40)) + " ?"  # over 64 tokens
    n_question = len(tok(question, add_special_tokens=False)["input_ids"])
    assert n_question > 64
    example = [{"id": "1", "question": question, "context": context, "answers": []}]

    def question_tokens(features):
        ids = features[0]["input_ids"]
        return ids[1 : ids.index(tok.sep_token_id)]

    full = get_task("tydiqa").encode(tok, example, 384)
    assert len(question_tokens(full)) == n_question  # whole, as the original
    cut = get_task("tydiqa", questions="truncated").encode(tok, example, 384)
    assert len(question_tokens(cut)) <= 65  # cut at the 64th token's character end, then re-tokenised (as before)
    # at 128 tokens (stride 30) a 64+-token question leaves no room for 31 context tokens: cut to fit
    with caplog.at_level("WARNING", logger="jobs"):
        tight = get_task("tydiqa").encode(tok, example, 128)
    assert len(question_tokens(tight)) <= 128 - 4 - 30 - 1 and "too long" in caplog.text
    assert all(len(f["input_ids"]) <= 128 for f in tight)
    assert get_task("tydiqa").feature_tag != get_task("tydiqa", questions="truncated").feature_tag
