"""The average job: uniform averages of snapshots, streamed tensor by tensor.

Run it as `python -m jobs average --spec spec.json`. Three shapes of work (see AverageSpec):
a run's CA (its run-sum divided by its snapshot count), every method for every k = 1..K of a
draw in one pass (prefix sums over the draw's runs: each input file is fetched once per job),
and an explicit list of refs. Inputs are validated (committed, sha256, identical tensor names,
shapes, dtypes, frozen heads and integer buffers) before anything is computed or written.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from jobs import layout
from jobs.common import log, progress, setup_torch
from jobs.errors import PermanentError
from jobs.snapshots import WeightsCache, commit_model, is_committed, read_manifest
from jobs.spec import AverageSpec, short_hash, to_dict
from jobs.store import ObjectStore, open_store
from jobs.tensorio import Readers, StreamingWriter, TensorInfo, read_header

CHUNK_BYTES = 64 << 20  # rows of a large tensor are averaged in slices of about this size


class AverageError(PermanentError):
    """Inputs that must not be averaged together."""


@dataclass
class Output:
    """One averaged model: sum of `terms` (input ref -> weight) divided by `divisor`."""

    ref: str
    method: str
    terms: list[tuple[str, float]]
    divisor: float
    manifest: dict = field(default_factory=dict)


def run_info(store: ObjectStore, run_key: str) -> dict:
    """The run-sum manifest of a finished run: its snapshots with their English dev scores."""
    ref = layout.run_sum_ref(run_key)
    if not is_committed(store, ref):
        raise AverageError(f"run {run_key} is not finished (no committed run-sum at {ref}); train it first")
    return read_manifest(store, ref)


def last_snapshot(info: dict) -> dict:
    return max(info["snapshots"], key=lambda s: s["step"])


def best_snapshot(info: dict) -> dict:
    """The snapshot with the best English dev score; the earliest wins a tie."""
    snaps = sorted(info["snapshots"], key=lambda s: s["step"])
    return max(snaps, key=lambda s: s["dev_score"])  # max keeps the first of equal scores


def plan_draw(store: ObjectStore, spec: AverageSpec) -> tuple[list[Output], dict]:
    """Outputs for every method and k of a draw, in the order they are computed."""
    infos = [run_info(store, key) for key in spec.run_keys]
    draw_hash = short_hash(list(spec.run_keys), 8)
    draw = {"seed": spec.draw_seed, "k": len(spec.run_keys), "run_keys": list(spec.run_keys), "hash": draw_hash}
    outputs = []
    for method in spec.methods:
        for k in range(1, len(infos) + 1):
            prefix = infos[:k]
            if method == "r-ca":
                terms = [(layout.run_sum_ref(i["run_key"]), 1.0) for i in prefix]
                divisor = float(sum(i["count"] for i in prefix))
                members = [s for i in prefix for s in i["snapshots"]]
            elif method in ("r-last", "r-dev"):
                pick = last_snapshot if method == "r-last" else best_snapshot
                members = [pick(i) for i in prefix]
                terms = [(s["ref"], 1.0) for s in members]
                divisor = float(k)
            else:  # soup-N: the N best snapshots by English dev among the first k runs
                n = int(method.split("-", 1)[1])
                ranked = [s for i in prefix for s in sorted(i["snapshots"], key=lambda s: s["step"])]
                members = sorted(ranked, key=lambda s: -s["dev_score"])[:n]  # stable: draw order, then step
                terms = [(s["ref"], 1.0) for s in members]
                divisor = float(len(members))
            ref = layout.draw_average_ref(spec.draw_seed, draw_hash, method, k)
            manifest = {
                "kind": "draw-average",
                "method": method,
                "k": k,
                "draw_seed": spec.draw_seed,
                "draw_hash": draw_hash,
                "run_keys": list(spec.run_keys[:k]),
                "constituents": [{"ref": s["ref"], "sha256": s["sha256"]} for s in members],
                "count": len(members),
                "head_sha256": infos[0].get("head_sha256"),
                "spec": infos[0]["spec"],
            }
            outputs.append(Output(ref, method, terms, divisor, manifest))
    return outputs, draw


def plan_run_averages(store: ObjectStore, spec: AverageSpec) -> list[Output]:
    outputs = []
    for key in spec.run_keys:
        info = run_info(store, key)
        outputs.append(
            Output(
                layout.run_average_ref(key),
                "ca",
                [(layout.run_sum_ref(key), 1.0)],
                float(info["count"]),
                {
                    "kind": "run-average",
                    "method": "ca",
                    "run_key": key,
                    "constituents": [{"ref": s["ref"], "sha256": s["sha256"]} for s in info["snapshots"]],
                    "count": info["count"],
                    "dev_score": None,
                    "head_sha256": info.get("head_sha256"),
                    "spec": info["spec"],
                },
            )
        )
    return outputs


def plan_uniform(store: ObjectStore, spec: AverageSpec) -> list[Output]:
    manifests = [read_manifest(store, ref) for ref in spec.refs]
    return [
        Output(
            spec.output_ref,
            "uniform",
            [(ref, 1.0) for ref in spec.refs],
            float(len(spec.refs)),
            {
                "kind": "average",
                "method": "uniform",
                "constituents": [{"ref": m["ref"], "sha256": m["sha256"]} for m in manifests],
                "count": len(manifests),
                "head_sha256": manifests[0].get("head_sha256"),
                "spec": manifests[0].get("spec"),
            },
        )
    ]


def _validate(store: ObjectStore, paths: dict[str, Path], manifests: dict[str, dict]) -> dict[str, TensorInfo]:
    """Same tensors, shapes, dtypes and frozen heads everywhere, else name the first mismatch."""
    refs = list(paths)
    first = refs[0]
    infos, _ = read_header(paths[first])
    heads = {ref: manifests[ref].get("head_sha256") for ref in refs}
    for ref in refs[1:]:
        if heads[ref] != heads[first]:
            raise AverageError(
                f"frozen heads differ: {first} has head {str(heads[first])[:12]}, {ref} has {str(heads[ref])[:12]}; "
                f"average only runs trained from the same head"
            )
        other, _ = read_header(paths[ref])
        for name in sorted(set(infos) | set(other)):
            if name not in infos or name not in other:
                raise AverageError(f"tensor {name} is in only one of {first} and {ref}")
            a, b = infos[name], other[name]
            if a.shape != b.shape:
                raise AverageError(f"tensor {name} has shape {a.shape} in {first} but {b.shape} in {ref}")
            # run-sums are fp32 while snapshots may be bf16: compare float-ness, not width
            if a.is_float != b.is_float or (not a.is_float and a.dtype != b.dtype):
                raise AverageError(f"tensor {name} has dtype {a.dtype} in {first} but {b.dtype} in {ref}")
    return infos


def execute(
    store: ObjectStore,
    outputs: list[Output],
    scratch: Path,
    out_dtype: torch.dtype = torch.float32,
    commit: bool = True,
) -> list[dict]:
    """Compute every output in one streaming pass over the inputs; commit each to the store."""
    cache = WeightsCache(store, scratch / "cache")
    needed = list(dict.fromkeys(ref for o in outputs for ref, _ in o.terms))
    manifests = {ref: read_manifest(store, ref) for ref in needed}
    paths = {ref: cache.path(ref, manifests[ref]) for ref in needed}
    infos = _validate(store, paths, manifests)
    out_infos = {n: TensorInfo({torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}[out_dtype], i.shape) if i.is_float else i for n, i in infos.items()}

    files = {o.ref: scratch / "out" / f"{i:04d}.safetensors" for i, o in enumerate(outputs)}
    (scratch / "out").mkdir(parents=True, exist_ok=True)
    writers = {o.ref: StreamingWriter(files[o.ref], out_infos, {"method": o.method}) for o in outputs}
    by_method: dict[str, list[Output]] = {}
    for o in outputs:
        by_method.setdefault(o.method, []).append(o)
    with Readers(paths) as readers:
        for name in progress(sorted(infos), desc="average", unit="tensor"):
            info = infos[name]
            if not info.is_float:
                _copy_integer_tensor(readers, needed, name, outputs, writers)
                continue
            rows = info.shape[0] if info.shape else 1
            row_bytes = max(1, info.nbytes // max(rows, 1))
            step = max(1, CHUNK_BYTES // row_bytes)
            for start in range(0, rows, step):
                stop = min(rows, start + step)
                cache_chunk: dict[str, torch.Tensor] = {}

                def chunk(ref: str) -> torch.Tensor:
                    if ref not in cache_chunk:
                        if info.shape:
                            cache_chunk[ref] = readers._handles[ref].get_slice(name)[start:stop].float()
                        else:
                            cache_chunk[ref] = readers.get(ref, name).float()
                    return cache_chunk[ref]

                for method_outputs in by_method.values():
                    # prefix sums: when output k's terms extend output k-1's, add only the new ones
                    acc: torch.Tensor | None = None
                    previous: list[tuple[str, float]] = []
                    for o in method_outputs:
                        if acc is not None and o.terms[: len(previous)] == previous:
                            new_terms = o.terms[len(previous):]
                        else:
                            acc, new_terms = None, o.terms
                        for ref, weight in new_terms:
                            x = chunk(ref)
                            acc = x * weight if acc is None else acc.add_(x, alpha=weight)
                        previous = o.terms
                        writers[o.ref].write(name, acc / o.divisor)
                    # soup inputs are dropped as soon as this chunk is done: memory stays bounded
                cache_chunk.clear()
    for w in writers.values():
        w.close()
    committed = []
    if commit:
        for o in outputs:
            committed.append(commit_model(store, o.ref, files[o.ref], o.manifest))
            files[o.ref].unlink()
    return committed


def _copy_integer_tensor(readers: Readers, refs, name, outputs, writers) -> None:
    values = {ref: readers.get(ref, name) for ref in refs}
    first_ref = refs[0]
    for ref in refs[1:]:
        if not torch.equal(values[ref], values[first_ref]):
            raise AverageError(f"integer buffer {name} differs between {first_ref} and {ref}; it cannot be averaged")
    for o in outputs:
        writers[o.ref].write(name, values[first_ref])


def run_average(spec: AverageSpec, scratch: Path | None = None) -> list[str]:
    setup_torch(spec.num_threads)
    store = open_store(spec.experiment_uri)
    scratch = Path(scratch or tempfile.mkdtemp(prefix="xlt-average-"))
    draw = None
    if spec.methods == ("uniform",):
        outputs = plan_uniform(store, spec)
    elif spec.methods == ("ca",):
        outputs = plan_run_averages(store, spec)
    else:
        outputs, draw = plan_draw(store, spec)
    todo = [o for o in outputs if not is_committed(store, o.ref)]  # a retry redoes only what is missing
    if draw is not None:
        record = json.dumps(draw, indent=1).encode()
        store.put_bytes(layout.draw_key(spec.draw_seed, draw["hash"]), record)
    if not todo:
        log.info("all %d averaged models exist", len(outputs))
        return []
    # keep whole prefix chains together so prefix sums stay valid
    methods_todo = {o.method for o in todo}
    todo = [o for o in outputs if o.method in methods_todo]
    committed = execute(store, todo, scratch)
    log.info("committed %d averaged models", len(committed))
    return [m["ref"] for m in committed]
