"""GPU check of the train job's mixed precision and exact resume, one command:

    python bench/gpu/check_precision.py --device cuda            # xlm-roberta-base shape, ~1-2 min on one GPU
    python bench/gpu/check_precision.py --device cpu --tiny      # the same on a CPU (the test suite runs this)

For each precision (fp16: autocast + GradScaler, the paper's "16-mixed"; bf16; fp32) it trains a
randomly initialised XLM-R classifier for a few steps on a learnable synthetic task (the label
is a function of the tokens) with the train job's own autocast and scaler calls
(jobs.train.autocast, torch.amp.GradScaler) and checks the loss is finite and falling. Then the
resume check: N steps, save the trainer state the way the train job does (model, optimizer,
scaler, jobs.train.rng_state), M more steps; restore and redo the M steps; report the largest
weight difference (0.0 on a CPU; on a GPU non-deterministic kernels may leave a small one).
Needs torch and transformers only (no datasets, boto3 or pandas). Prints one JSON object; exit 1
if a check fails.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's jobs package

import torch  # noqa: E402

from jobs.train import autocast, rng_state, set_rng_state  # noqa: E402


def build(tiny: bool, device: torch.device):
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    if tiny:
        config = XLMRobertaConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=128, max_position_embeddings=130, num_labels=3)
    else:  # xlm-roberta-base's shape
        config = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                  intermediate_size=3072, max_position_embeddings=514, num_labels=3)
    torch.manual_seed(0)
    return XLMRobertaForSequenceClassification(config).to(device), config.vocab_size


def batches(vocab: int, n: int, batch: int, length: int, device: torch.device):
    """Learnable: the label is the first content token modulo 3."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (batch, length), generator=g)
        ids[:, 0] = 0
        labels = ids[:, 1] % 3
        out.append((ids.to(device), labels.to(device)))
    return out


def train_steps(model, optimizer, scaler, data, precision: str, device: torch.device) -> list[float]:
    losses = []
    model.train()
    for ids, labels in data:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    return losses


def check(precision: str, args, device: torch.device) -> dict:
    model, vocab = build(args.tiny, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=device.type in ("cuda", "cpu"))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    data = batches(vocab, args.steps + args.resume_steps, args.batch, args.length, device)
    torch.manual_seed(2)
    t0 = time.perf_counter()
    losses = train_steps(model, optimizer, scaler, data[: args.steps], precision, device)
    seconds = time.perf_counter() - t0
    k = max(1, len(losses) // 5)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    # resume: save as the train job does, continue; restore, continue again; compare
    saved = {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict()),
             "scaler": copy.deepcopy(scaler.state_dict()) if scaler.is_enabled() else None, "rng": rng_state(device)}
    rest = data[args.steps:]
    train_steps(model, optimizer, scaler, rest, precision, device)
    straight = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"], device)
    train_steps(model, optimizer, scaler, rest, precision, device)
    diff = max(float((v.float() - straight[k].float()).abs().max()) for k, v in model.state_dict().items() if v.is_floating_point())
    finite = all(torch.isfinite(torch.tensor(losses)))
    return {"precision": precision, "loss_first": first, "loss_last": last, "finite": bool(finite),
            "falling": last < first, "steps_per_s": len(losses) / seconds, "resume_max_abs_diff": diff,
            "scale": scaler.get_scale() if scaler.is_enabled() else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (CPU tests)")
    parser.add_argument("--precisions", default="fp16,bf16,fp32")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--resume-steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # compare precisions without TF32 in the fp32 row
    results = [check(p, args, device) for p in args.precisions.split(",")]
    ok = all(r["finite"] and r["falling"] for r in results)
    if device.type == "cpu":
        ok = ok and all(r["resume_max_abs_diff"] == 0.0 for r in results)
    print(json.dumps({"device": str(device), "torch": torch.__version__, "ok": ok, "results": results}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
