"""Where things live under an experiment prefix: the object-store layout shared with the orchestrator.

A model reference ("ref") is the key prefix of a model's manifest, relative to the experiment:
a model is committed once `<ref>/manifest.json` exists (it is always written last).
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

from jobs.hashing import short_hash

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


def draw_hash(run_keys: Iterable[str]) -> str:
    """The 8-hex-digit name of a draw's ordered run list (its record and averages live under it)."""
    return short_hash(list(run_keys), 8)


def ref_kind(ref: str) -> Optional[str]:
    """'snapshot', 'run-average' (a run's CA), 'draw-average', 'head', or None for anything else."""
    parts = ref.strip("/").split("/")
    if parse_snapshot_ref(ref):
        return "snapshot"
    if len(parts) == 3 and parts[0] == "runs" and parts[2] == "ca":
        return "run-average"
    if len(parts) == 4 and parts[0] == "averages":
        return "draw-average"
    if len(parts) == 2 and parts[0] == "heads":
        return "head"
    return None


def is_average_ref(ref: str) -> bool:
    return ref_kind(ref) in ("run-average", "draw-average")


def draw_key(draw_seed: int, draw_hash: str) -> str:
    return f"draws/s{draw_seed}-{draw_hash}.json"


def draw_average_ref(draw_seed: int, draw_hash: str, method: str, k: int) -> str:
    return f"averages/s{draw_seed}-{draw_hash}/{method}/k{k:02d}"


def manifest_key(ref: str) -> str:
    return f"{ref.strip('/')}/{MANIFEST}"


def weights_key(ref: str) -> str:
    return f"{ref.strip('/')}/{WEIGHTS}"


# A model's files live under their plain names (`model.safetensors`, `trainer.pt`). A writer that
# finds a plain name taken by other bytes of a writer that has not committed yet (a duplicate job
# still running, or one killed between its uploads and its manifest) stores its own file under a
# name carrying its sha256 instead (`model.<sha16>.safetensors`), and its manifest says so
# (`file`, `extra_files.<name>.file`): no writer ever overwrites another's file, so whichever
# manifest wins names bytes that are its own. Readers find a file through `file_key`.
_ALTERNATE = re.compile(r"^(?P<stem>[^/]+?)\.(?P<sha>[0-9a-f]{16})(?P<suffix>\.[^./]+)$")


def alternate_name(name: str, sha256: str) -> str:
    """`model.safetensors` + sha -> `model.<sha16>.safetensors` (the name keeps its suffix)."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{sha256[:16]}.{suffix}" if dot and stem else f"{name}.{sha256[:16]}"


def plain_name(stored: str) -> str:
    """The plain name of a stored file name: `trainer.<sha16>.pt` -> `trainer.pt`."""
    m = _ALTERNATE.match(stored)
    return f"{m['stem']}{m['suffix']}" if m else stored


def file_key(ref: str, manifest: dict, name: str = WEIGHTS) -> str:
    """The key of a committed model's file `name` (WEIGHTS or an extra file's name), wherever
    its writer stored it. Manifests written before alternate names name no `file`: plain name."""
    if name == WEIGHTS:
        stored = manifest.get("file") or WEIGHTS
    else:
        stored = (manifest.get("extra_files", {}).get(name) or {}).get("file") or name
    return f"{ref.strip('/')}/{stored}"


def results_key(ref: str) -> str:
    """One results parquet per evaluated model, mirroring its ref."""
    return f"results/{ref.strip('/')}.parquet"


def log_key(job_name: str) -> str:
    return f"logs/{job_name}.log"


PROGRESS_SUFFIX = ".progress"


def progress_key(job_name: str) -> str:
    """A running job's latest progress line (jobs/progress.py); deleted when the job ends."""
    return f"logs/{job_name}{PROGRESS_SUFFIX}"


# --- prefixes and key parsing (the orchestrator lists and reads keys through these) -----------

RUNS = "runs/"
HEADS = "heads/"
AVERAGES = "averages/"
DRAWS = "draws/"
RESULTS = "results/"
MODEL_PREFIXES = (RUNS, HEADS, AVERAGES)  # where committed models (a manifest under a ref) live


def snapshots_prefix(run_key: str) -> str:
    return f"runs/{run_key}/snapshots/"


def manifest_ref(key: str) -> Optional[str]:
    """The ref whose manifest `key` is (`<ref>/manifest.json`), or None for any other key."""
    ref, _, name = key.strip("/").rpartition("/")
    return ref if name == MANIFEST and ref else None


def weights_ref(key: str) -> Optional[str]:
    """The ref whose weights file `key` is (`<ref>/model.safetensors`, or its alternate name),
    or None for any other key."""
    ref, _, name = key.strip("/").rpartition("/")
    return ref if plain_name(name) == WEIGHTS and ref else None


def completed_run(key: str) -> Optional[str]:
    """The run key of a completion marker (`runs/<run>/complete.json`), or None for any other key."""
    parts = key.strip("/").split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "runs" and parts[2] == "complete.json" else None


def is_record_key(key: str) -> bool:
    """A JSON record that is not a manifest: a draw record, a run's spec or its completion marker."""
    parts = key.strip("/").split("/")
    if parts[0] == DRAWS.rstrip("/"):
        return key.endswith(".json")
    return len(parts) == 3 and parts[0] == "runs" and parts[2] in ("spec.json", "complete.json")


def draw_record_copy_key(draw_seed: int, draw_hash: str) -> str:
    """A copy of the draw record beside the draw's averages (`averages/s<seed>-<hash>/draw.json`)."""
    return f"averages/s{draw_seed}-{draw_hash}/draw.json"
