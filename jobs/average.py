"""The average job: uniform averages of snapshots, streamed through the CPU cache.

Run it as `python -m jobs average --spec spec.json`. Three shapes of work (see AverageSpec):
a run's CA (its run-sum divided by its snapshot count), every method for every k = 1..K of a
draw in one pass, and an explicit list of refs.

How it works (and why it is fast and small):
- Inputs are fetched once per job (downloads run concurrently), memory-mapped, and read as
  zero-copy views of the page cache: no input is ever copied into process memory.
- The pass is tensor-major over flat chunks of CHUNK_ELEMENTS elements: for each chunk, every
  output is computed from the inputs' views into a chunk-sized accumulator that stays in the
  CPU cache, then handed to its writer. Memory is a few chunks, whatever N or the model size.
- Outputs of one method form a chain over k: output k is output k-1 plus the new terms (and,
  for soups whose top set changes, minus the dropped ones), so R-CA over k runs adds k
  run-sums once, not k(k+1)/2 times. Chains with subtractions accumulate in float64 (no
  cancellation error); pure sums in float32. Integer buffers are checked equal and copied.
- Validation comes first (committed, sizes, identical tensor names, shapes, dtypes, frozen
  heads, integer buffers); sha256 checks run concurrently in the background (once per machine,
  see jobs.snapshots) and must pass before anything is committed. On any error nothing is
  written to the store.
- Greedy soup (method `greedy`) needs English dev forward passes to pick its members; the
  members' average is then computed by the same streaming pass.
"""
from __future__ import annotations

import json
import queue
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from jobs import layout
from jobs.common import log, progress, setup_torch
from jobs.draws import merge_record, utc_now
from jobs.errors import PermanentError
from jobs.scratch import scratch_dir
from jobs.snapshots import (
    AlreadyCommitted, SnapshotError, Verification, WeightsCache, adopt_committed, check_run_sum, commit_model, is_committed, read_manifest,
)
from jobs.spec import AverageSpec, short_hash
from jobs.store import ObjectStore, open_store, read_json
from jobs.tensorio import DTYPE_BY_NAME, HeaderError, MappedFile, StreamingWriter, TensorInfo

CHUNK_ELEMENTS = 1 << 19  # 2 MB of float32: the running sum and the output buffers stay in L3 while the inputs stream by (15% faster than 4 MB chunks here)
PREFETCH_CHUNKS = 8  # read-ahead requests cover 8 chunks (32 MB per input) at a time
WRITE_BUFFERS = 6  # output chunks queued for the writer threads (bounds memory, keeps disks busy)
OUTPUT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}


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


# ---------------------------------------------------------------------------------------------
# Planning: which inputs make which outputs
# ---------------------------------------------------------------------------------------------


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


def last_snapshot(info: dict) -> dict:
    return max(info["snapshots"], key=lambda s: s["step"])


def best_snapshot(info: dict) -> dict:
    """The snapshot with the best English dev score; the earliest wins a tie."""
    snaps = sorted(info["snapshots"], key=lambda s: s["step"])
    return max(snaps, key=lambda s: s["dev_score"])  # max keeps the first of equal scores


def ranked_snapshots(infos: list[dict]) -> list[dict]:
    """Snapshots of these runs by English dev score, best first; ties: draw order, then step."""
    ordered = [s for i in infos for s in sorted(i["snapshots"], key=lambda s: s["step"])]
    return sorted(ordered, key=lambda s: -s["dev_score"])  # stable


def draw_record(spec: AverageSpec) -> dict:
    return {
        "seed": spec.draw_seed,
        "k": len(spec.run_keys),
        "run_keys": list(spec.run_keys),
        "hash": short_hash(list(spec.run_keys), 8),
        "methods": list(spec.methods),
    }


