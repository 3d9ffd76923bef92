"""Local loaders on every file of ../shared/realdata (counts from its MANIFEST), the registry,
halves, other formats, and clear errors on bad input."""
from __future__ import annotations

import json

import pytest

from jobs.data import registry, synthetic_ner, synthetic_qa
from jobs.data.errors import DataError
from jobs.data.loading import load_examples, take_half
from jobs.data.local import read_local
from jobs.errors import PermanentError
from jobs.spec import DatasetRef

XNLI_LANGS = "en ar bg de el es fr hi ru sw th tr ur vi zh".split()
PANX = {"train-en": 20000, **{f"dev-{l}": 10000 for l in "en de es fr ar zh ru tr vi".split()}, "dev-hi": 1000, "dev-sw": 1000, "dev-yo": 100}
MASAKHANER = {"hau": (816, 1633), "ibo": (1090, 2181), "kin": (1118, 2235), "pcm": (806, 1613), "swa": (942, 1883), "yor": (983, 1964), "zul": (836, 1670)}
MLQA = {"en": 1148, "de": 512, "es": 500, "vi": 511, "zh": 504}
TYDIQA = {"en": 3696, "ko": 1625, "sw": 2755}
XQUAD_LANGS = "ar de el en es hi ro ru th tr vi zh".split()


def test_every_manifest_file_parses_with_the_manifest_counts(realdata_dir):
    from collections import Counter

    for lang in XNLI_LANGS:
        examples = read_local("nli", realdata_dir / f"xnli/dev-{lang}.tsv")
        assert len(examples) == 2490 and Counter(e["label"] for e in examples) == {l: 830 for l in registry.NLI_LABELS}
    assert len(read_local("nli", realdata_dir / "xnli/xnli.test.en.csv")) == 5010
    textfooler = {"mnli_matched": (373, 311, 316), "mnli_mismatched": (346, 319, 335), "snli": (367, 322, 311)}
    for name, counts in textfooler.items():
        examples = read_local("nli", realdata_dir / f"nli_en_extra_textfooler/{name}.tsv")
        c = Counter(e["label"] for e in examples)
        assert (c["entailment"], c["neutral"], c["contradiction"]) == counts
    for name, n in PANX.items():
        assert len(read_local("ner", realdata_dir / f"panx/{name}.tsv")) == n, name
    train = read_local("ner", realdata_dir / "panx/train-en.tsv")
    tags = Counter(t for e in train for t in e["tags"])
    assert sum(len(e["tokens"]) for e in train) == 160394
    assert (tags["B-PER"], tags["B-ORG"], tags["B-LOC"]) == (9164, 9422, 9345)
    for lang, (dev, test) in MASAKHANER.items():
        assert len(read_local("ner", realdata_dir / f"masakhaner/{lang}/dev.txt")) == dev
        assert len(read_local("ner", realdata_dir / f"masakhaner/{lang}/test.txt")) == test
    for lang in XQUAD_LANGS:
        assert len(read_local("tydiqa", realdata_dir / f"xquad/xquad.{lang}.json")) == 1190
    for lang, n in MLQA.items():
        assert len(read_local("tydiqa", realdata_dir / f"mlqa/dev-context-{lang}-question-{lang}.json")) == n
    for lang, n in TYDIQA.items():
        assert len(read_local("tydiqa", realdata_dir / f"tydiqa_goldp/tydiqa.goldp.{lang}.train.json")) == n


def test_halves_are_disjoint_and_cover_the_file(realdata_dir):
    path = str(realdata_dir / "xnli/dev-de.tsv")
    first = load_examples("nli", DatasetRef("xnli", "de", "validation", path=path, half="first"))
    second = load_examples("nli", DatasetRef("xnli", "de", "test", path=path, half="second"))
    assert len(first) == len(second) == 1245
    assert not {e["premise"] for e in first} & {e["premise"] for e in second}  # 3 hypotheses per premise, cut between premises
    assert take_half([1, 2, 3], "first") == [1] and take_half([1, 2, 3], "second") == [2, 3]
    limited = load_examples("nli", DatasetRef("xnli", "de", "test", path=path, half="second", limit=5))
    assert limited == second[:5]


def test_registry_names_known_datasets_and_languages():
    assert registry.get("masakhaner2").hub_id == "masakhane/masakhaner2"
    assert len(registry.target_languages(registry.get("xnli"))) == 14
    assert len(registry.target_languages(registry.get("wikiann"))) == 25
    assert len(registry.target_languages(registry.get("masakhaner"))) == 10
    assert len(registry.target_languages(registry.get("masakhaner2"))) == 19
    assert len(registry.target_languages(registry.get("americasnli"))) == 10
    assert len(registry.target_languages(registry.get("indicxnli"))) == 11
    assert registry.target_languages(registry.get("tydiqa")) == tuple("ar bn fi id ko ru sw te".split())
    tydiqa = registry.get("tydiqa")
    assert tydiqa.hub_split("en", "validation") == "validation"
    assert (tydiqa.hub_split("fi", "validation"), tydiqa.hub_split("fi", "test")) == ("train", "validation")
    assert registry.get("masakhaner").map_label("B-DATE") == "O"
    with pytest.raises(DataError, match="unknown dataset 'xnil'; known: mnli, xnli"):
        registry.get("xnil")
    with pytest.raises(PermanentError, match="unknown ner dataset 'xnli'; known: wikiann"):
        load_examples("ner", DatasetRef("xnli", "de", "test"))
    with pytest.raises(DataError, match="xnli has no language 'xx'; known: en, ar"):
        load_examples("nli", DatasetRef("xnli", "xx", "test"))


