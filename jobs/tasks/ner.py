"""NER: IOB2 tags (PER/ORG/LOC) per word, token classification on each word's first sub-token,
entity-level micro F1 (seqeval's default, conlleval-style chunking)."""
from __future__ import annotations

from typing import Sequence

from jobs.data.loading import load_examples
from jobs.data.registry import NER_LABELS as LABELS
from jobs.spec import DatasetRef
from jobs.tasks.base import label_kwargs, predict
from jobs.tasks.metrics import entity_f1

IGNORE = -100  # label of special tokens and of every sub-token after a word's first


class NERTask:
    name = "ner"
    metric = "f1"
    labels = LABELS
    head_prefixes = ("classifier.",)
    encode_version = "ner-1"

    def model_class(self):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def model_kwargs(self) -> dict:
        return label_kwargs(LABELS)

    def load(self, ref: DatasetRef) -> list[dict]:
        return load_examples(self.name, ref)

    def encode(self, tokenizer, examples: Sequence[dict], max_length: int) -> list[dict]:
        """Label each word's first sub-token (others IGNORE); `word_starts` maps words to their
        first token (-1: the word fell off the end, or has no token, and is predicted O)."""
        label_ids = {label: i for i, label in enumerate(LABELS)}
        enc = tokenizer([list(e["tokens"]) for e in examples], is_split_into_words=True, truncation=True, max_length=max_length)
        features = []
        for i, e in enumerate(examples):
            word_ids = enc.word_ids(i)
            labels, starts, prev = [], [-1] * len(e["tokens"]), None
            for t, w in enumerate(word_ids):
                if w is not None and w != prev:
                    labels.append(label_ids[e["tags"][w]])
                    starts[w] = t
                else:
                    labels.append(IGNORE)
                prev = w
            features.append({"input_ids": enc["input_ids"][i], "labels": labels, "word_starts": starts})
        return features

    def predictions(self, model, tokenizer, features, batch_size: int) -> list[list[str]]:
        outputs = predict(model, features, batch_size, tokenizer.pad_token_id, token_level=True)
        tags = []
        for out, f in zip(outputs, features):
            best = out[0].argmax(-1).tolist()
            tags.append([LABELS[best[t]] if t >= 0 else "O" for t in f["word_starts"]])
        return tags

    def evaluate(self, model, tokenizer, examples, features, batch_size: int) -> dict[str, float]:
        predicted = self.predictions(model, tokenizer, features, batch_size)
        return {"f1": entity_f1([e["tags"] for e in examples], predicted)}

    def score(self, model, tokenizer, examples, features, batch_size: int) -> float:
        return self.evaluate(model, tokenizer, examples, features, batch_size)["f1"]
