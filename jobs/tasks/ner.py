"""NER: IOB2 tags (PER/ORG/LOC) per word, token classification, entity-level micro F1 (seqeval's
default, conlleval-style chunking). Two label schemes (`TrainSpec.ner_labels`):

- `all-subtokens` (default, the paper's code: `label_all_tokens=True` in trident-xtreme's
  token_classification `preprocess_fn`): every sub-token of a word carries the word's tag, B- tags
  copied as they are, and F1 is computed by seqeval over the sequence of labelled sub-tokens
  (special tokens and words cut off by truncation drop out on both sides);
- `first-subtoken` (the XTREME convention): only a word's first sub-token is labelled and
  predicted, F1 over the words of the sentence (a word cut off by truncation counts as O).
"""
from __future__ import annotations

from typing import Sequence

from jobs.data.loading import load_examples
from jobs.data.registry import NER_LABELS as LABELS
from jobs.spec import DatasetRef
from jobs.tasks.base import label_kwargs, predict
from jobs.tasks.metrics import entity_f1

IGNORE = -100  # label of special tokens (and, first-subtoken, of every sub-token after a word's first)
SCHEMES = ("all-subtokens", "first-subtoken")


class NERTask:
    name = "ner"
    metric = "f1"
    labels = LABELS
    head_prefixes = ("classifier.",)
    encode_version = "ner-1"

    def __init__(self, label_scheme: str = "all-subtokens"):
        if label_scheme not in SCHEMES:
            raise ValueError(f"NER label scheme must be one of {', '.join(SCHEMES)}, got {label_scheme!r}")
        self.label_scheme = label_scheme

    @property
    def feature_tag(self) -> str:
        """Everything that changes the features (part of the feature-cache key)."""
        return f"{self.encode_version}/{self.label_scheme}"

    @property
    def options(self) -> dict:
        return {"label_scheme": self.label_scheme}

    def model_class(self):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def model_kwargs(self) -> dict:
        return label_kwargs(LABELS)

    def load(self, ref: DatasetRef) -> list[dict]:
        return load_examples(self.name, ref)

    def encode(self, tokenizer, examples: Sequence[dict], max_length: int) -> list[dict]:
        """Token labels by the scheme; `word_starts` maps words to their first token (-1: the
        word fell off the end, or has no token, and is predicted O)."""
        label_ids = {label: i for i, label in enumerate(LABELS)}
        all_subtokens = self.label_scheme == "all-subtokens"
        enc = tokenizer([list(e["tokens"]) for e in examples], is_split_into_words=True, truncation=True, max_length=max_length)
        features = []
        for i, e in enumerate(examples):
            word_ids = enc.word_ids(i)
            labels, starts, prev = [], [-1] * len(e["tokens"]), None
            for t, w in enumerate(word_ids):
                if w is None:
                    labels.append(IGNORE)
                elif w != prev:
                    labels.append(label_ids[e["tags"][w]])
                    starts[w] = t
                else:
                    labels.append(label_ids[e["tags"][w]] if all_subtokens else IGNORE)
                prev = w
            features.append({"input_ids": enc["input_ids"][i], "labels": labels, "word_starts": starts})
        return features

    def predictions(self, model, tokenizer, features, batch_size: int, max_tokens: int | None = None) -> list[list[str]]:
        """Predicted tags per word (first-subtoken) or per labelled sub-token (all-subtokens)."""
        outputs = predict(model, features, batch_size, tokenizer.pad_token_id, token_level=True, max_tokens=max_tokens)
        tags = []
        for out, f in zip(outputs, features):
            best = out[0].argmax(-1).tolist()
            if self.label_scheme == "all-subtokens":
                tags.append([LABELS[best[t]] for t, label in enumerate(f["labels"]) if label != IGNORE])
            else:
                tags.append([LABELS[best[t]] if t >= 0 else "O" for t in f["word_starts"]])
        return tags

    def gold(self, examples, features) -> list[list[str]]:
        """The reference tag sequences the scheme scores against."""
        if self.label_scheme == "all-subtokens":
            return [[LABELS[label] for label in f["labels"] if label != IGNORE] for f in features]
        return [list(e["tags"]) for e in examples]

    def evaluate(self, model, tokenizer, examples, features, batch_size: int, max_tokens: int | None = None) -> dict[str, float]:
        predicted = self.predictions(model, tokenizer, features, batch_size, max_tokens)
        return {"f1": entity_f1(self.gold(examples, features), predicted)}

    def score(self, model, tokenizer, examples, features, batch_size: int, max_tokens: int | None = None) -> float:
        return self.evaluate(model, tokenizer, examples, features, batch_size, max_tokens)["f1"]
