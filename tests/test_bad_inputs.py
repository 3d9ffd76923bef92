"""A catalogue of bad inputs: every file the system reads (specs, manifests, run records, draw
records, results, configs), malformed, truncated or not UTF-8. Each row runs a real process
(`python -m jobs ...` or `python -m orchestrator ...`) on its own copy of a small store and must:
exit non-zero, print no traceback (no --debug), say what is wrong in a few lines that match the
row's pattern (naming the file or key), and leave the store as it was (job logs aside).

Add a row to ROWS: an id, the command (a function of the row's Paths), how to break the store
(or the spec), and a regex the output must match. The rows run a few at a time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from jobs import layout
from jobs.spec import AverageSpec, DatasetRef, EvaluateSpec, spec_to_json
from jobs.store import LocalStore

from tests.conftest import REPO
from tests.fault_support import fingerprint

EXPERIMENT = "exp"
CONFIG = {
    "task": "nli", "base_model": "tiny", "epochs": 3, "head": {"enabled": False},
    "grid": {"learning_rates": [1e-5, 2e-5, 3e-5], "batch_sizes": [16, 32], "seeds": [1]},
    "draws": {"count": 1, "runs_per_draw": 3, "methods": ["r-last", "soup-2"]},
}
CONFIGS = [(1e-5, 16), (2e-5, 16), (3e-5, 32)]  # three of the grid's runs are finished
MAX_LINES = 6


@dataclass
class Paths:
    """Where one row works: its bucket, experiment store, config file, and the base store's facts."""

    bucket: Path
    store: Path
    config: Path
    facts: dict
    spec: Path = field(init=False)

    def __post_init__(self):
        self.spec = self.bucket.parent / "spec.json"

    @property
    def uri(self) -> str:
        return f"file://{self.store}"

    def orch(self, *args: str) -> list[str]:
        return ["orchestrator", *args, "--bucket", f"file://{self.bucket}", "--experiment", EXPERIMENT, "--config", str(self.config)]


@dataclass
class Row:
    id: str
    command: Callable[[Paths], list[str]]  # ["jobs", KIND, ...] or ["orchestrator", ...]
    breaks: Callable[[Paths], None]  # breaks the store, the spec file or the config
    expect: str  # regex over the output
    stdin: Callable[[Paths], bytes] | None = None
    env: Callable[[Paths], dict] | None = None


# ---- how to break things ------------------------------------------------------------------------


def nothing(p: Paths) -> None:
    pass


def write(rel: str, data: bytes | Callable[[bytes], bytes]):
    """Replace the store file `rel` (a function of the row's facts) with bytes or a function of its bytes."""

    def go(p: Paths) -> None:
        path = p.store / rel.format(**p.facts)
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)

    return go


def manifest_edit(rel: str, edit: Callable[[dict], object]):
    def go(p: Paths) -> None:
        path = p.store / rel.format(**p.facts)
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return go


def spec_file(data: bytes | Callable[[Paths], bytes]):
    def go(p: Paths) -> None:
        p.spec.write_bytes(data(p) if callable(data) else data)

    return go


def config_file(data: bytes):
    def go(p: Paths) -> None:
        p.config.write_bytes(data)

    return go


def config_with(**changes):
    """The row's config with top-level keys replaced (dotted keys reach into a section)."""
    def go(p: Paths) -> None:
        cfg = json.loads(json.dumps(CONFIG))
        for key, value in changes.items():
            node, parts = cfg, key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        p.config.write_text(yaml.safe_dump(cfg))

    return go


def sweep_dry_run(p: Paths) -> list[str]:
    return p.orch("sweep", "--dry-run")


def without(key: str):
    def edit(m: dict) -> dict:
        m.pop(key)
        return m

    return edit


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def results_with_string_values(p: Paths) -> None:
    import pandas as pd

    path = p.store / p.facts["results"]
    frame = pd.read_parquet(path)
    frame["value"] = frame["value"].astype(str) + "%"
    frame.to_parquet(path, index=False)


def average_spec(p: Paths, **kw) -> bytes:
    spec = AverageSpec(experiment_uri=p.uri, task="nli", methods=("r-last", "soup-2"), run_keys=tuple(p.facts["run_keys"]), draw_seed=0, **kw)
    return spec_to_json(spec).encode()


def evaluate_spec(p: Paths, refs) -> bytes:
    spec = EvaluateSpec(experiment_uri=p.uri, task="nli", base_model="tiny", refs=tuple(refs),
                        source_dev=DatasetRef("synthetic-nli", "en", "validation", limit=16), targets=())
    return spec_to_json(spec).encode()


