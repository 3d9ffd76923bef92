"""The dataset registry: every source and target set of the paper, by name, with today's Hub ids.

A plain dict from dataset name to `DatasetInfo`, built from an explicit list. `get()` names the
known datasets on a miss and `check_language()` the known languages. Each entry knows its Hub id
and config, the paper's split mapping (TyDiQA-GoldP: a target language's "validation" set is its
Hub train split and its "test" set its Hub validation split) and a label map onto the task's
labels (MasakhaNER's DATE -> O). Local files of any registered dataset are read by jobs.data.local.

Hub revisions are pinned (docs/hub-data.md: which revision, why, and the listings it rests on).
`datasets` >= 4 no longer runs loading scripts, so a dataset whose main branch is a script is read
from the dataset viewer's parquet conversion (`refs/convert/parquet`, files at
`<config>/<split>/NNNN.parquet`); one converted on main by the Hub's "Convert dataset to Parquet"
PR is pinned to that commit (files at `<config>/<split>-NNNNN-of-NNNNN.parquet`). `load_hub_rows`
fetches exactly the files of one split with huggingface_hub (`snapshot_download` with a pattern:
online it downloads into the Hub cache, with HF_HUB_OFFLINE=1 it reads that cache and writes
nothing, so a read-only HF_HOME works) and reads them with `datasets.load_dataset("parquet")`
into a writable datasets cache. Features, ClassLabel names included, come from the files'
`huggingface` schema metadata, which both conversions write.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from jobs.data.errors import DataError

NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
NLI_LABELS = ("entailment", "neutral", "contradiction")
SPLITS = ("train", "validation", "test")

PARQUET_EXPORT = "refs/convert/parquet"  # the dataset viewer's conversion branch
EXPORT_FILES = "{config}/{split}/*.parquet"  # its layout: <config>/<split>/0000.parquet, 0001.parquet, ...
CONVERTED_FILES = "{config}/{split}-*.parquet"  # a "Convert dataset to Parquet" commit: <config>/<split>-00000-of-00001.parquet
LOCAL_FILES_HINT = ("to use local files instead, give the dataset ref a path "
                    "(`path:` in the config's dataset entry; formats: jobs/data/local.py)")


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: where it lives on the Hub and how its splits and labels map onto the task's."""

    name: str
    task: str  # nli | ner | tydiqa
    hub_id: str | None  # None: built in code (synthetic) or local files only
    hub_config: str  # template with {language} ({name} for TyDiQA's language name)
    languages: tuple[str, ...]  # the paper's target languages (plus the source language where it is one)
    source_language: str | None = None  # the language whose splits are used as they are (English)
    hub_splits: Mapping[str, str] = field(default_factory=lambda: {s: s for s in SPLITS})
    target_splits: Mapping[str, str] | None = None  # split mapping for the other languages, if different
    label_map: Mapping[str, str] = field(default_factory=dict)  # dataset label -> task label
    description: str = ""
    # the pinned Hub revision that holds data files (a branch or a commit id); None: no revision
    # that datasets 5.x can read (a script dataset without a parquet conversion): local files only
    hub_revision: str | None = None
    hub_files: str = EXPORT_FILES  # the files of one split at that revision ({config}, {split})
    revision_note: str = ""  # why this revision (sources: docs/hub-data.md)

    def hub_split(self, language: str, split: str) -> str:
        mapping = self.hub_splits
        if self.target_splits is not None and language != self.source_language:
            mapping = self.target_splits
        if split not in mapping:
            raise DataError(f"{self.name}/{language} has no split {split!r}; splits: {', '.join(mapping)}")
        return mapping[split]

    def map_label(self, label: str) -> str:
        """The task label of a dataset label (identity unless mapped, e.g. B-DATE -> O)."""
        return self.label_map.get(label, label)


