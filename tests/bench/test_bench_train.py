"""bench/train/bench_train.py on a tiny setting (the tiny preset, 32 real PAN-X sentences, one
round, SeaweedFS for the snapshot runs): it writes the JSON it documents, with positive
throughputs of both contenders, ratios that are their quotients, and per-snapshot costs of
both commit modes (the background commit stops the loop only to copy the state)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "train" / "bench_train.py"


def test_bench_train_runs_tiny_and_writes_its_ratios(tmp_path, realdata_dir):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", "tiny", "--examples", "32", "--dev-examples", "16",
                           "--batch-size", "16", "--max-length", "64", "--rounds", "1", "--data", str(realdata_dir / "panx"),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["model"] == "tiny" and report["environment"]["accelerate"]
    fp32 = report["throughput"]["fp32"]
    assert len(fp32["rounds"]) == 1 and fp32["trainer_optim"] == "adamw_torch_fused"
    [row] = fp32["rounds"]
    assert row["project"]["steps"] == row["trainer"]["steps"] == 2  # the same schedule: 32 sentences at batch 16
    assert row["project"]["padded_tokens"] == row["trainer"]["padded_tokens"] > 32  # the same batches, padded alike
    m = fp32["median"]
    assert m["project_samples_per_s"] > 0 and m["trainer_samples_per_s"] > 0
    assert m["ratio_samples_per_s"] == pytest.approx(m["project_samples_per_s"] / m["trainer_samples_per_s"])
    assert m["ratio_job_speed"] == pytest.approx(m["trainer_job_s"] / m["project_job_s"])
    modes = report["snapshots_s3"]["fp32"]
    assert set(modes) == {"in-loop", "background"}
    for mode, s in modes.items():
        assert [x["step"] for x in s["snapshots"]] == [1, 2]  # two snapshots per epoch
        assert all(x["commit_s"] > 0 and x["dev_s"] > 0 for x in s["snapshots"]) and s["run_sum_s"] > 0
        assert 0 < s["fraction_of_epoch"] and s["fraction_of_panx_epoch"] < s["fraction_of_epoch"]
    for x in modes["in-loop"]["snapshots"]:
        assert x["loop_blocked_s"] >= x["commit_s"]  # inside the loop, the loop waits for the whole commit
    assert "| fp32 | background |" in proc.stdout and "ratio (steps)" in proc.stdout
