"""The data part of the experiment config: defaults per task, --target, data root, halves."""
from __future__ import annotations

import pytest

from jobs.errors import SpecError
from orchestrator.config import load_config
from orchestrator.plan import grid_specs


def test_paper_defaults_for_every_task():
    nli = load_config(None, {"task": "nli"})
    assert [t.dataset for t in nli.data.targets] == ["xnli", "americasnli", "indicxnli"]
    assert (nli.data.dev.dataset, nli.data.dev.split) == ("xnli", "validation")
    ner = load_config(None, {"task": "ner"})
    assert [(t.dataset, len(t.languages)) for t in ner.data.targets] == [("wikiann", 25), ("masakhaner", 10), ("masakhaner2", 19)]
    qa = load_config(None, {"task": "tydiqa"})
    assert qa.max_length == 384 and qa.data.targets[0].languages == tuple("ar bn fi id ko ru sw te".split())
    for task in ("nli", "ner", "tydiqa"):
        tiny = load_config(None, {"task": task, "base_model": "tiny"})
        assert tiny.max_length == 128 and tiny.data.train.dataset == f"synthetic-{task}"


def test_target_option_selects_sets_and_languages():
    cfg = load_config(None, {"task": "nli"}, targets=("xnli:de,fr", "americasnli"))
    assert [(t.dataset, t.languages) for t in cfg.data.targets] == [("xnli", ("de", "fr")), ("americasnli", cfg.data.targets[1].languages)]
    assert len(cfg.data.targets[1].languages) == 10
    with pytest.raises(SpecError, match="--target xnli:xx: xnli has no language 'xx'"):
        load_config(None, {"task": "nli"}, targets=("xnli:xx",))
    with pytest.raises(SpecError, match="unknown nli dataset 'wikiann'"):
        load_config(None, {"task": "nli"}, targets=("wikiann",))


def test_realdata_configs_resolve_paths_and_halves(realdata_dir, tmp_path):
    cfg = load_config("configs/realdata-ner.yaml", {}, targets=("wikiann:de,sw",), data_root=str(realdata_dir))
    refs = [r for t in cfg.data.targets for r in t.refs()]
    assert [(r.language, r.split, r.half) for r in refs] == [("de", "validation", "first"), ("de", "test", "second"),
                                                             ("sw", "validation", "first"), ("sw", "test", "second")]
    assert all(r.path.startswith(str(realdata_dir)) and r.path.endswith(f"panx/dev-{r.language}.tsv") for r in refs)
    masakhane = load_config("configs/realdata-ner.yaml", {}, targets=("masakhaner2:yor",), data_root=str(realdata_dir))
    assert [r.path.rsplit("/", 1)[1] for r in masakhane.data.targets[0].refs()] == ["dev.txt", "test.txt"]
    with pytest.raises(SpecError, match="local files of wikiann for .* not am"):
        load_config("configs/realdata-ner.yaml", {}, targets=("wikiann:am",))
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: ner\ndata:\n  train: {dataset: wikiann, language: xx, split: train}\n"
                   "  dev: {dataset: wikiann, language: en, split: validation}\n  targets: []\n")
    with pytest.raises(SpecError, match="data.train: wikiann has no language 'xx'"):
        load_config(bad, {})


def test_micro_batch_size_reaches_every_train_spec():
    cfg = load_config("configs/tiny-ner.yaml", {"micro_batch_size": 8})
    assert {s.micro_batch_size for s in grid_specs(cfg, "file:///x", None)} == {8}


def test_micro_batch_size_must_divide_every_batch_size():
    with pytest.raises(SpecError, match="micro_batch_size: 12 must divide every batch size, not \\[16, 32\\]"):
        load_config("configs/tiny-ner.yaml", {"micro_batch_size": 12})
