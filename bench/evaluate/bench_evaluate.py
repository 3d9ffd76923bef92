"""Benchmark: the evaluate job's scoring against `transformers.Trainer.evaluate`, one command:

    python bench/evaluate/bench_evaluate.py                       # CPU: multilingual-e5-small, 1,000 XNLI + 1,000 PAN-X en dev
    python bench/evaluate/bench_evaluate.py --device cuda         # GPU: xlm-roberta-large (random weights), fp16 and bf16
    python bench/evaluate/bench_evaluate.py --tiny --n 16 --rounds 1 --out /tmp/b   # seconds (the test)

Same model weights, features, eval batch size, precision and max length for both; real English
dev files (XNLI `xnli/dev-en.tsv`, PAN-X `panx/dev-en.tsv` under --data: ../shared/realdata,
or the GPU carry folder of bench/gpu/prepare.py). Rounds are interleaved (ours, theirs, ours,
theirs, ...) after one untimed warm-up each; the median of each is reported. What is timed:
bench/evaluate/contenders.py. Writes results.json (the ratios) and RESULTS.md into --out
(default bench/evaluate/). `--profile` adds a torch.profiler breakdown of one pass of each.

Needs torch, transformers and accelerate (the `bench` extra), not datasets, boto3 or pandas.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # the repository's jobs package and bench.* modules

import torch  # noqa: E402

from bench.evaluate import contenders, report  # noqa: E402
from jobs.spec import DatasetRef  # noqa: E402
from jobs.tasks import get_task  # noqa: E402

REALDATA = REPO.parent / "shared" / "realdata"
CARRY = REPO / "bench" / "gpu" / "carry"
SETS = {"nli": ("xnli", "xnli/dev-en.tsv"), "ner": ("wikiann", "panx/dev-en.tsv")}
TINY_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--tiny", action="store_true", help="a 2-layer model (the tiny preset, or --model's shape shrunk): seconds")
    p.add_argument("--model", help="a preset name or a model folder (config + tokenizer; weights optional, random if absent). "
                   "Default: multilingual-e5-small on cpu, bench/gpu/carry/xlm-roberta-large on cuda")
    p.add_argument("--data", type=Path, help="folder with xnli/dev-en.tsv and panx/dev-en.tsv "
                   "(default ../shared/realdata, else bench/gpu/carry/data)")
    p.add_argument("--tasks", default="nli,ner")
    p.add_argument("--n", type=int, default=1000, help="examples per set (the first n of the file)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32, help="eval batch size of both (the evaluate job's batch_size)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--precisions", help="default fp32 on cpu (the job scores in fp32 there), fp16,bf16 on cuda")
    p.add_argument("--contenders", default="ours,theirs", help="of ours, ours-fixed, theirs")
    p.add_argument("--threads", type=int, help="torch threads of both (default torch's: one per core; "
                   "on a busy machine 1 avoids threads waiting for each other)")
    p.add_argument("--profile", action="store_true", help="torch.profiler breakdown of one pass of each contender")
    p.add_argument("--out", type=Path, default=HERE)
    return p.parse_args(argv)


def data_root(args) -> Path:
    if args.data:
        return args.data
    return REALDATA if REALDATA.exists() else CARRY / "data"


def shrunk_copy(folder: Path, work: Path) -> str:
    """A 2-layer copy of a config-only model folder (same tokenizer and vocabulary)."""
    import shutil

    target = work / f"{folder.name}-tiny"
    shutil.copytree(folder, target)
    config = json.loads((target / "config.json").read_text())
    config.update(TINY_SHAPE)
    (target / "config.json").write_text(json.dumps(config, indent=1))
    return str(target)


def model_source(args, work: Path) -> str:
    source = args.model or (str(CARRY / "xlm-roberta-large") if args.device == "cuda" else
                            "tiny" if args.tiny else "multilingual-e5-small")
    if Path(source).is_dir():
        source = str(Path(source).resolve())
    if args.tiny and Path(source).is_dir():
        source = shrunk_copy(Path(source), work)
    return source


def load_model(task, source: str, device: torch.device, work: Path):
    """The model the evaluate job would score: weights in a safetensors file, loaded by
    jobs.common.load_model_from_file onto the device. Pre-trained weights where the source has
    them (a preset), else a random initialisation (speed does not depend on the values)."""
    from safetensors.torch import save_file

    from jobs.common import build_model, load_model_from_file, load_pretrained
    from jobs.models import resolve_base_model

    if (Path(resolve_base_model(source)) / "model.safetensors").exists():
        model = load_pretrained(task, source)
    else:
        model = build_model(task, source, init=True, device=device)
    path = work / f"{task.name}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    del model
    synchronise_and_free(device)
    t0 = time.perf_counter()
    model = load_model_from_file(task, source, path, f"bench/{task.name}", device)
    contenders.synchronise(device)
    load_s = time.perf_counter() - t0
    path.unlink()
    return model, load_s


def synchronise_and_free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def profile_pass(contender, device: torch.device) -> dict:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        wall, _ = contender.run()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    return {"wall_seconds": wall, "op_seconds": total,
            "top": [{"name": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / 1e6 / total} for e in top]}


def bench_task(args, task_name: str, precisions: list[str], device: torch.device, source: str, work: Path) -> tuple[list[dict], float]:
    """The rows of one task (one per precision) and the model's load time."""
    from jobs.models import load_tokenizer

    task = get_task(task_name)
    dataset, rel = SETS[task_name]
    examples = task.load(DatasetRef(dataset, "en", "validation", path=str(data_root(args) / rel), limit=args.n))
    tokenizer = load_tokenizer(source)
    features = task.encode(tokenizer, examples, args.max_length)
    model, load_s = load_model(task, source, device, work)
    rows = [bench_precision(args, task, precision, model, tokenizer, examples, features, device) for precision in precisions]
    for row in rows:
        row.update(dataset=f"{dataset}/en/validation", parameters=sum(p.numel() for p in model.parameters()))
    del model
    synchronise_and_free(device)
    return rows, load_s


