"""Fills a Hugging Face cache (HF_HOME) with the paper's base models and datasets, once, for offline jobs.

Run it where the Hub is reachable, with HF_HOME on the cache volume that the jobs mount:

    HF_HOME=/hf-cache HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 python /opt/xlt/fill_hf_cache.py
    python fill_hf_cache.py --plan            # list what it would fetch, fetch nothing
    python fill_hf_cache.py --models xlm-roberta-base --datasets xnli wikiann --languages en de sw

Datasets are loaded exactly as the jobs load them (jobs.data.registry.load_hub_rows: the pinned
revision, the files of each language's split), so that the jobs' loads find every file in the
Hub cache with HF_HUB_OFFLINE=1 and a read-only HF_HOME (they read the Hub cache and write
their datasets cache under TMPDIR). This script's own datasets cache goes to a temporary
directory (XLT_DATASETS_CACHE), not into HF_HOME: the volume holds what the jobs read, nothing else.
Exit status: 0 done, 1 when any item failed (all items are tried; failures are listed).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

# xlm-roberta-large is the paper's model; base is the cheaper stand-in used for smaller grids
DEFAULT_MODELS = ("xlm-roberta-large", "xlm-roberta-base")
# the paper's source sets and every target set (jobs.data.registry.PAPER_TARGETS)
DEFAULT_DATASETS = ("mnli", "xnli", "americasnli", "indicxnli", "wikiann", "masakhaner", "masakhaner2", "tydiqa")


def plan(datasets: list[str]) -> list[tuple[str, str]]:
    """The distinct (Hub id, config) pairs behind the named registry datasets, in order."""
    from jobs.data import registry

    pairs: list[tuple[str, str]] = []
    for name in datasets:
        info = registry.get(name)
        if info.hub_id is None:
            continue  # built in code; nothing to fetch
        for language in info.languages:
            pair = (info.hub_id, info.hub_config.format(language=language))
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def plan_splits(datasets: list[str], languages: list[str] | None = None) -> list[tuple[object, str, str, str]]:
    """(info, language, split, file pattern) for every split the jobs can ask for, one per distinct
    (Hub id, revision, pattern): TyDiQA's languages share one config, so its two Hub splits come once."""
    from jobs.data import registry

    items, seen = [], set()
    for name in datasets:
        info = registry.get(name)
        if info.hub_id is None:
            continue
        for language in info.languages:
            if languages and language not in languages:
                continue
            mapping = info.hub_splits
            if info.target_splits is not None and language != info.source_language:
                mapping = info.target_splits
            for split in mapping:
                _, _, pattern = registry.hub_split_files(info, language, split)
                key = (info.hub_id, info.hub_revision, pattern)
                if key not in seen:
                    seen.add(key)
                    items.append((info, language, split, pattern))
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), help="base models (tokenizer and weights)")
    parser.add_argument("--datasets", nargs="*", default=list(DEFAULT_DATASETS), help="registry dataset names")
    parser.add_argument("--languages", nargs="*", default=None,
                        help="only these languages of each dataset (default: all the registry lists)")
    parser.add_argument("--plan", action="store_true", help="print what would be fetched and stop")
    args = parser.parse_args(argv)

    items = plan_splits(args.datasets, args.languages)
    if args.plan:
        for model in args.models:
            print(f"model   {model}")
        for info, language, split, pattern in items:
            print(f"dataset {info.hub_id} @ {info.hub_revision} {pattern}  ({info.name} {language}/{split})")
        return 0
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "0") not in ("", "0"):
            print(f"fill_hf_cache: {var} is set; unset it (or set 0) to reach the Hub", file=sys.stderr)
            return 1
    print(f"fill_hf_cache: HF_HOME={os.environ.get('HF_HOME', '(default ~/.cache/huggingface)')}", file=sys.stderr)
    scratch = None
    if not os.environ.get("XLT_DATASETS_CACHE"):
        scratch = tempfile.mkdtemp(prefix="fill-hf-cache-")
        os.environ["XLT_DATASETS_CACHE"] = scratch

    from transformers import AutoModel, AutoTokenizer

    from jobs.data import registry

    failed = []
    try:
        for model in args.models:
            try:
                AutoTokenizer.from_pretrained(model)
                AutoModel.from_pretrained(model)
                print(f"ok      model {model}", file=sys.stderr)
            except Exception as e:  # keep going: report every missing item at the end
                failed.append(f"model {model}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        for info, language, split, pattern in items:
            label = f"dataset {info.name} {language}/{split} ({info.hub_id} @ {info.hub_revision} {pattern})"
            try:
                rows = registry.load_hub_rows(info, language, split)
                print(f"ok      {label}: {rows.num_rows} rows", file=sys.stderr)
            except Exception as e:
                failed.append(f"{label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    for line in failed:
        print(f"FAILED  {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
