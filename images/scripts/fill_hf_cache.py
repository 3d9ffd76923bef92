"""Fills a Hugging Face cache (HF_HOME) with the paper's base models and datasets, once, for offline jobs.

Run it where the Hub is reachable, with HF_HOME on the cache volume that the jobs mount:

    HF_HOME=/hf-cache HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 python /opt/xlt/fill_hf_cache.py
    python fill_hf_cache.py --plan            # list what it would fetch, fetch nothing
    python fill_hf_cache.py --models xlm-roberta-base --datasets xnli wikiann

Datasets are loaded exactly as the jobs load them (jobs.data.registry: same Hub id and config
per language), so that the jobs' `load_dataset` calls hit this cache with the Hub unreachable.
Exit status: 0 done, 1 when any item failed (all items are tried; failures are listed).
"""
from __future__ import annotations

import argparse
import os
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), help="base models (tokenizer and weights)")
    parser.add_argument("--datasets", nargs="*", default=list(DEFAULT_DATASETS), help="registry dataset names")
    parser.add_argument("--plan", action="store_true", help="print what would be fetched and stop")
    args = parser.parse_args(argv)

    pairs = plan(args.datasets)
    if args.plan:
        for model in args.models:
            print(f"model   {model}")
        for hub_id, config in pairs:
            print(f"dataset {hub_id} {config}")
        return 0
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "0") not in ("", "0"):
            print(f"fill_hf_cache: {var} is set; unset it (or set 0) to reach the Hub", file=sys.stderr)
            return 1
    print(f"fill_hf_cache: HF_HOME={os.environ.get('HF_HOME', '(default ~/.cache/huggingface)')}", file=sys.stderr)

    import datasets
    from transformers import AutoModel, AutoTokenizer

    failed = []
    for model in args.models:
        try:
            AutoTokenizer.from_pretrained(model)
            AutoModel.from_pretrained(model)
            print(f"ok      model {model}", file=sys.stderr)
        except Exception as e:  # keep going: report every missing item at the end
            failed.append(f"model {model}: {str(e).splitlines()[0]}")
    for hub_id, config in pairs:
        try:
            datasets.load_dataset(hub_id, config)  # every split
            print(f"ok      dataset {hub_id} {config}", file=sys.stderr)
        except Exception as e:
            failed.append(f"dataset {hub_id} {config}: {str(e).splitlines()[0]}")
    for line in failed:
        print(f"FAILED  {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
