"""Every GPU check of the project in one call, within 8 minutes on one GPU:

    python bench/gpu/prepare.py                          # here, once: fills bench/gpu/carry/
    python bench/gpu/run_all.py --device cuda            # there: run(..., carry=["bench/gpu/carry"])
    python bench/gpu/run_all.py --device cpu --tiny      # the same steps on a CPU in seconds (a test)

Steps, each a subprocess with its share of the time (a step past its share is stopped and
reported, the others still run):

1. `precision`: bench/gpu/check_precision.py (fp16/bf16/fp32 training, exact resume);
2. `evaluate`: bench/evaluate/bench_evaluate.py on xlm-roberta-large (random weights) in fp16 and
   bf16, ours against Trainer, on the carried English dev files;
3. `train`: bench/train/bench_train.py --quick --no-s3 (the train job against Trainer.train) on
   xlm-roberta-large with random weights saved here from the carried config and tokenizer
   (reported as missing if that script is absent, skipped where pandas/pyarrow are: the train
   job writes its curve as parquet).

Reads only the repository and the carry folder (`--carry`). Writes `summary.json` and each
step's outputs to --out (default $OUT, the device machine's returned folder, else
bench/gpu/carry/out) and prints the summary. Exit 1 if a step failed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUDGET_S = 450  # of the 8 minutes: the rest is the machine's start and the transfers
TINY_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def steps(args, out: Path, work: Path) -> list[tuple[str, list[str], int, Path | None]]:
    """(name, command, seconds at most, the JSON file it writes) of each step."""
    py, dev, carry = sys.executable, args.device, args.carry
    precision = [py, str(HERE / "check_precision.py"), "--device", dev]
    evaluate = [py, str(REPO / "bench" / "evaluate" / "bench_evaluate.py"), "--device", dev,
                "--model", str(carry / "xlm-roberta-large"), "--data", str(carry / "data"), "--out", str(out / "evaluate")]
    # bench/train loads its model with from_pretrained: a folder with weights, made here (train_model)
    train = [py, str(REPO / "bench" / "train" / "bench_train.py"), "--device", dev, "--quick", "--no-s3",
             "--model", str(work / "xlm-roberta-large-random"), "--data", str(carry / "data" / "panx"),
             "--out", str(out / "train" / "results.json")]
    if args.tiny:
        precision += ["--tiny", "--steps", "30", "--lr", "3e-3", "--precisions", "fp32"]
        evaluate += ["--tiny", "--n", "16", "--rounds", "1", "--threads", "1", "--contenders", "ours,ours-fixed,theirs"]
        train += ["--examples", "64", "--dev-examples", "16"]
    else:
        evaluate += ["--n", "2000", "--rounds", "3", "--contenders", "ours,ours-fixed,theirs"]
    return [("precision", precision, 150, None), ("evaluate", evaluate, 240, out / "evaluate" / "results.json"),
            ("train", train, 150, out / "train" / "results.json")]


def train_model(carry: Path, target: Path, tiny: bool, device: str) -> None:
    """xlm-roberta-large (2 layers when tiny) with random weights, saved with the carried
    tokenizer: the folder bench/train's --model reads (the GPU machine has no preset packages)."""
    import shutil

    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    target.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(carry / "xlm-roberta-large" / name, target / name)
    config = json.loads((carry / "xlm-roberta-large" / "config.json").read_text())
    config.update(TINY_SHAPE if tiny else {})
    torch.manual_seed(0)
    with torch.device(device):  # initialised on the GPU there: seconds, not a minute of CPU
        model = XLMRobertaModel(XLMRobertaConfig(**config), add_pooling_layer=False)
    model.save_pretrained(target)


def last_json(text: str):
    """The last JSON value a step printed (a whole-output object, or its last line)."""
    for candidate in (text, *reversed(text.strip().splitlines())):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


# what a step's job code needs beyond torch/transformers/accelerate: the train job writes its curve as parquet
NEEDS = {"train": ("pandas", "pyarrow")}


def why_not(name: str, command: list[str]) -> str | None:
    """Why a step cannot run on this machine, or None."""
    script = Path(command[1])
    if not script.exists():
        return f"missing: {script.relative_to(REPO)}"
    absent = [m for m in NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]
    return f"skipped: needs {', '.join(absent)}, which this machine lacks" if absent else None


def run_step(name: str, command: list[str], limit: float, out: Path, result_file: Path | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", XLT_PROGRESS="0")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=env, cwd=REPO)
    except subprocess.TimeoutExpired as e:
        text = [(x or b"").decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)]
        (out / f"{name}.log").write_text(text[0] + "\n--- stderr ---\n" + text[1])
        return {"ok": False, "status": f"stopped after {limit:.0f} s", "seconds": round(time.perf_counter() - t0, 1)}
    (out / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    result = {"ok": proc.returncode == 0, "status": f"exit {proc.returncode}", "seconds": round(time.perf_counter() - t0, 1),
              "output": last_json(proc.stdout)}
    if result_file is not None and result_file.exists():
        result["results_file"] = str(result_file.relative_to(out)) if result_file.is_relative_to(out) else str(result_file)
    if proc.returncode:
        result["stderr_tail"] = proc.stderr[-2000:]
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--tiny", action="store_true", help="2-layer models, a few examples: seconds on a CPU")
    p.add_argument("--carry", type=Path, default=HERE / "carry")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else HERE / "carry" / "out")
    p.add_argument("--only", help="comma-separated step names (precision, evaluate, train)")
    args = p.parse_args(argv)
    if not (args.carry / "xlm-roberta-large" / "tokenizer.json").exists():
        raise SystemExit(f"run_all: {args.carry} has no xlm-roberta-large/tokenizer.json; run bench/gpu/prepare.py first")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = {"device": args.device, "tiny": args.tiny, "python": sys.version.split()[0], "steps": {}}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for name, command, limit, result_file in steps(args, args.out, Path(tmp)):
            if args.only and name not in args.only.split(","):
                continue
            reason = why_not(name, command)
            if reason:
                summary["steps"][name] = {"ok": None, "status": reason}
                continue
            if BUDGET_S - (time.perf_counter() - started) < 30:
                summary["steps"][name] = {"ok": False, "status": "no time left"}
                continue
            if name == "train":
                train_model(args.carry, Path(tmp) / "xlm-roberta-large-random", args.tiny, args.device)
            left = BUDGET_S - (time.perf_counter() - started)
            summary["steps"][name] = run_step(name, command, min(limit, left), args.out, result_file)
            print(f"{name}: {summary['steps'][name]['status']}", file=sys.stderr, flush=True)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 1 if any(s["ok"] is False for s in summary["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
