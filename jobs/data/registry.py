"""The dataset registry: every source and target set of the paper, by name, with today's Hub ids.

A plain dict from dataset name to `DatasetInfo`, built from an explicit list. `get()` names the
known datasets on a miss and `check_language()` the known languages. Each entry knows its Hub id
and config, the paper's split mapping (TyDiQA-GoldP: a target language's "validation" set is its
Hub train split and its "test" set its Hub validation split) and a label map onto the task's
labels (MasakhaNER's DATE -> O). Local files of any registered dataset are read by jobs.data.local.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from jobs.data.errors import DataError

NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
NLI_LABELS = ("entailment", "neutral", "contradiction")
SPLITS = ("train", "validation", "test")


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
                description="MultiNLI (GLUE), the English training set"),
    DatasetInfo("xnli", "nli", "facebook/xnli", "{language}", XNLI_LANGUAGES, "en",
                description="XNLI; English validation is the selection set"),
    DatasetInfo("americasnli", "nli", "nala-cub/americas_nli", "{language}", AMERICASNLI_LANGUAGES,
                hub_splits={"validation": "validation", "test": "test"}, description="AmericasNLI (10 languages)"),
    DatasetInfo("indicxnli", "nli", "Divyanshu/indicxnli", "{language}", INDICXNLI_LANGUAGES,
                description="IndicXNLI (11 languages)"),
    DatasetInfo("synthetic-nli", "nli", None, "", ("en", "xx-near", "xx-mid", "xx-far"), "en",
                description="built in code (jobs.data.synthetic)"),
    # ---- NER ----
    DatasetInfo("wikiann", "ner", "unimelb-nlp/wikiann", "{language}", WIKIANN_LANGUAGES, "en",
                description="WikiANN (Rahimi et al. splits); PAN-X files of XTREME are the same data"),
    DatasetInfo("masakhaner", "ner", "masakhane/masakhaner", "{language}", MASAKHANER_LANGUAGES,
                label_map=DATE_TO_O, description="MasakhaNER 1.0; DATE -> O"),
    DatasetInfo("masakhaner2", "ner", "masakhane/masakhaner2", "{language}", MASAKHANER2_LANGUAGES + ("luo",),
                label_map=DATE_TO_O, description="MasakhaNER 2.0; DATE -> O"),
    DatasetInfo("synthetic-ner", "ner", None, "", ("en", "xx-near", "xx-mid", "xx-far"), "en",
                description="built in code (jobs.data.synthetic_ner)"),
    # ---- extractive QA ----
    DatasetInfo("tydiqa", "tydiqa", "google-research-datasets/tydiqa", "secondary_task", TYDIQA_LANGUAGES, "en",
                hub_splits={"train": "train", "validation": "validation"},
                target_splits={"validation": "train", "test": "validation"},
                description="TyDiQA-GoldP; targets: validation = Hub train, test = Hub dev (the paper's mapping)"),
    DatasetInfo("xquad", "tydiqa", "google/xquad", "xquad.{language}", XQUAD_LANGUAGES,
                hub_splits={"test": "validation"}, description="XQuAD (extra; not in the paper)"),
    DatasetInfo("mlqa", "tydiqa", "facebook/mlqa", "mlqa.{language}.{language}", MLQA_LANGUAGES,
                hub_splits={"validation": "validation", "test": "test"}, description="MLQA (extra; not in the paper)"),
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


def load_hub_rows(info: DatasetInfo, language: str, split: str):
    """The Hub split of one language as a `datasets.Dataset` (raises DataError offline)."""
    import datasets

    if info.hub_id is None:
        raise DataError(f"{info.name} is not on the Hub")
    hub_split = info.hub_split(language, split)
    config = info.hub_config.format(language=language)
    try:
        data = datasets.load_dataset(info.hub_id, config, split=hub_split)
    except Exception as e:  # offline, unknown config: one line
        raise DataError(f"cannot load {info.hub_id} {config!r} split {hub_split!r} from the Hub: {str(e).splitlines()[0]}") from None
    if info.name == "tydiqa":  # one config holds every language: keep this language's questions
        prefix = TYDIQA_NAMES[language] + "-"
        data = data.filter(lambda row: row["id"].startswith(prefix))
    return data