def job(kind: str, *extra: str):
    return lambda p: ["jobs", kind, "--spec", str(p.spec), *extra]


def job_stdin(kind: str):
    return lambda p: ["jobs", kind, "--spec", "-"]


def average_job_with(breaks: Callable[[Paths], None]):
    """Break the store, and write a good average spec for it."""

    def go(p: Paths) -> None:
        breaks(p)
        p.spec.write_bytes(average_spec(p))

    return go


def evaluate_job_with(breaks: Callable[[Paths], None], refs: str):
    def go(p: Paths) -> None:
        breaks(p)
        p.spec.write_bytes(evaluate_spec(p, [r.format(**p.facts) for r in refs.split(",")]))

    return go


SNAP = "{snap}/manifest.json"  # a snapshot of the first run (its last)
SUM = "{run_sum}/manifest.json"  # the first run's run-sum
TRAIN = json.dumps({"experiment_uri": "file:///nowhere", "task": "nli", "base_model": "tiny",
                    "train_data": {"dataset": "synthetic-nli", "language": "en", "split": "train"},
                    "dev_data": {"dataset": "synthetic-nli", "language": "en", "split": "validation"},
                    "learning_rate": 1e-3, "batch_size": 16, "seed": 1, "epochs": 1})

ROWS = [
    # ---- job specs (jobs/__main__.py) ----
    Row("spec-latin1-byte", job("average"), spec_file(lambda p: average_spec(p).replace(b'"nli"', b'"nl\xe9"')),
        r"spec file .*spec\.json: not UTF-8 \(byte 0xe9 at offset \d+\)"),
    Row("spec-stdin-not-utf8", job_stdin("evaluate"), nothing, r"spec from stdin: not UTF-8 \(byte 0xff", stdin=lambda p: b'{"task": "\xff"}'),
    Row("spec-env-not-utf8", lambda p: ["jobs", "train"], nothing, r"spec in JOB_SPEC: not UTF-8",
        env=lambda p: {b"JOB_SPEC": b'{"task": "\xfe"}'}),
    Row("spec-infinity", job("train"), spec_file(TRAIN.replace("0.001", "Infinity").encode()), r"spec file .*: not valid JSON \(Infinity is not a finite number\)"),
    Row("spec-nan", job("train"), spec_file(TRAIN.replace('"seed": 1', '"seed": NaN').encode()), r"NaN is not a finite number"),
    Row("spec-1e999", job("train"), spec_file(TRAIN.replace("0.001", "1e999").encode()), r"1e999 is too large for a float"),
    Row("spec-truncated", job("average"), spec_file(lambda p: truncate(average_spec(p))), r"spec file .*: not valid JSON \(.* at line \d+ column \d+; truncated\?\)"),
    Row("spec-a-list", job("evaluate"), spec_file(b"[1, 2]"), r"evaluate spec: expected a JSON object, got list"),
    Row("spec-missing-file", lambda p: ["jobs", "average", "--spec", str(p.spec) + ".nope"], nothing, r"cannot read spec file .*\.nope: No such file"),
    Row("spec-a-directory", lambda p: ["jobs", "average", "--spec", str(p.bucket)], nothing, r"cannot read spec file .*: Is a directory"),
    Row("spec-empty", job("average"), spec_file(b""), r"spec file .*: not valid JSON \(Expecting value at line 1 column 1"),
    Row("spec-nested-too-deep", job("average"), spec_file(b"[" * 100000 + b"]" * 100000), r"not valid JSON \(nested too deeply\)"),
    Row("spec-utf8-bom", job("average"), spec_file(lambda p: b"\xef\xbb\xbf" + average_spec(p)), r"spec file .*: not valid JSON \(Unexpected UTF-8 BOM"),
    Row("spec-no-refs", job("evaluate"), spec_file(lambda p: json.dumps(dict(json.loads(evaluate_spec(p, ["x"])), refs=[])).encode()),
        r"refs: name at least one model reference"),
    Row("spec-unknown-kind", lambda p: ["jobs", "averge", "--spec", str(p.spec)], nothing, r"invalid choice: 'averge'"),
    # ---- manifests, run-sums and draw records read by the average job ----
    Row("average-manifest-without-sha256", job("average"), average_job_with(manifest_edit(SNAP, without("sha256"))),
        r"manifest runs/\w+/snapshots/\d+/manifest\.json: sha256 is missing or not 64 hex digits"),
    Row("average-stale-run-sum", job("average"),
        average_job_with(manifest_edit(SUM, lambda m: dict(m, snapshots=[dict(s, sha256="0" * 64) for s in m["snapshots"]]))),
        r"snapshot runs/\w+/snapshots/\d+ has sha256 \w+, but the run-sum of run \w+ does not match its snapshots"),
    Row("average-draw-record-truncated", job("average"), average_job_with(write("{draw}", truncate)),
        r"draw record draws/s0-\w+\.json: not valid JSON"),
    # ---- the evaluate job: every model it could not score is named; exit 3 ----
    Row("evaluate-manifest-truncated", job("evaluate"), evaluate_job_with(write("{snap2}/manifest.json", truncate), "{snap2}"),
        r"cannot evaluate runs/\w+/snapshots/\d+: manifest .*: not valid JSON"),
    # ---- orchestrator status: corrupt and partial models, malformed records ----
    Row("status-truncated-manifest", lambda p: p.orch("status"), write(SNAP, truncate),
        r"problem: manifest runs/\w+/snapshots/\d+/manifest\.json: not valid JSON \(.*truncated\?\)"),
    Row("status-truncated-weights", lambda p: p.orch("status"), write("{snap}/model.safetensors", truncate),
        r"problem: model runs/\w+/snapshots/\d+: model\.safetensors has \d+ bytes, manifest says \d+ \(truncated or partial\)"),
    Row("status-verify-flipped-byte", lambda p: p.orch("status", "--verify"), write("{snap}/model.safetensors", flip_last_byte),
        r"problem: model runs/\w+/snapshots/\d+: model\.safetensors sha256 differs from its manifest"),
    Row("status-manifest-size-a-string", lambda p: p.orch("status"), manifest_edit(SNAP, lambda m: dict(m, size=str(m["size"]))),
        r"problem: manifest runs/.*: size is missing or not a byte count"),
    Row("status-run-sum-not-utf8", lambda p: p.orch("status"), write(SUM, lambda d: d.replace(b'"kind"', b'"k\xffnd"')),
        r"problem: manifest runs/\w+/run-sum/manifest\.json: not UTF-8 \(byte 0xff"),
    Row("status-manifest-a-list", lambda p: p.orch("status"), manifest_edit(SUM, lambda m: [m]),
        r"problem: manifest runs/\w+/run-sum/manifest\.json: expected a JSON object, found list"),
    Row("status-weights-missing", lambda p: p.orch("status"), lambda p: (p.store / p.facts["snap"] / "model.safetensors").unlink(),
        r"problem: model runs/\w+/snapshots/\d+: model\.safetensors is missing"),
    Row("status-manifest-without-sha256", lambda p: p.orch("status"), manifest_edit(SNAP, without("sha256")), r"problem: manifest .*: sha256 is missing"),
    Row("status-extra-files-a-list", lambda p: p.orch("status"), manifest_edit(SUM, lambda m: dict(m, extra_files=[])), r"problem: manifest .*run-sum.*: extra_files: expected an object"),
    Row("status-complete-json-truncated", lambda p: p.orch("status"), write("{complete}", truncate), r"problem: runs/\w+/complete\.json: not valid JSON"),
    Row("status-draw-record-not-utf8", lambda p: p.orch("status"), write("{draw}", lambda d: b"\x80" + d), r"problem: draws/s0-\w+\.json: not UTF-8"),
    Row("status-config-latin1", lambda p: p.orch("status"), config_file(yaml.safe_dump(CONFIG).encode() + b"# caf\xe9\n"),
        r"config\.yaml: not UTF-8 \(byte 0xe9"),
    Row("status-config-infinite-lr", lambda p: p.orch("status"), config_file(yaml.safe_dump(CONFIG).replace("1.0e-05", ".inf").encode()),
        r"grid\.learning_rates\[0\]: must be a finite number > 0, got inf"),
    # ---- other orchestrator readers ----
    Row("gc-truncated-run-sum", lambda p: p.orch("gc", "--dry-run"), write(SUM, truncate), r"manifest runs/\w+/run-sum/manifest\.json: not valid JSON"),
    Row("evaluate-plan-complete-json-truncated", lambda p: p.orch("evaluate", "--dry-run"), write("{complete}", truncate),
        r"run record runs/\w+/complete\.json: not valid JSON"),
    Row("average-plan-draw-record-truncated", lambda p: p.orch("average"), write("{draw}", truncate),
        r"draw record draws/s0-\w+\.json: not valid JSON"),
    Row("tables-value-column-strings", lambda p: ["orchestrator", "tables", "--bucket", f"file://{p.bucket}", "--experiment", EXPERIMENT,
                                                  "--cache-dir", str(p.bucket.parent / "cache")],
        results_with_string_values, r"results/.*\.parquet"),
    Row("tables-truncated-results", lambda p: ["orchestrator", "tables", "--bucket", f"file://{p.bucket}", "--experiment", EXPERIMENT,
                                               "--cache-dir", str(p.bucket.parent / "cache")],
        write("{results}", truncate), r"results file results/.*\.parquet is not a readable results parquet"),
    Row("tables-draw-record-truncated", lambda p: ["orchestrator", "tables", "--bucket", f"file://{p.bucket}", "--experiment", EXPERIMENT,
                                                   "--cache-dir", str(p.bucket.parent / "cache")],
        write("{draw}", truncate), r"draws/s0-\w+\.json"),
    # ---- config values, refused when the config loads (before any stage, --dry-run included) ----
    *[Row(f"config-{name}", sweep_dry_run, config_with(**changes), expect) for name, changes, expect in [
        ("lr-nan", {"grid.learning_rates": [float("nan")]}, r"grid\.learning_rates\[0\]: must be a finite number > 0"),
        ("lr-negative", {"grid.learning_rates": [-1e-5]}, r"grid\.learning_rates\[0\]: must be a finite number > 0"),
        ("lr-zero", {"grid.learning_rates": [0.0]}, r"grid\.learning_rates\[0\]: must be a finite number > 0"),
        ("lr-a-word", {"grid.learning_rates": ["fast"]}, r"grid\.learning_rates\[0\]: expected a number"),
        ("lr-duplicates", {"grid.learning_rates": [1e-5, 1e-5]}, r"grid\.learning_rates: has duplicates"),
        ("batch-zero", {"grid.batch_sizes": [0]}, r"grid\.batch_sizes\[0\]: must be >= 1"),
        ("batch-fraction", {"grid.batch_sizes": [1.5]}, r"grid\.batch_sizes\[0\]: expected an integer"),
        ("no-seeds", {"grid.seeds": []}, r"grid\.seeds: needs at least one value"),
        ("head-lr-inf", {"head.enabled": True, "head.learning_rate": float("inf")}, r"head\.learning_rate: must be a finite number > 0"),
        ("head-batch-zero", {"head.enabled": True, "head.batch_size": 0}, r"head\.batch_size: must be >= 1"),
        ("epochs-zero", {"epochs": 0}, r"epochs: must be >= 1"),
        ("epochs-negative", {"epochs": -3}, r"epochs: must be >= 1"),
        ("warmup-above-one", {"warmup_ratio": 1.5}, r"warmup_ratio: must be in \[0, 1\)"),
        ("warmup-negative", {"warmup_ratio": -0.1}, r"warmup_ratio: must be in \[0, 1\)"),
        ("eval-batch-zero", {"eval_batch_size": 0}, r"eval_batch_size: must be >= 1"),
        ("precision-unknown", {"precision": "fp8"}, r"precision: must be one of fp16, bf16, fp32"),
        ("ner-labels-unknown", {"ner_labels": "every-token"}, r"ner_labels: must be one of"),
        ("qa-questions-unknown", {"qa_questions": "short"}, r"qa_questions: must be one of"),
        ("snapshot-every-no-unit", {"snapshot_every": "4"}, r"snapshot_every: expected 'N epochs' or 'N steps'"),
        ("snapshot-every-hours", {"snapshot_every": "2 hours"}, r"snapshot_every: expected 'N epochs' or 'N steps'"),
        ("snapshot-every-not-dividing", {"snapshot_every": "2 epochs"}, r"every 2 epochs does not divide the run of 3 epochs"),
        ("snapshot-every-fraction", {"snapshot_every": "0.3 epochs"}, r"0\.3 epochs does not divide an epoch"),
        ("snapshot-both-schedules", {"snapshot_every": "1 epoch", "snapshots_per_epoch": 2}, r"either snapshot_every or snapshots_per_epoch"),
        ("micro-batch-not-dividing", {"micro_batch_size": 5}, r"micro_batch_size: 5 must divide every batch size"),
        ("runs-per-draw-zero", {"draws.runs_per_draw": 0}, r"count and runs_per_draw must be >= 1"),
        ("soup-zero", {"draws.methods": ["soup-0"]}, r"soup-0"),
        ("method-unknown", {"draws.methods": ["r-best"]}, r"unknown averaging method 'r-best'"),
        ("drop-averages-unfused", {"draws.keep_averages": False}, r"keep_averages: false needs fused_evaluate"),
        ("unknown-key", {"learning_rate": 1e-5}, r"unknown field\(s\) learning_rate"),
        ("unknown-task", {"task": "pos"}, r"task 'pos'|unknown task 'pos'|no default data for task 'pos'"),
        ("unknown-target", {"data": {"train": {"dataset": "synthetic-nli", "language": "en", "split": "train"},
                                     "dev": {"dataset": "synthetic-nli", "language": "en", "split": "validation"},
                                     "targets": [{"dataset": "xnli", "languages": ["tlh"]}]}}, r"xnli has no language 'tlh'"),
    ]],
]


