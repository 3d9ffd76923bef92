"""Where things live under an experiment prefix: the object-store layout shared with the orchestrator.

A model reference ("ref") is the key prefix of a model's manifest, relative to the experiment:
a model is committed once `<ref>/manifest.json` exists (it is always written last).
"""
from __future__ import annotations

import re

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer.pt"
CURVE_PART = "curve.parquet"  # the training curve up to a snapshot, committed with it

_STEP = re.compile(r"^runs/([0-9a-f]{16})/snapshots/(\d{8})$")


def run_prefix(run_key: str) -> str:
    return f"runs/{run_key}"


def run_spec_key(run_key: str) -> str:
    return f"runs/{run_key}/spec.json"


def run_complete_key(run_key: str) -> str:
    """Written when a run has all its snapshots and its run-sum: the run is finished."""
    return f"runs/{run_key}/complete.json"


def curve_key(run_key: str) -> str:
    return f"runs/{run_key}/curve.parquet"


def snapshot_ref(run_key: str, step: int) -> str:
    return f"runs/{run_key}/snapshots/{step:08d}"


def parse_snapshot_ref(ref: str) -> tuple[str, int] | None:
    m = _STEP.match(ref.strip("/"))
    return (m.group(1), int(m.group(2))) if m else None


def run_sum_ref(run_key: str) -> str:
    """The fp32 sum of all snapshots of a run (the numerator of its CA)."""
    return f"runs/{run_key}/run-sum"


def run_average_ref(run_key: str) -> str:
    """The run's CA model (uniform average of its snapshots)."""
    return f"runs/{run_key}/ca"


def head_ref(run_key: str) -> str:
    return f"heads/{run_key}"


def draw_key(draw_seed: int, draw_hash: str) -> str:
    return f"draws/s{draw_seed}-{draw_hash}.json"


def draw_average_ref(draw_seed: int, draw_hash: str, method: str, k: int) -> str:
    return f"averages/s{draw_seed}-{draw_hash}/{method}/k{k:02d}"


def manifest_key(ref: str) -> str:
    return f"{ref.strip('/')}/{MANIFEST}"


def weights_key(ref: str) -> str:
    return f"{ref.strip('/')}/{WEIGHTS}"


def results_key(ref: str) -> str:
    """One results parquet per evaluated model, mirroring its ref."""
    return f"results/{ref.strip('/')}.parquet"


def log_key(job_name: str) -> str:
    return f"logs/{job_name}.log"
