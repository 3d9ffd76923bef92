"""A local on-disk cache of tokenised datasets, so the many evaluation jobs tokenise each set once.

The key hashes the task and its feature tag (encoder version and every option that changes the
features: NER label scheme, QA question mode), the tokenizer (its serialised vocabulary and
rules), the maximum length and the examples themselves (a content fingerprint: a changed file,
Hub revision or synthetic generator gives a new key, a renamed file does not). Entries live
under $XLT_CACHE_DIR/features/ and are written atomically; a corrupt entry is re-made.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Sequence

log = logging.getLogger("jobs")
CACHE_ENV = "XLT_FEATURE_CACHE"  # set to 0 to switch the cache off

_tokenizer_fingerprints: dict[int, str] = {}


def tokenizer_fingerprint(tokenizer) -> str:
    key = id(tokenizer)
    if key not in _tokenizer_fingerprints:
        h = hashlib.sha256(type(tokenizer).__name__.encode())
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            h.update(backend.to_str().encode())
        else:  # slow tokenizers: the vocabulary
            h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        h.update(json.dumps(tokenizer.all_special_tokens).encode())
        _tokenizer_fingerprints[key] = h.hexdigest()
    return _tokenizer_fingerprints[key]


def examples_fingerprint(examples: Sequence[dict]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(e, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def cache_dir() -> Path:
    from jobs.models import cache_root

    return cache_root() / "features"


def feature_key(task, tokenizer, examples: Sequence[dict], max_length: int) -> str:
    tag = getattr(task, "feature_tag", None) or getattr(task, "encode_version", "1")
    parts = [task.name, tag, tokenizer_fingerprint(tokenizer), str(max_length),
             examples_fingerprint(examples)]
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def encode_cached(task, tokenizer, examples: Sequence[dict], max_length: int) -> list[dict]:
    """task.encode(...), read from or written to the local cache."""
    if os.environ.get(CACHE_ENV, "1") == "0":
        return task.encode(tokenizer, examples, max_length)
    path = cache_dir() / f"{task.name}-{feature_key(task, tokenizer, examples, max_length)}.pkl"
    if path.exists():
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except Exception:  # a torn or stale entry: make it again
            log.warning("feature cache entry %s is unreadable; re-encoding", path.name)
    features = task.encode(tokenizer, examples, max_length)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(features, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as e:  # a read-only or full disk only costs time
        log.warning("cannot write the feature cache (%s); continuing without it", e)
    return features
