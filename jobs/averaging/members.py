"""Planning: which inputs make which averaged model, and the manifest each gets.

One function per AverageSpec mode turns a spec into `Output`s for the engine: `plan_draw` (every
method and k of a draw, in chain order), `plan_run_averages` (each run's CA) and `plan_explicit`
(a list of refs into one model). The methods themselves (jobs.averaging.methods) say which
snapshots each average holds; this module reads the runs and names the outputs.
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

from jobs import layout
from jobs.averaging.engine import Output
from jobs.averaging.errors import AverageError
from jobs.averaging.methods import EXPLICIT, RUN_AVERAGES, Method, RunInfo, Selection, get_method
from jobs.snapshots import check_run_sum, is_committed, read_manifest
from jobs.spec import AverageSpec
from jobs.store import ObjectStore

log = logging.getLogger("jobs")


def run_info(store: ObjectStore, run_key: str) -> dict:
    """The run-sum manifest of a finished run: its snapshots with their English dev scores."""
    ref = layout.run_sum_ref(run_key)
    if not is_committed(store, ref):
        raise AverageError(f"run {run_key} is not finished (no committed run-sum at {ref}); train it first")
    info = read_manifest(store, ref)
    if not info.get("snapshots") or info.get("count") != len(info["snapshots"]):
        raise AverageError(f"run-sum of run {run_key} lists {len(info.get('snapshots') or [])} snapshots but counts {info.get('count')}")
    check_run_sum(store, run_key, info)  # summed from the snapshots the run holds now
    return info


def spec_methods(spec: AverageSpec) -> list[Method]:
    return [get_method(m) for m in spec.methods]


def draw_record(spec: AverageSpec) -> dict:
    """The draw as the job records it (merged into the orchestrator's record, if any)."""
    return {
        "seed": spec.draw_seed,
        "k": len(spec.run_keys),
        "run_keys": list(spec.run_keys),
        "hash": layout.draw_hash(spec.run_keys),
        "methods": list(spec.methods),
    }


def output_refs(spec: AverageSpec) -> dict[str, list[str]]:
    """Method id -> the refs of its outputs, in chain order (known before anything is read)."""
    if spec.mode == RUN_AVERAGES:
        return {m: [layout.run_average_ref(key) for key in spec.run_keys] for m in spec.methods}
    if spec.mode == EXPLICIT:
        return {m: [spec.output_ref] for m in spec.methods}
    h = layout.draw_hash(spec.run_keys)
    return {m: [layout.draw_average_ref(spec.draw_seed, h, m, k) for k in range(1, len(spec.run_keys) + 1)] for m in spec.methods}


def check_draw_methods(methods: Sequence[Method], runs: Sequence[RunInfo]) -> None:
    """Refuse soup-N when N exceeds the snapshots of all K runs (it could never average N); where
    only the first k runs hold fewer than N, soup-N averages those and its manifest's count says so."""
    per_run = [len(run["snapshots"]) for run in runs]
    for method in methods:
        if method.too_few_snapshots(per_run):
            raise AverageError(
                f"{method.id} needs {method.nominal_count} snapshots but the draw's {len(runs)} runs hold only {sum(per_run)}: "
                f"lower N or draw more runs"
            )
    for method in methods:
        short = method.short_prefixes(per_run)
        if short:
            log.warning("%s: the first k runs hold fewer than %d snapshots for k=%s; those averages hold all of them",
                        method.id, method.nominal_count, ",".join(map(str, short)))


def _constituents(selection: Selection) -> list[dict]:
    return [{"ref": s["ref"], "sha256": s["sha256"]} for s in selection.members]


def plan_draw(spec: AverageSpec, runs: Sequence[RunInfo], methods: Sequence[Method],
              chosen: Mapping[str, Mapping[int, Selection]] | None = None) -> list[Output]:
    """Outputs for every method and k of a draw, in chain order (method, then k). `chosen`: the
    selections of methods that need forward passes (Method.select_all), by method id and k."""
    h = layout.draw_hash(spec.run_keys)
    outputs = []
    for method in methods:
        for k in range(1, len(runs) + 1):
            if method.needs_forward_passes:
                if chosen is None or method.id not in chosen:
                    raise AverageError(f"{method.id} picks its members by forward passes: run Method.select_all first")
                selection = chosen[method.id][k]
            else:
                selection = method.select(runs[:k])
            manifest = {
                "kind": "draw-average",
                "method": method.id,
                "k": k,
                "draw_seed": spec.draw_seed,
                "draw_hash": h,
                "run_keys": list(spec.run_keys[:k]),
                "constituents": _constituents(selection),
                "count": len(selection.members),  # with soup-N's top_n: fewer when the first k runs held fewer
                "head_sha256": runs[0].get("head_sha256"),
                "spec": runs[0]["spec"],
                **selection.manifest,
            }
            ref = layout.draw_average_ref(spec.draw_seed, h, method.id, k)
            outputs.append(Output(ref, method.id, list(selection.terms), selection.divisor, manifest))
    return outputs


def plan_run_averages(store: ObjectStore, spec: AverageSpec) -> list[Output]:
    """Each run's CA: its run-sum divided by its snapshot count."""
    outputs = []
    for method in spec_methods(spec):
        for key in spec.run_keys:
            info = run_info(store, key)
            selection = method.select([info])
            manifest = {
                "kind": "run-average",
                "method": method.id,
                "run_key": key,
                "constituents": _constituents(selection),
                "count": info["count"],
                "dev_score": None,
                "head_sha256": info.get("head_sha256"),
                "spec": info["spec"],
            }
            outputs.append(Output(layout.run_average_ref(key), method.id, list(selection.terms), selection.divisor, manifest))
    return outputs


def plan_explicit(store: ObjectStore, spec: AverageSpec) -> list[Output]:
    """The listed models averaged into `output_ref`."""
    (method,) = spec_methods(spec)
    manifests = [dict(read_manifest(store, ref), ref=ref) for ref in spec.refs]
    selection = method.select(manifests)
    manifest = {
        "kind": "average",
        "method": method.id,
        "constituents": _constituents(selection),
        "count": len(selection.members),
        "head_sha256": manifests[0].get("head_sha256"),
        "spec": manifests[0].get("spec"),
    }
    return [Output(spec.output_ref, method.id, list(selection.terms), selection.divisor, manifest)]


def draw_inputs(store: ObjectStore, spec: AverageSpec) -> set[str]:
    """Every model ref a draw's averages may read (for garbage collection); greedy soup may read
    any snapshot of the draw's runs."""
    runs = [run_info(store, key) for key in spec.run_keys]
    refs: set[str] = set()
    for method in spec_methods(spec):
        for k in range(1, len(runs) + 1):
            refs |= method.possible_inputs(runs[:k])
    return refs

