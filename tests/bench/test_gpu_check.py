"""The GPU check script (bench/gpu/check_precision.py) on a CPU, tiny setting: every precision
trains with a finite, falling loss, and the resume check is exact on a CPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "check_precision.py"


def test_gpu_check_runs_on_cpu_tiny():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--steps", "30", "--lr", "3e-3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and [r["precision"] for r in report["results"]] == ["fp16", "bf16", "fp32"]
    for r in report["results"]:
        assert r["finite"] and r["loss_last"] < r["loss_first"] and r["resume_max_abs_diff"] == 0.0
    assert report["results"][0]["scale"] > 0  # fp16 ran with a GradScaler