# ---- the base store: three finished runs, a draw record, one results file --------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, dict]:
    from tests.jobs.average_support import make_runs

    from jobs.results import results_frame, to_parquet_bytes
    from jobs.spec import short_hash

    from orchestrator import plan
    from orchestrator.config import load_config

    root = tmp_path_factory.mktemp("bad-inputs-base")
    store = LocalStore(root / "bucket" / EXPERIMENT)
    make_runs(store, root / "src", CONFIGS, snapshots=2)
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    cfg = load_config(str(root / "config.yaml"), {})
    [draw] = plan.record_draws(store, plan.make_draws(cfg, plan.finished_runs(cfg, store, store.uri, None)), tuple(cfg.draws.methods))
    keys = list(draw.run_keys)  # as the orchestrator recorded them
    h = short_hash(keys, 8)
    snap = layout.snapshot_ref(keys[0], 20)
    rows = [{"experiment": EXPERIMENT, "task": "nli", "ref": snap, "kind": "snapshot", "run_key": keys[0], "learning_rate": 1e-5,
             "batch_size": 16, "seed": 1, "step": 20, "metric": "accuracy", "dataset": "synthetic-nli", "language": lang,
             "split": "validation" if lang == "en" else "test", "value": 0.5, "n_examples": 10} for lang in ("en", "xx-near")]
    store.put_bytes(layout.results_key(snap), to_parquet_bytes(results_frame(rows)))
    facts = {"run_keys": keys, "snap": snap, "snap2": layout.snapshot_ref(keys[1], 20), "run_sum": layout.run_sum_ref(keys[0]), "draw": layout.draw_key(0, h),
             "complete": layout.run_complete_key(keys[0]), "results": layout.results_key(snap)}
    return root, facts