def bench_precision(args, task, precision: str, model, tokenizer, examples, features, device: torch.device) -> dict:
    names = args.contenders.split(",")
    runners = {}
    for name in names:
        if name == "theirs":
            runners[name] = contenders.Theirs(task, model, tokenizer, examples, features, args.batch_size, precision, device)
        elif name in ("ours", "ours-fixed"):
            runners[name] = contenders.Ours(task, model, tokenizer, examples, features, args.batch_size, precision, device,
                                            max_tokens=0 if name == "ours-fixed" else None)
        else:
            raise SystemExit(f"bench_evaluate: unknown contender {name!r}; use ours, ours-fixed, theirs")
    warmup = None if device.type == "cuda" else min(len(examples), 2 * args.batch_size)  # every shape once on a GPU
    for runner in runners.values():
        runner.run(warmup)
    seconds = {name: [] for name in names}
    metric = {}
    for _ in range(args.rounds):  # interleaved: a slow spell of the machine hits every contender
        for name, runner in runners.items():
            s, metric[name] = runner.run()
            seconds[name].append(s)
    plans = contenders.batch_plans(features, args.batch_size)
    tokens = sum(len(f["input_ids"]) for f in features)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    row = {
        "task": task.name, "precision": precision, "n_examples": len(examples), "tokens": tokens, "seconds": seconds,
        "examples_per_s": {name: len(examples) / median[name] for name in names},
        "padding": {name: contenders.padded_tokens(features, plans[name]) / tokens for name in names},
        "metric": metric,
        "ratios": {name: median["theirs"] / median[name] for name in names if name != "theirs" and "theirs" in median},
    }
    if "ours" in row["ratios"]:
        row["ratio"] = row["ratios"]["ours"]
    if args.profile:
        row["profile"] = {name: profile_pass(runner, device) for name, runner in runners.items()}
    for runner in runners.values():
        if hasattr(runner, "close"):
            runner.close()
    del runners
    synchronise_and_free(device)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_evaluate: --device cuda but torch sees no GPU; run it on a GPU machine or use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = (args.precisions or ("fp16,bf16" if device.type == "cuda" else "fp32")).split(",")
    import accelerate
    import transformers

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    results, load_seconds = [], []
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        work = Path(tmp)
        source = model_source(args, work)
        model_name = Path(source).name if Path(source).is_dir() else source
        for task_name in args.tasks.split(","):
            rows, load_s = bench_task(args, task_name, precisions, device, source, work)
            results += rows
            load_seconds.append(load_s)
    out = {
        "command": " ".join(["python", str(Path(__file__).resolve().relative_to(REPO))]
                            + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__},
        "settings": {"model": model_name,
                     "parameters": results[0]["parameters"], "batch_size": args.batch_size, "max_length": args.max_length,
                     "rounds": args.rounds, "threads": torch.get_num_threads(), "data": os.path.relpath(data_root(args), REPO)},
        "timed": report.TIMED,
        "contenders": args.contenders.split(","),
        "load_s": statistics.median(load_seconds),
        "results": results,
        "ratios": {f"{r['task']}/{r['precision']}": r["ratio"] for r in results if "ratio" in r},
    }
    report.write(out, args.out)
    print(report.table(out))
    print(json.dumps({"ratios": out["ratios"], "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