def check_soups(methods, infos: list[dict]) -> None:
    """Refuse soup-N when N exceeds the snapshots of all K runs (it could never average N); where
    only the first k runs hold fewer than N, soup-N averages those and its manifest's count says so."""
    total = sum(len(i["snapshots"]) for i in infos)
    for method in methods:
        if method.startswith("soup-") and int(method.split("-", 1)[1]) > total:
            raise AverageError(
                f"{method} needs {method.split('-', 1)[1]} snapshots but the draw's {len(infos)} runs hold only {total}: "
                f"lower N or draw more runs"
            )
    for method in methods:
        if method.startswith("soup-"):
            n = int(method.split("-", 1)[1])
            short = [k for k in range(1, len(infos) + 1) if sum(len(i["snapshots"]) for i in infos[:k]) < n]
            if short:
                log.warning("%s: the first k runs hold fewer than %d snapshots for k=%s; those averages hold all of them", method, n, ",".join(map(str, short)))


def plan_draw(store: ObjectStore, spec: AverageSpec, greedy: dict[int, dict] | None = None, infos: list[dict] | None = None) -> tuple[list[Output], dict]:
    """Outputs for every method and k of a draw, in chain order (method, then k)."""
    infos = infos or [run_info(store, key) for key in spec.run_keys]
    draw = draw_record(spec)
    check_soups(spec.methods, infos)
    outputs = []
    for method in spec.methods:
        for k in range(1, len(infos) + 1):
            prefix = infos[:k]
            extra: dict = {}
            if method == "r-ca":
                terms = [(layout.run_sum_ref(i["run_key"]), 1.0) for i in prefix]
                divisor = float(sum(i["count"] for i in prefix))
                members = [s for i in prefix for s in i["snapshots"]]
            elif method in ("r-last", "r-dev"):
                pick = last_snapshot if method == "r-last" else best_snapshot
                members = [pick(i) for i in prefix]
                terms = [(s["ref"], 1.0) for s in members]
                divisor = float(k)
            elif method == "greedy":
                if greedy is None:
                    raise AverageError("greedy soup needs its selection pass first (plan_draw(..., greedy=...))")
                chosen = greedy[k]
                by_ref = {s["ref"]: s for i in prefix for s in i["snapshots"]}
                members = [by_ref[r] for r in chosen["members"]]
                terms = [(s["ref"], 1.0) for s in members]
                divisor = float(len(members))
                extra = {"dev_score": chosen["dev_score"], "dev_metric": chosen["dev_metric"], "greedy": chosen["trace"]}
            else:  # soup-N: the N best snapshots by English dev among the first k runs
                n = int(method.split("-", 1)[1])
                members = ranked_snapshots(prefix)[:n]
                terms = [(s["ref"], 1.0) for s in members]
                divisor = float(len(members))
                extra = {"top_n": n}  # with "count" < top_n: the first k runs held fewer than N snapshots
            ref = layout.draw_average_ref(spec.draw_seed, draw["hash"], method, k)
            manifest = {
                "kind": "draw-average",
                "method": method,
                "k": k,
                "draw_seed": spec.draw_seed,
                "draw_hash": draw["hash"],
                "run_keys": list(spec.run_keys[:k]),
                "constituents": [{"ref": s["ref"], "sha256": s["sha256"]} for s in members],
                "count": len(members),
                "head_sha256": infos[0].get("head_sha256"),
                "spec": infos[0]["spec"],
                **extra,
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


def draw_inputs(store: ObjectStore, spec: AverageSpec) -> set[str]:
    """Every model ref a draw's averages read (for garbage collection): greedy may read any
    snapshot of the draw's runs."""
    infos = [run_info(store, key) for key in spec.run_keys]
    refs: set[str] = set()
    if "greedy" in spec.methods:
        refs |= {s["ref"] for i in infos for s in i["snapshots"]}
    methods = tuple(m for m in spec.methods if m != "greedy")
    if methods:
        import dataclasses

        outputs, _ = plan_draw(store, dataclasses.replace(spec, methods=methods), infos=infos)
        refs |= {r for o in outputs for r, _ in o.terms}
    return refs


# ---------------------------------------------------------------------------------------------
# Greedy soup: members chosen by English dev forward passes
# ---------------------------------------------------------------------------------------------


def greedy_selection(store: ObjectStore, spec: AverageSpec, infos: list[dict], cache: WeightsCache) -> dict[int, dict]:
    """Wortsman et al.'s greedy soup over the snapshots of the first k runs, for every k.

    Candidates are ranked by their English dev score (from the train job); the best starts the
    soup; each next candidate joins if the soup's English dev score does not drop. Soup scores
    are memoised by member set, so the k + 1 pass replays the k pass for free until a snapshot
    of run k + 1 comes up."""
    from jobs.common import build_model
    from jobs.models import load_tokenizer
    from jobs.spec import DatasetRef, from_mapping
    from jobs.tasks import get_task

    run_spec = infos[0]["spec"]
    from jobs.spec import task_options

    task = get_task(spec.task, **task_options(run_spec, spec.task))
    tokenizer = load_tokenizer(run_spec["base_model"])
    dev = from_mapping(DatasetRef, run_spec["dev_data"], "dev_data")
    examples = task.load(dev)
    features = task.encode(tokenizer, examples, run_spec.get("max_length", 128))
    batch_size = run_spec.get("eval_batch_size", 64)
    model = build_model(task, run_spec["base_model"])
    model.eval()

    snapshots = [s for i in infos for s in i["snapshots"]]
    manifests = {s["ref"]: read_manifest(store, s["ref"]) for s in snapshots}
    paths, verification = cache.fetch(manifests.items())
    verification.wait()
    files = {ref: MappedFile(p) for ref, p in paths.items()}
    memo: dict[tuple[str, ...], float] = {}
    evaluated = 0

    def soup_state(members: list[str]) -> dict[str, torch.Tensor]:
        first = files[members[0]]
        state = {}
        for name, info in first.infos.items():
            if not info.is_float:
                state[name] = first.tensor(name).clone()
                continue
            acc = torch.zeros(info.shape, dtype=torch.float64)
            for ref in members:
                acc.add_(files[ref].tensor(name))
            state[name] = (acc / len(members)).to(DTYPE_BY_NAME[info.dtype])
        return state

    def score(members: list[str]) -> float:
        nonlocal evaluated
        key = tuple(sorted(members))
        if key not in memo:
            model.load_state_dict(soup_state(members), strict=False)
            memo[key] = float(task.score(model, tokenizer, examples, features, batch_size))
            evaluated += 1
        return memo[key]

    selection = {}
    try:
        for k in range(1, len(infos) + 1):
            ranked = ranked_snapshots(infos[:k])
            soup = [ranked[0]["ref"]]
            best = float(ranked[0]["dev_score"])  # one snapshot: the train job's score, no forward pass
            trace = [{"ref": ranked[0]["ref"], "dev_score": best, "added": True}]
            for cand in ranked[1:]:
                s = score(soup + [cand["ref"]])
                added = s >= best
                trace.append({"ref": cand["ref"], "dev_score": s, "added": added})
                if added:
                    soup.append(cand["ref"])
                    best = s
            selection[k] = {"members": soup, "dev_score": best, "dev_metric": task.metric, "trace": trace}
            log.info("greedy soup k=%d: %d of %d snapshots, English dev %.4f", k, len(soup), len(ranked), best)
    finally:
        for f in files.values():
            f.close()
    log.info("greedy soup: %d forward passes over English dev", evaluated)
    return selection


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def validate_inputs(files: dict[str, MappedFile], manifests: dict[str, dict]) -> dict[str, TensorInfo]:
    """Same tensors, shapes, dtypes, frozen heads and integer buffers everywhere, else an
    AverageError naming the first mismatching tensor and the two models."""
    refs = list(files)
    first = refs[0]
    infos = files[first].infos
    heads = {ref: manifests[ref].get("head_sha256") for ref in refs}
    sums = {ref for ref in refs if manifests[ref].get("kind") == "run-sum"}
    for ref in refs[1:]:
        if heads[ref] != heads[first]:
            raise AverageError(
                f"frozen heads differ: {first} has head {str(heads[first])[:12]}, {ref} has {str(heads[ref])[:12]}; "
                f"average only runs trained from the same head"
            )
        other = files[ref].infos
        for name in sorted(set(infos) | set(other)):
            if name not in other:
                raise AverageError(f"tensor {name} is in {first} but not in {ref}")
            if name not in infos:
                raise AverageError(f"tensor {name} is in {ref} but not in {first}")
            a, b = infos[name], other[name]
            if a.shape != b.shape:
                raise AverageError(f"tensor {name} has shape {a.shape} in {first} but {b.shape} in {ref}")
            # a run-sum is fp32 while snapshots may be bf16: against a run-sum compare float-ness
            loose = first in sums or ref in sums
            if a.is_float != b.is_float or ((not loose or not a.is_float) and a.dtype != b.dtype):
                raise AverageError(f"tensor {name} has dtype {a.dtype} in {first} but {b.dtype} in {ref}")
    for name in sorted(n for n, i in infos.items() if not i.is_float):
        reference = files[first].flat(name)
        for ref in refs[1:]:
            if not torch.equal(files[ref].flat(name), reference):
                raise AverageError(f"integer buffer {name} differs between {first} and {ref}; it cannot be averaged")
    return infos


# ---------------------------------------------------------------------------------------------
# The streaming pass
# ---------------------------------------------------------------------------------------------


@dataclass
class _Step:
    output: Output
    reset: bool
    ops: list[tuple[str, float]]  # (input ref, weight to add): negative weights remove a term
    write: bool


@dataclass
class _Chain:
    steps: list[_Step]
    dtype: torch.dtype


def _chains(outputs: list[Output], write_refs: set[str]) -> list[_Chain]:
    """Group outputs by method (in order) and turn each group into incremental steps."""
    groups: dict[str, list[Output]] = {}
    for o in outputs:
        groups.setdefault(o.method, []).append(o)
    chains = []
    for group in groups.values():
        steps: list[_Step] = []
        current: dict[str, float] = {}
        for o in group:
            target: dict[str, float] = {}
            for ref, w in o.terms:
                target[ref] = target.get(ref, 0.0) + w
            delta = [(r, w - current.get(r, 0.0)) for r, w in target.items() if w != current.get(r, 0.0)]
            delta += [(r, -w) for r, w in current.items() if r not in target]
            if not current or len(delta) >= len(target):
                steps.append(_Step(o, True, list(target.items()), o.ref in write_refs))
            else:
                steps.append(_Step(o, False, delta, o.ref in write_refs))
            current = target
        # trailing outputs that are not written need not be computed
        while steps and not steps[-1].write:
            steps.pop()
        if steps:
            subtracts = any(w < 0 for s in steps for _, w in s.ops)
            chains.append(_Chain(steps, torch.float64 if subtracts else torch.float32))
    return chains


class _BufferPool:
    """A few chunk-sized output buffers recycled by the writer threads: bounded, reused memory."""

    def __init__(self, count: int, elements: int, dtype: torch.dtype):
        self._free: queue.Queue = queue.Queue()
        self._mine: set[int] = set()
        for _ in range(count):
            buf = torch.empty(elements, dtype=dtype)
            self._mine.add(buf.data_ptr())
            self._free.put(buf)

    def get(self) -> torch.Tensor:
        return self._free.get()

    def release(self, tensor: torch.Tensor) -> None:
        base = tensor._base if tensor._base is not None else tensor
        if base.data_ptr() in self._mine:  # not the zero-copy integer views also written
            self._free.put(base)


def _prefetch_plan(infos: dict[str, TensorInfo], chunk: int) -> dict[tuple[str, int], list[tuple[str, int, int]]]:
    """Chunk position -> read-ahead requests (tensor, start, stop) to make when the pass gets there.

    The chunks are grouped in windows of PREFETCH_CHUNKS; at the first chunk of a window the pass
    asks for the whole next window (the very first chunk also for its own). One big request per
    window rather than one per chunk: on page-cached inputs every request is pure overhead (the
    kernel walks the cached pages), on cold inputs a window ahead keeps the disk as busy."""
    positions = [(n, start) for n in sorted(infos) if infos[n].is_float for start in range(0, infos[n].numel, chunk)]

    def requests(window: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
        merged: list[tuple[str, int, int]] = []
        for name, start in window:  # consecutive chunks of one tensor become one range
            stop = min(infos[name].numel, start + chunk)
            if merged and merged[-1][0] == name and merged[-1][2] == start:
                merged[-1] = (name, merged[-1][1], stop)
            else:
                merged.append((name, start, stop))
        return merged

    plan = {}
    for i in range(0, len(positions), PREFETCH_CHUNKS):
        ahead = requests(positions[i + PREFETCH_CHUNKS : i + 2 * PREFETCH_CHUNKS])
        if i == 0:
            ahead = requests(positions[:PREFETCH_CHUNKS]) + ahead
        if ahead:
            plan[positions[i]] = ahead
    return plan


def stream_average(
    files: dict[str, MappedFile],
    infos: dict[str, TensorInfo],
    outputs: list[Output],
    out_paths: dict[str, Path],
    out_dtype: str = "fp32",
    write_refs: set[str] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict[str, tuple[str, int]]:
    """Compute outputs in one tensor-major pass over the mapped inputs; write each to its path.

    Returns {output ref: (sha256, size)} for the outputs written."""
    threads = torch.get_num_threads()
    # one compute thread: the adds are memory-bound, and OpenMP threads slow down badly when the
    # cores are shared (2 threads: 8x slower than 1 on a loaded 2-core node); the writer threads
    # hash and write on the other cores
    torch.set_num_threads(1)
    try:
        return _stream(files, infos, outputs, out_paths, out_dtype, write_refs, chunk_elements)
    finally:
        torch.set_num_threads(threads)


def _stream(files, infos, outputs, out_paths, out_dtype, write_refs, chunk_elements) -> dict[str, tuple[str, int]]:
    write_refs = set(o.ref for o in outputs) if write_refs is None else write_refs
    chains = _chains(outputs, write_refs)
    written = [s.output for c in chains for s in c.steps if s.write]
    float_out = DTYPE_NAMES[out_dtype]
    out_infos = {n: TensorInfo(float_out, i.shape) if i.is_float else i for n, i in infos.items()}
    largest = max([i.numel for i in infos.values() if i.is_float] or [1])
    chunk = max(1, min(chunk_elements, largest))
    pool = _BufferPool(WRITE_BUFFERS, chunk, OUTPUT_DTYPES[out_dtype])
    accumulators = {dt: torch.empty(chunk, dtype=dt) for dt in {c.dtype for c in chains}}
    slots = threading.Semaphore(4 * max(1, len(written)) + WRITE_BUFFERS)
    writers: dict[str, StreamingWriter] = {}
    try:
        for o in written:
            writers[o.ref] = StreamingWriter(out_paths[o.ref], out_infos, {"method": o.method}, slots, pool.release)
        used = sorted({r for c in chains for s in c.steps for r, _ in s.ops})
        first = next(iter(files))
        read_ahead = _prefetch_plan(infos, chunk)
        for name in progress(sorted(infos), desc="average", unit="tensor"):
            info = infos[name]
            if not info.is_float or info.numel == 0:
                value = files[first].flat(name)  # integer buffers are equal everywhere: copy one
                for o in written:
                    writers[o.ref].write(name, value)
                continue
            for start in range(0, info.numel, chunk):
                stop = min(info.numel, start + chunk)
                ahead = read_ahead.get((name, start))
                if ahead:  # cold files: the kernel reads the next window meanwhile
                    for ref in used:
                        files[ref].prefetch(ahead)
                for c in chains:
                    acc = accumulators[c.dtype][: stop - start]
                    for step in c.steps:
                        ops = step.ops
                        if step.reset:  # the first terms start the sum: no zeroing or copying pass
                            (r0, w0), rest = ops[0], ops[1:]
                            x0 = files[r0].flat(name, start, stop)
                            if rest and w0 == 1.0:
                                (r1, w1), ops = rest[0], rest[1:]
                                torch.add(x0, files[r1].flat(name, start, stop), alpha=w1, out=acc)
                            elif w0 == 1.0:
                                acc.copy_(x0)
                                ops = rest
                            else:
                                torch.mul(x0, w0, out=acc)
                                ops = rest
                        for ref, weight in ops:
                            x = files[ref].flat(name, start, stop)
                            if weight == 1.0:
                                acc.add_(x)
                            else:
                                acc.add_(x, alpha=weight)
                        if step.write:
                            buf = pool.get()[: stop - start]
                            torch.div(acc, step.output.divisor, out=buf)
                            writers[step.output.ref].write(name, buf)
        result = {}
        for ref, w in writers.items():
            result[ref] = (w.close(), w.size)
        return result
    except BaseException:
        for w in writers.values():
            w.abort()
        raise


def _open(paths: dict[str, Path]) -> dict[str, MappedFile]:
    files = {}
    try:
        for ref, p in paths.items():
            try:
                files[ref] = MappedFile(p)
            except HeaderError as e:
                raise SnapshotError(f"model {ref}: {e}") from None
    except BaseException:
        for f in files.values():
            f.close()
        raise
    return files


def execute(
    store: ObjectStore,
    outputs: list[Output],
    scratch: Path,
    out_dtype: str = "fp32",
    commit: bool = True,
    write_refs: set[str] | None = None,
    manifests: dict[str, dict] | None = None,
    cache: WeightsCache | None = None,
    before_commit=None,
    background_verify: bool = True,
    evaluator=None,
) -> list[dict]:
    """Fetch, validate, compute every output in one streaming pass, then commit each.

    `write_refs` limits which outputs are written (the others are computed only as steps of
    a chain); `before_commit()` runs once every input is verified and every output computed.
    With an `evaluator` (jobs.evaluate.Evaluator) each output is scored from its local file,
    then committed (unless `commit` is false), then its results are written: results never
    exist for weights that failed to commit. Returns the committed manifests."""
    cache = cache or WeightsCache(store, scratch / "cache")
    write_refs = set(o.ref for o in outputs) if write_refs is None else set(write_refs)
    needed = list(dict.fromkeys(ref for o in outputs for ref, _ in o.terms))
    manifests = dict(manifests or {})
    for ref in needed:
        if ref not in manifests:
            manifests[ref] = read_manifest(store, ref)
    paths, verification = cache.fetch([(r, manifests[r]) for r in needed], background=background_verify)
    files = _open(paths)
    scratch.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix="out-", dir=scratch))
    try:
        try:
            infos = validate_inputs(files, manifests)
        except AverageError:
            verification.wait()  # a corrupted file explains a mismatch better than the mismatch
            raise
        out_paths = {o.ref: out_dir / f"{i:04d}.safetensors" for i, o in enumerate(outputs)}
        hashes = stream_average(files, infos, outputs, out_paths, out_dtype, write_refs)
        verification.wait()  # every input verified before anything is committed
    finally:
        for f in files.values():
            f.close()
    try:
        if before_commit is not None:
            before_commit()
        committed = []
        by_ref = {o.ref: o for o in outputs}
        refs = list(hashes) if commit or evaluator is not None else []
        for ref in progress(refs, desc="evaluate + commit" if evaluator is not None else "commit", unit="model"):
            o = by_ref[ref]
            manifest = dict(o.manifest, dtype=out_dtype)
            rows = evaluator.score_file(ref, out_paths[ref], dict(manifest, ref=ref)) if evaluator is not None else None
            if commit:
                try:
                    committed.append(commit_model(store, ref, out_paths[ref], manifest, sha256=hashes[ref][0], move=True))
                except AlreadyCommitted as lost:  # another job committed other bytes first: keep its model if it checks out
                    committed.append(adopt_committed(store, lost))
            out_paths[ref].unlink(missing_ok=True)
            if rows is not None:
                evaluator.write(ref, rows)
        return committed
    finally:
        if commit or evaluator is not None:
            shutil.rmtree(out_dir, ignore_errors=True)


def _done(store: ObjectStore, ref: str) -> bool:
    """An average is done once committed, or once evaluated (gc may then have deleted it)."""
    return is_committed(store, ref) or store.exists(layout.results_key(ref))


def run_average(spec: AverageSpec, scratch: Path | None = None, store: ObjectStore | None = None) -> list[str]:
    setup_torch(spec.num_threads)
    store = store or open_store(spec.experiment_uri)
    if scratch is None:  # removed however the job ends; a dead job's is swept by the next one
        with scratch_dir("average") as own:
            return _run_average(spec, own, store)
    return _run_average(spec, Path(scratch), store)


def _run_average(spec: AverageSpec, scratch: Path, store: ObjectStore) -> list[str]:
    cache = WeightsCache(store, scratch / "cache")
    draw = None
    manifests: dict[str, dict] = {}
    if spec.methods == ("uniform",):
        outputs = plan_uniform(store, spec)
    elif spec.methods == ("ca",):
        outputs = plan_run_averages(store, spec)
    else:
        infos = [run_info(store, key) for key in spec.run_keys]
        manifests = {layout.run_sum_ref(i["run_key"]): i for i in infos}
        draw = draw_record(spec)
        greedy = None
        if "greedy" in spec.methods:
            greedy_refs = [layout.draw_average_ref(spec.draw_seed, draw["hash"], "greedy", k) for k in range(1, len(infos) + 1)]
            if not all(_done(store, r) for r in greedy_refs):
                greedy = greedy_selection(store, spec, infos, cache)
            else:  # the greedy outputs exist: plan them as done
                greedy = {k: {"members": [ranked_snapshots(infos[:k])[0]["ref"]], "dev_score": None, "dev_metric": None, "trace": []} for k in range(1, len(infos) + 1)}
        outputs, draw = plan_draw(store, spec, greedy, infos)

    def write_draw_record() -> None:
        if draw is not None:  # merged into the record the orchestrator wrote (finished runs, time), if any
            key = layout.draw_key(spec.draw_seed, draw["hash"])
            existing = read_json(store, key, "draw record") if store.exists(key) else None
            merged = merge_record(existing, draw)
            merged.setdefault("recorded_at", utc_now())  # a job launched without the orchestrator: when, at least
            record = json.dumps(merged, indent=1).encode()
            copy = f"averages/s{spec.draw_seed}-{draw['hash']}/draw.json"
            if merged != existing:
                store.put_bytes(key, record)
            if merged != existing or not store.exists(copy):
                store.put_bytes(copy, record)

    evaluator = None
    if spec.evaluate is not None:  # fused: done means evaluated; stored but unscored averages are scored as they are
        todo = {o.ref for o in outputs if not store.exists(layout.results_key(o.ref))}
        stored = sorted(r for r in todo if is_committed(store, r))
        todo -= set(stored)
        if stored or todo:
            from jobs.evaluate import Evaluator

            evaluator = Evaluator(store, spec.experiment_uri, spec.task, spec.evaluate, spec.num_threads)
        for ref in stored:
            evaluator.evaluate_stored(ref, cache)
    else:
        todo = {o.ref for o in outputs if not _done(store, o.ref)}  # a retry redoes only what is missing
    if not todo:
        log.info("all %d averaged models exist", len(outputs))
        if draw is not None:
            write_draw_record()
        return []
    pending_methods = {o.method for o in outputs if o.ref in todo}  # whole chains: prefix sums need them
    outputs = [o for o in outputs if o.method in pending_methods]
    committed = execute(
        store, outputs, scratch, spec.output_dtype, commit=spec.keep_averages, write_refs=todo, manifests=manifests, cache=cache,
        before_commit=write_draw_record, evaluator=evaluator,
    )
    if spec.keep_averages:
        log.info("committed %d averaged models", len(committed))
        return [m["ref"] for m in committed]
    log.info("evaluated %d averaged models (weights not kept)", len(todo))
    return sorted(todo)