def test_bad_files_name_the_file_and_line(tmp_path, realdata_dir):
    bad_label = tmp_path / "bad.tsv"
    bad_label.write_text("a\tb\tentailment\nc\td\tmaybe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv:2: label 'maybe' is not one of"):
        read_local("nli", bad_label)
    columns = tmp_path / "cols.tsv"
    columns.write_text("only one column\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cols.tsv:1: expected 3 tab-separated columns"):
        read_local("nli", columns)
    conll = tmp_path / "ner.txt"
    conll.write_text("Paris B-LOC\nis O\n\nBerlin B-CITY\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"ner.txt:4: tag 'B-CITY' is not one of"):
        read_local("ner", conll)
    wrong_format = tmp_path / "wrong.txt"
    wrong_format.write_text("a b c\n", encoding="utf-8")  # three fields: not token tag
    with pytest.raises(DataError, match=r"wrong.txt:1: tag 'c'"):
        read_local("ner", wrong_format)
    with pytest.raises(DataError, match="unknown format 'json' for task ner"):
        read_local("ner", realdata_dir / "xquad/xquad.de.json")
    with pytest.raises(DataError, match=r"xnli.test.en.csv:1: not valid JSON"):
        read_local("tydiqa", realdata_dir / "xnli/xnli.test.en.csv", "json")
    squad = {"data": [{"paragraphs": [{"context": "The cat sat.", "qas": [{"id": "q7", "question": "Who?", "answers": [{"text": "dog", "answer_start": 4}]}]}]}]}
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps(squad), encoding="utf-8")
    with pytest.raises(DataError, match=r"qa.json: question q7: answer 'dog' is not at answer_start 4 .*found 'cat'"):
        read_local("tydiqa", qa)
    with pytest.raises(DataError, match="file not found"):
        read_local("nli", tmp_path / "missing.tsv")


def test_jsonl_and_parquet_for_every_task(tmp_path):
    import pandas as pd

    nli = [{"premise": "p", "hypothesis": "h", "label": 2}]
    ner = [{"tokens": ["Paris", "is"], "ner_tags": ["B-LOC", "O"]}, {"tokens": ["Ada"], "ner_tags": ["B-PER"]}]
    qa = [{"id": "1", "question": "q?", "context": "a cat", "answers": {"text": ["cat"], "answer_start": [2]}}]
    for task, rows in (("nli", nli), ("ner", ner), ("tydiqa", qa)):
        jsonl = tmp_path / f"{task}.jsonl"
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        parquet = tmp_path / f"{task}.parquet"
        pd.DataFrame(rows).to_parquet(parquet)
        assert read_local(task, jsonl) == read_local(task, parquet)
    assert read_local("nli", tmp_path / "nli.jsonl")[0]["label"] == "contradiction"
    assert read_local("ner", tmp_path / "ner.parquet")[1]["tags"] == ["B-PER"]
    assert read_local("tydiqa", tmp_path / "tydiqa.jsonl")[0]["answers"] == [{"text": "cat", "answer_start": 2}]


def test_masakhaner_date_maps_to_o(tmp_path):
    f = tmp_path / "dev.txt"
    f.write_text("Monday B-DATE\nin O\nLagos B-LOC\n", encoding="utf-8")
    examples = load_examples("ner", DatasetRef("masakhaner", "yor", "validation", path=str(f)))
    assert examples[0]["tags"] == ["O", "O", "B-LOC"]
    with pytest.raises(DataError, match="B-DATE"):
        load_examples("ner", DatasetRef("wikiann", "yo", "validation", path=str(f)))  # WikiANN has no DATE


def test_synthetic_ner_and_qa_are_deterministic_and_valid():
    assert synthetic_ner.generate("xx-mid", "test") == synthetic_ner.generate("xx-mid", "test")
    for e in synthetic_ner.generate("xx-far", "validation"):
        assert len(e["tokens"]) == len(e["tags"]) and set(e["tags"]) <= set(registry.NER_LABELS)
        assert all(not (t.startswith("I-") and (i == 0 or e["tags"][i - 1] == "O")) for i, t in enumerate(e["tags"]))
    for e in synthetic_qa.generate("xx-near", "test"):
        a = e["answers"][0]
        assert e["context"][a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]
    en, far = synthetic_ner.lexicon("en"), synthetic_ner.lexicon("xx-far")
    shared = sum(a == b for a, b in zip(en[0][0], far[0][0])) / len(en[0][0])
    assert 0.2 < shared < 0.8  # graded: about half the entity words are the source's
