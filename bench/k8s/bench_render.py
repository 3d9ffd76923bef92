"""Benchmark: render and schema-validate the Jobs of the full paper sweep for three tasks.

    .venv/bin/python bench/k8s/bench_render.py [--versions 1.31,1.33,1.37] [--write]

Per task: the head run, 63 grid runs, the average stage (per-run CA + 10 draws) and the evaluate
stage (every snapshot and every averaged model, 16 models per Job). Validation is
kubernetes_validate.validate(job, version, strict=True); its schema files are read once (lru_cache).
--write puts the table into bench/k8s/RESULTS.md.
"""
from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from pathlib import Path

import kubernetes_validate
from kubernetes_validate import utils as kv_utils

from jobs.draws import RunInfo
from jobs.spec import DatasetRef, HeadRef

from orchestrator import plan
from orchestrator.config import DataSettings, ExperimentConfig, TargetSet
from orchestrator.k8s_render import load_cluster_settings, plan_cost, render_jobs, to_yaml

HERE = Path(__file__).resolve().parent
TARGETS = {
    "nli": TargetSet("xnli", ("ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")),
    "ner": TargetSet("wikiann", ("ar", "de", "ru", "zh", "ja", "ur", "ay", "qu", "ta", "sw", "yo", "rw", "am", "ig", "hi",
                                 "fr", "es", "vi", "tr", "bg", "te", "el", "he", "fi", "hu")),
    "tydiqa": TargetSet("tydiqa", ("ar", "bn", "fi", "id", "ko", "ru", "sw", "te")),
}


class EmptyStore:
    def exists(self, key: str) -> bool:
        return False


def requests_for(task: str) -> list:
    uri = f"s3://xlt/{task}-xlm-roberta-large"
    cfg = ExperimentConfig(task=task, base_model="xlm-roberta-large", epochs=40 if task == "tydiqa" else 10,
                           data=DataSettings(DatasetRef(task, "en", "train"), DatasetRef(task, "en", "validation"), (TARGETS[task],)))
    head = HeadRef(ref="heads/0123456789abcdef", sha256="0" * 64)
    train = plan.train_requests(cfg, EmptyStore(), uri, head)
    runs = [RunInfo(r.spec.run_key, r.spec.learning_rate, r.spec.batch_size, r.spec.seed) for r in train]
    draws = plan.make_draws(cfg, runs)
    snapshots = [f"runs/{r.run_key}/snapshots/{s:08d}" for r in runs for s in range(10)]
    evaluate = plan.evaluate_requests(cfg, EmptyStore(), uri, snapshots + plan.average_refs(cfg, runs, draws))
    return [plan.head_request(cfg, uri), *train, *plan.average_requests(cfg, uri, runs, draws), *evaluate]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default=f"1.31,1.33,{kv_utils.major_minor(kubernetes_validate.latest_version())}")
    parser.add_argument("--write", action="store_true", help="write bench/k8s/RESULTS.md")
    args = parser.parse_args()
    versions = args.versions.split(",")
    kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)
    settings = load_cluster_settings(None, {"image_prefix": "ghcr.io/acme"})

    rows = []
    t_plan = t_render = t_yaml = t_validate = 0.0
    total = 0
    for task in ("nli", "ner", "tydiqa"):
        t0 = time.perf_counter()
        reqs = requests_for(task)
        t1 = time.perf_counter()
        jobs = render_jobs(reqs, f"{task}-xlm-roberta-large", settings)
        t2 = time.perf_counter()
        text = to_yaml(jobs)
        t3 = time.perf_counter()
        for version in versions:
            for job in jobs:
                kubernetes_validate.validate(job, version, strict=True)
        t4 = time.perf_counter()
        cost = plan_cost(reqs, settings, "xlm-roberta-large")
        stages = {s: sum(r.stage == s for r in reqs) for s in ("head", "train", "average", "evaluate")}
        rows.append((task, stages, len(jobs), len(text), cost))
        t_plan += t1 - t0
        t_render += t2 - t1
        t_yaml += t3 - t2
        t_validate += t4 - t3
        total += len(jobs)
    # one uncached validation for comparison (what a naive loop pays per object)
    kv_utils.schema_contents.cache_clear()
    kv_utils.schema_contents = kv_utils.schema_contents.__wrapped__
    t5 = time.perf_counter()
    sample = render_jobs(requests_for("nli")[:20], "nli", settings)
    for job in sample:
        kubernetes_validate.validate(job, versions[-1], strict=True)
    uncached = (time.perf_counter() - t5) / len(sample)

    lines = [
        "# Kubernetes Job rendering benchmark",
        "",
        f"`.venv/bin/python bench/k8s/bench_render.py --write` on {platform.machine()}, Python {platform.python_version()}, "
        f"{sys.platform}; CPU only, no cluster. Validation: `kubernetes_validate.validate(job, v, strict=True)` for "
        f"Kubernetes {', '.join(versions)} (schema files cached per process).",
        "",
        "| task | head | train | average | evaluate | Jobs | YAML bytes | GPU-hours (est.) | snapshots + averages |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, stages, n, size, cost in rows:
        size_txt = cost.describe().split("snapshots ~")[-1]
        lines.append(f"| {task} | {stages['head']} | {stages['train']} | {stages['average']} | {stages['evaluate']} | {n} | "
                     f"{size:,} | {cost.gpu_hours:,.0f} | {size_txt} |")
    lines += [
        "",
        "| step | seconds | Jobs/second |",
        "| --- | --- | --- |",
        f"| plan (JobRequests) | {t_plan:.3f} | {total / t_plan:,.0f} |",
        f"| render (dicts) | {t_render:.3f} | {total / t_render:,.0f} |",
        f"| YAML dump | {t_yaml:.3f} | {total / t_yaml:,.0f} |",
        f"| validate x{len(versions)} versions (cached schemas) | {t_validate:.3f} | {total * len(versions) / t_validate:,.0f} validations/s |",
        f"| render + validate, all {total} Jobs | {t_render + t_validate:.3f} | {total / (t_render + t_validate):,.0f} |",
        f"| validate, uncached (kubernetes_validate as shipped) | {uncached:.3f} per object | {1 / uncached:,.0f} validations/s |",
        "",
        "GPU-hours use the default stage estimates in k8s/base/cluster.yaml (1 GPU-hour per training epoch, 1 per "
        "evaluate Job); snapshot bytes assume fp32 weights (560 M parameters for xlm-roberta-large) and one fp32 "
        "run-sum per run.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.write:
        (HERE / "RESULTS.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
