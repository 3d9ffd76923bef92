"""A store written before the fidelity change (tests/fixtures/store-before-fidelity: specs,
manifests, draw records, curves and results made by commit 80bc8c9's own code, weights left
out) still reads with today's code: every file parses, every stored spec keeps its run key and
its meaning (a snapshot per epoch, first-sub-token NER labels, fp32), and `orchestrator tables`
prints the same numbers that commit printed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.results import from_parquet_bytes
from jobs.spec import spec_from_json, task_options

FIXTURE = Path(__file__).parent / "fixtures" / "store-before-fidelity"
EXPERIMENT = FIXTURE / "store" / "ner-tiny"


def test_specs_keep_their_run_keys_and_meaning():
    specs = sorted(EXPERIMENT.glob("runs/*/spec.json"))
    assert len(specs) == 5  # the head and 4 grid runs
    for path in specs:
        spec = spec_from_json("train", path.read_text(encoding="utf-8"))
        assert spec.run_key == path.parent.name
        assert spec.snapshot_every is None and spec.snapshot_steps(7) == [7 * e for e in range(1, spec.epochs + 1)]
        assert task_options(spec) == {"label_scheme": "first-subtoken"}
        assert spec.precision == "fp32"


def test_manifests_draw_records_and_results_parse():
    manifests = list(EXPERIMENT.rglob("manifest.json"))
    assert len(manifests) > 50
    for path in manifests:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        assert manifest["sha256"] and manifest["ref"]
        if manifest.get("kind") == "snapshot":
            spec = manifest["spec"]
            assert spec_from_json("train", json.dumps(spec)).run_key == manifest["run_key"]
    from jobs.draws import read_records
    from jobs.store import open_store

    draws = read_records(open_store(f"file://{EXPERIMENT}"))
    assert sorted(d.seed for d in draws) == [0, 1, 2] and all(d.k == 4 for d in draws)
    results = list(EXPERIMENT.glob("results/**/*.parquet"))
    assert results
    for path in results:
        frame = from_parquet_bytes(path.read_bytes())
        assert frame["label_scheme"].isna().all()  # the column came later: read as null
        assert frame["value"].between(0, 1).all()


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_tables_are_unchanged(tmp_path):
    bucket = tmp_path / "bucket"
    shutil.copytree(FIXTURE / "store", bucket)
    out = tmp_path / "tables"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "tables", "--bucket", f"file://{bucket}", "--experiment", "ner-tiny",
         "--task", "ner", "--format", "markdown", "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for before in sorted((FIXTURE / "tables").glob("*.md")):
        after = out / before.name
        assert after.exists(), before.name
        assert _table_rows(after.read_text(encoding="utf-8")) == _table_rows(before.read_text(encoding="utf-8")), before.name