XNLI_LANGUAGES = ("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
AMERICASNLI_LANGUAGES = ("aym", "bzd", "cni", "gn", "hch", "nah", "oto", "quy", "shp", "tar")
INDICXNLI_LANGUAGES = ("as", "bn", "gu", "hi", "kn", "ml", "mr", "or", "pa", "ta", "te")
WIKIANN_LANGUAGES = (
    "en", "ar", "de", "ru", "zh", "ja", "ur", "ay", "qu", "ta", "sw", "yo", "rw", "am", "ig", "hi", "fr",
    "es", "vi", "tr", "bg", "te", "el", "he", "fi", "hu",
)
MASAKHANER_LANGUAGES = ("amh", "hau", "ibo", "kin", "lug", "luo", "pcm", "swa", "wol", "yor")
MASAKHANER2_LANGUAGES = (
    "bam", "bbj", "ewe", "fon", "hau", "ibo", "kin", "lug", "mos", "nya", "pcm", "sna", "swa", "tsn", "twi",
    "wol", "xho", "yor", "zul",
)  # the paper's 19 (the Hub set also has luo)
TYDIQA_LANGUAGES = ("en", "ar", "bn", "fi", "id", "ko", "ru", "sw", "te")
TYDIQA_NAMES = {
    "en": "english", "ar": "arabic", "bn": "bengali", "fi": "finnish", "id": "indonesian", "ko": "korean",
    "ru": "russian", "sw": "swahili", "te": "telugu",
}  # TyDiQA ids start with the language's name: "finnish-1438027099681899178-6"
XQUAD_LANGUAGES = ("en", "ar", "de", "el", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
MLQA_LANGUAGES = ("en", "ar", "de", "es", "hi", "vi", "zh")
DATE_TO_O = {"B-DATE": "O", "I-DATE": "O", "B-MISC": "O", "I-MISC": "O"}

_DATASETS = [
    # ---- NLI ----
    DatasetInfo("mnli", "nli", "nyu-mll/glue", "mnli", ("en",), "en",
                hub_splits={"train": "train", "validation": "validation_matched", "test": "validation_mismatched"},
                description="MultiNLI (GLUE), the English training set", hub_revision=PARQUET_EXPORT,
                revision_note="parquet conversion (mnli/validation_matched/0000.parquet); no main commit id after "
                              "the script's removal was found documented"),
    DatasetInfo("xnli", "nli", "facebook/xnli", "{language}", XNLI_LANGUAGES, "en",
                description="XNLI; English validation is the selection set",
                hub_revision="b8dd5d7af51114dbda02c0e3f6133f332186418e", hub_files=CONVERTED_FILES,
                revision_note="main at 'Convert dataset to Parquet (#10)' (script deleted)"),
    DatasetInfo("americasnli", "nli", "nala-cub/americas_nli", "{language}", AMERICASNLI_LANGUAGES,
                hub_splits={"validation": "validation", "test": "test"}, description="AmericasNLI (10 languages)",
                hub_revision=PARQUET_EXPORT, revision_note="main is a loading script; parquet conversion"),
    DatasetInfo("indicxnli", "nli", "Divyanshu/indicxnli", "{language}", INDICXNLI_LANGUAGES,
                description="IndicXNLI (11 languages)",
                hub_revision=PARQUET_EXPORT, revision_note="main is a loading script; parquet conversion"),
    DatasetInfo("synthetic-nli", "nli", None, "", ("en", "xx-near", "xx-mid", "xx-far"), "en",
                description="built in code (jobs.data.synthetic)"),
    # ---- NER ----
    DatasetInfo("wikiann", "ner", "unimelb-nlp/wikiann", "{language}", WIKIANN_LANGUAGES, "en",
                description="WikiANN (Rahimi et al. splits); PAN-X files of XTREME are the same data",
                hub_revision=PARQUET_EXPORT,
                revision_note="parquet conversion (<lang>/<split>/0000.parquet), kept up to date by the viewer"),
    DatasetInfo("masakhaner", "ner", "masakhane/masakhaner", "{language}", MASAKHANER_LANGUAGES,
                label_map=DATE_TO_O, description="MasakhaNER 1.0; DATE -> O",
                hub_revision=PARQUET_EXPORT, revision_note="main is a loading script; parquet conversion"),
    DatasetInfo("masakhaner2", "ner", "masakhane/masakhaner2", "{language}", MASAKHANER2_LANGUAGES + ("luo",),
                label_map=DATE_TO_O, description="MasakhaNER 2.0; DATE -> O",
                hub_revision=PARQUET_EXPORT, revision_note="main is a loading script; parquet conversion"),
    DatasetInfo("synthetic-ner", "ner", None, "", ("en", "xx-near", "xx-mid", "xx-far"), "en",
                description="built in code (jobs.data.synthetic_ner)"),
    # ---- extractive QA ----
    DatasetInfo("tydiqa", "tydiqa", "google-research-datasets/tydiqa", "secondary_task", TYDIQA_LANGUAGES, "en",
                hub_splits={"train": "train", "validation": "validation"},
                target_splits={"validation": "train", "test": "validation"},
                description="TyDiQA-GoldP; targets: validation = Hub train, test = Hub dev (the paper's mapping)",
                hub_revision="da78f23f9119363459acbaf46bf89426ff26c259", hub_files=CONVERTED_FILES,
                revision_note="main at 'Convert dataset to Parquet (#3)' (tydiqa.py deleted)"),
    DatasetInfo("xquad", "tydiqa", "google/xquad", "xquad.{language}", XQUAD_LANGUAGES,
                hub_splits={"test": "validation"}, description="XQuAD (extra; not in the paper)",
                hub_revision=PARQUET_EXPORT, revision_note="parquet conversion; main's format not confirmed"),
    DatasetInfo("mlqa", "tydiqa", "facebook/mlqa", "mlqa.{language}.{language}", MLQA_LANGUAGES,
                hub_splits={"validation": "validation", "test": "test"}, description="MLQA (extra; not in the paper)",
                hub_revision=PARQUET_EXPORT,
                revision_note="main is a loading script (its Convert-to-Parquet PR #5 unmerged); parquet conversion"),
    DatasetInfo("synthetic-tydiqa", "tydiqa", None, "", ("en", "xx-near", "xx-mid", "xx-far"), "en",
                description="built in code (jobs.data.synthetic_qa)"),
]

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in _DATASETS}

# the paper's target sets per task (orchestrator defaults) and its source data
PAPER_TARGETS: dict[str, tuple[str, ...]] = {
    "nli": ("xnli", "americasnli", "indicxnli"),
    "ner": ("wikiann", "masakhaner", "masakhaner2"),
    "tydiqa": ("tydiqa",),
}


def get(name: str, task: str | None = None) -> DatasetInfo:
    """The registered dataset `name` (of `task`, when given); the error lists the known names."""
    info = DATASETS.get(name)
    if info is None or (task is not None and info.task != task):
        known = [n for n, d in DATASETS.items() if task is None or d.task == task]
        what = f"{task} dataset" if task else "dataset"
        raise DataError(f"unknown {what} {name!r}; known: {', '.join(known)}")
    return info


def check_language(info: DatasetInfo, language: str) -> str:
    if language not in info.languages:
        raise DataError(f"{info.name} has no language {language!r}; known: {', '.join(info.languages)}")
    return language


def target_languages(info: DatasetInfo) -> tuple[str, ...]:
    """The dataset's languages without its source language (the zero-shot targets)."""
    languages = tuple(l for l in info.languages if l != info.source_language)
    if info.name == "masakhaner2":
        languages = tuple(l for l in languages if l != "luo")  # the paper's 19
    return languages


def hub_split_files(info: DatasetInfo, language: str, split: str) -> tuple[str, str, str]:
    """(config, Hub split, file pattern) of one language's split, e.g. ('yor', 'test', 'yor/test/*.parquet')."""
    hub_split = info.hub_split(language, split)
    config = info.hub_config.format(language=language)
    return config, hub_split, info.hub_files.format(config=config, split=hub_split)


def no_revision_message(info: DatasetInfo) -> str:
    return (f"{info.name}: no revision of {info.hub_id} holds data files that datasets 5.x can read (its main branch "
            f"is a loading script and it has no parquet conversion); {LOCAL_FILES_HINT}")


def datasets_cache_dir() -> str:
    """A writable datasets cache: XLT_DATASETS_CACHE when set, else HF_DATASETS_CACHE unless it is
    read-only (a pod mounts HF_HOME read-only), else a directory under TMPDIR."""
    import datasets

    for candidate in (os.environ.get("XLT_DATASETS_CACHE"), str(datasets.config.HF_DATASETS_CACHE)):
        if not candidate:
            continue
        path = Path(candidate)
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if os.access(probe, os.W_OK):
            return str(path)
    return str(Path(tempfile.gettempdir()) / "xlt-datasets-cache")


def hub_parquet_files(info: DatasetInfo, pattern: str) -> list[str]:
    """The local paths of the files matching `pattern` at the pinned revision: downloaded into the
    Hub cache, or, with HF_HUB_OFFLINE=1, found there (huggingface_hub checks the cached tree
    listing, so a partly cached split fails instead of loading short)."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(info.hub_id, repo_type="dataset", revision=info.hub_revision,
                                    allow_patterns=[pattern]))
    files = sorted(str(p) for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"no file matches {pattern} at revision {info.hub_revision}")
    return files


def load_hub_rows(info: DatasetInfo, language: str, split: str):
    """The Hub split of one language as a `datasets.Dataset` (raises DataError, one line, on any failure)."""
    import datasets

    if info.hub_id is None:
        raise DataError(f"{info.name} is not on the Hub")
    config, hub_split, pattern = hub_split_files(info, language, split)
    if info.hub_revision is None:
        raise DataError(no_revision_message(info))
    try:
        files = hub_parquet_files(info, pattern)
        data = datasets.load_dataset("parquet", data_files={hub_split: files}, split=hub_split,
                                     cache_dir=datasets_cache_dir())
    except Exception as e:  # offline and not cached, missing revision or file: one line
        from huggingface_hub import constants

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = LOCAL_FILES_HINT
        if constants.HF_HUB_OFFLINE:
            hint = "HF_HUB_OFFLINE=1: fill the Hub cache where the Hub is reachable (images/scripts/fill_hf_cache.py); " + hint
        raise DataError(f"cannot load {info.name} {language}/{split} from the Hub ({info.hub_id} revision "
                        f"{info.hub_revision}, files {pattern}): {type(e).__name__}: {first}; {hint}") from None
    if info.name == "tydiqa":  # one config holds every language: keep this language's questions
        prefix = TYDIQA_NAMES[language] + "-"
        data = data.filter(lambda row: row["id"].startswith(prefix))
    return data
