"""Gather an experiment's results files and draw records from its object store, concurrently, with a local cache.

Results files are written once per evaluated model and never rewritten, so a file already in the
cache is not read again: re-running the tables reads only new results.
"""

from __future__ import annotations

import io
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.draws import Draw, read_records
from jobs.results import COLUMNS, OPTIONAL_COLUMNS, results_frame

RESULTS_PREFIX = "results/"
_ARROW_TYPES = {"string": pa.string(), "Int64": pa.int64(), "Float64": pa.float64()}
WORKERS = 16  # object stores answer many small reads in parallel far faster than one by one


class ResultsStore(Protocol):
    """The two store calls collecting needs; keys are relative to the experiment prefix."""

    def list_keys(self, prefix: str) -> list[str]: ...
    def get_bytes(self, key: str) -> bytes: ...


def _cache_path(cache_dir: Path, key: str) -> Path:
    parts = PurePosixPath(key).parts
    if not parts or any(part in ("", ".", "..") for part in parts) or PurePosixPath(key).is_absolute():
        raise ValueError(f"refusing to cache store key {key!r}")
    return cache_dir.joinpath(*parts)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch_all(
    store: ResultsStore, keys: list[str], cache_dir: Path | None, workers: int, refresh: bool
) -> dict[str, bytes]:
    """Bytes of every key: from the cache where present (unless refresh), else from the store (then cached)."""

    def fetch(key: str) -> bytes:
        if cache_dir is not None:
            path = _cache_path(cache_dir, key)
            if not refresh and path.is_file():
                return path.read_bytes()
        data = store.get_bytes(key)
        if cache_dir is not None:
            _write_atomic(path, data)
        return data

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(keys, pool.map(fetch, keys)))


def collect_results(
    store: ResultsStore, cache_dir: str | Path | None = None, workers: int = WORKERS, refresh: bool = False
) -> pd.DataFrame:
    """One frame (jobs.results columns) of every `results/**.parquet` of the experiment.

    With `cache_dir`, files already cached are not read again; `refresh=True` re-reads them all.
    """
    keys = sorted(k for k in store.list_keys(RESULTS_PREFIX) if k.endswith(".parquet"))
    cache = Path(cache_dir) if cache_dir is not None else None
    blobs = _fetch_all(store, keys, cache, workers, refresh)
    tables = []
    for key in keys:
        try:  # parse with arrow and convert once at the end: per-file pandas conversion dominates otherwise
            table = pq.read_table(io.BytesIO(blobs[key]))
        except (pa.ArrowException, OSError) as error:  # a corrupt or foreign file: name it
            raise ValueError(f"results file {key} is not a readable results parquet: {error}") from error
        missing = [c for c in COLUMNS if c not in table.column_names and c not in OPTIONAL_COLUMNS]
        if missing:
            raise ValueError(f"results file {key} lacks columns {missing} (see jobs/results.py)")
        value_type = table.schema.field("value").type
        if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type) or pa.types.is_null(value_type)):
            raise ValueError(f"results file {key}: column value holds {value_type}, not numbers (see jobs/results.py)")
        for column in OPTIONAL_COLUMNS:  # a file written before the column existed: null there
            if column not in table.column_names:
                table = table.append_column(column, pa.nulls(table.num_rows, _ARROW_TYPES[COLUMNS[column]]))
        if table.num_rows:
            tables.append(table.select(list(COLUMNS)))
    if not tables:
        return results_frame([])
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    frame = frame.astype(COLUMNS)
    check_one_label_scheme(frame)
    return frame


def check_one_label_scheme(frame: pd.DataFrame) -> None:
    """NER scores of the two label schemes are not comparable: refuse to build tables over both.
    NER results written before the column existed were scored first-subtoken."""
    ner = frame[frame["task"] == "ner"]
    if ner.empty:
        return
    schemes = ner["label_scheme"].fillna("first-subtoken")
    found = sorted(set(schemes))
    if len(found) > 1:
        counts = ", ".join(f"{s}: {int((schemes == s).sum())} rows" for s in found)
        raise ValueError(
            f"the experiment's NER results mix label schemes ({counts}); evaluate every model with one scheme "
            f"(ner_labels in the config) or keep each scheme in its own experiment"
        )


def collect_draws(store: ResultsStore) -> list[Draw]:
    """Every recorded draw (`draws/*.json`, each `Draw.to_dict()`), sorted by seed, then K.

    A seed may have several records (another K, or re-drawn after more runs finished):
    `jobs.draws.choose_records` (called by `build_inputs`) picks one per seed for the tables."""
    return read_records(store)
