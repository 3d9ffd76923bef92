"""The benchmark's outputs: a table on stdout, results.json (with the ratios) and RESULTS.md."""
from __future__ import annotations

import json
from pathlib import Path

TIMED = ("per model and set, what the evaluate job pays per model: ours = task.evaluate() "
         "(jobs.tasks.base.predict + the metric) in jobs.train.eval_autocast; theirs = "
         "Trainer.evaluate() with the same metric in compute_metrics. Features are encoded once "
         "(the job encodes and caches each set once per job) and shared; model loading is timed "
         "once, separately (load_s: jobs.common.load_model_from_file to the device).")


def table(report: dict) -> str:
    names = report["contenders"]
    head = ["task", "precision", "examples", "mean tokens"] + [f"{c} ex/s" for c in names] \
        + [f"{c} padding" for c in names] + [f"ratio {c}/theirs" for c in names if c != "theirs"] + ["metric ours / theirs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["results"]:
        cells = [r["task"], r["precision"], str(r["n_examples"]), f"{r['tokens'] / r['n_examples']:.1f}"]
        cells += [f"{r['examples_per_s'][c]:.1f}" for c in names]
        cells += [f"{r['padding'][c]:.2f}x" for c in names]
        cells += [f"{r['ratios'][c]:.2f}" for c in names if c != "theirs"]
        cells += [f"{r['metric'].get('ours', r['metric'].get('ours-fixed', float('nan'))):.4f} / {r['metric'].get('theirs', float('nan')):.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile_section(report: dict) -> str:
    out = []
    for r in report["results"]:
        for name, prof in r.get("profile", {}).items():
            out.append(f"\n{r['task']} {r['precision']}, {name}: {prof['op_seconds']:.2f} s in torch ops of "
                       f"{prof['wall_seconds']:.2f} s wall\n")
            out.append("| op | self s | share of op time |\n|---|---|---|")
            out += [f"| `{op['name']}` | {op['self_s']:.3f} | {op['share']:.0%} |" for op in prof["top"]]
    return "\n".join(out)


def write(report: dict, out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SystemExit(f"bench_evaluate: --out {out} is a file; give the folder to write results.json and RESULTS.md into")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    s = report["settings"]
    md = [
        "# Evaluation speed: the evaluate job against Hugging Face Trainer",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Device {report['device']} ({s['threads']} threads), torch {report['versions']['torch']}, "
        f"transformers {report['versions']['transformers']}, accelerate {report['versions']['accelerate']}; "
        f"model `{s['model']}` ({s['parameters'] / 1e6:.1f} M parameters, load_s {report['load_s']:.2f}); "
        f"eval batch size {s['batch_size']}, max length {s['max_length']}, {s['rounds']} interleaved rounds, median.",
        "",
        f"What is timed: {TIMED}",
        "",
        "`padding`: tokens the model computes on (count x longest of each batch) over real tokens.",
        "",
        table(report),
        "",
        "Ratios are examples/s of ours over Trainer's (higher is better for ours). On a busy machine they "
        "are noisy: rerun on a quiet one before quoting them.",
    ]
    if any(r.get("profile") for r in report["results"]):
        md += ["", "## Where the time goes (torch.profiler, one pass each, self CPU time)", profile_section(report)]
    (out / "RESULTS.md").write_text("\n".join(md) + "\n")