def _run(row: Row, base_root: Path, facts: dict, work: Path) -> dict:
    bucket = work / "bucket"
    shutil.copytree(base_root / "bucket", bucket)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    p = Paths(bucket, bucket / EXPERIMENT, config, facts)
    p.spec.write_bytes(average_spec(p))  # a good spec unless the row breaks it
    row.breaks(p)
    before = fingerprint(p.store)
    (work / "tmp").mkdir()
    env = {k.encode(): v.encode() for k, v in os.environ.items() if k not in ("JOB_SPEC",)}
    env.update({b"TMPDIR": str(work / "tmp").encode(), b"XLT_NUM_THREADS": b"1", b"PYTHONPATH": str(REPO).encode()})
    if row.env:
        env.update(row.env(p))
    command = row.command(p)
    import time

    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", *command], input=row.stdin(p) if row.stdin else None, capture_output=True,
                          env=env, cwd=work, timeout=300)
    output = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
    return {"code": proc.returncode, "output": output, "stderr": proc.stderr.decode("utf-8", errors="replace"), "before": before, "after": fingerprint(p.store),
            "scratch": sorted(x.name for x in (work / "tmp").iterdir()), "seconds": time.time() - t0}


@pytest.fixture(scope="module")
def outcomes(request, base, tmp_path_factory) -> dict[str, dict]:
    """Every selected row's outcome, run a few processes at a time."""
    wanted = {item.callspec.params["row"].id for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec") and "row" in item.callspec.params}
    rows = [r for r in ROWS if r.id in wanted]
    root, facts = base
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {r.id: pool.submit(_run, r, root, facts, tmp_path_factory.mktemp(r.id)) for r in rows}
        return {rid: f.result() for rid, f in futures.items()}


def test_the_catalogue_has_at_least_thirty_rows_with_distinct_ids():
    assert len(ROWS) >= 30 and len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_a_bad_input_is_one_clear_line_and_changes_nothing(row, outcomes):
    out = outcomes[row.id]
    text = out["output"]
    assert out["code"] != 0, text
    assert "Traceback" not in text and "unexpected error" not in text, text
    lines = [line for line in out["stderr"].splitlines() if line.strip()]  # stdout: a command's normal report (status's table)
    assert len(lines) <= MAX_LINES, text
    assert re.search(row.expect, text), f"{row.expect!r} not in:\n{text}"
    assert out["after"] == out["before"], "the store changed"
    assert out["scratch"] == [], f"scratch left behind: {out['scratch']}"
