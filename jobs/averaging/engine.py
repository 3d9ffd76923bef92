"""The streaming engine: every averaged model of a job in one tensor-major pass over its inputs.

An `Output` is one averaged model: the sum of its `terms` (input ref, weight) divided by its
`divisor`; uniform averages have weight 1 everywhere, weighted ones (sum w_i x_i / sum w_i) other
weights. `stream_average` computes a list of outputs from memory-mapped inputs (jobs.tensorio):

- The pass is tensor-major over flat chunks of CHUNK_ELEMENTS elements: for each chunk, every
  output is computed from the inputs' views into a chunk-sized accumulator that stays in the
  CPU cache, then handed to its writer. Memory is a few chunks, whatever N or the model size.
- Outputs of one method form a chain over k: output k is output k-1 plus the new terms (and,
  for soups whose top set changes, minus the dropped ones), so R-CA over k runs adds k
  run-sums once, not k(k+1)/2 times. Chains with subtractions accumulate in float64 (no
  cancellation error); pure sums in float32. Integer buffers are equal (jobs.averaging.inputs
  checks) and copied.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from jobs.common import progress
from jobs.tensorio import MappedFile, StreamingWriter, TensorInfo

CHUNK_ELEMENTS = 1 << 19  # 2 MB of float32: the running sum and the output buffers stay in L3 while the inputs stream by (15% faster than 4 MB chunks here)
PREFETCH_CHUNKS = 8  # read-ahead requests cover 8 chunks (32 MB per input) at a time
WRITE_BUFFERS = 6  # output chunks queued for the writer threads (bounds memory, keeps disks busy)
OUTPUT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}


@dataclass
class Output:
    """One averaged model: sum of `terms` (input ref, weight) divided by `divisor`. Outputs of
    one `method` form a chain (in list order): each is computed from the one before it."""

    ref: str
    method: str
    terms: list[tuple[str, float]]
    divisor: float
    manifest: dict = field(default_factory=dict)


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
    on_tensor: Callable[[int], None] | None = None,
) -> dict[str, tuple[str, int]]:
    """Compute outputs in one tensor-major pass over the mapped inputs; write each to its path.

    `on_tensor(bytes)` is called after each tensor with the input bytes the pass has read so far
    (for progress lines). Returns {output ref: (sha256, size)} for the outputs written."""
    threads = torch.get_num_threads()
    # one compute thread: the adds are memory-bound, and OpenMP threads slow down badly when the
    # cores are shared (2 threads: 8x slower than 1 on a loaded 2-core node); the writer threads
    # hash and write on the other cores
    torch.set_num_threads(1)
    try:
        return _stream(files, infos, outputs, out_paths, out_dtype, write_refs, chunk_elements, on_tensor)
    finally:
        torch.set_num_threads(threads)


def _stream(files, infos, outputs, out_paths, out_dtype, write_refs, chunk_elements, on_tensor) -> dict[str, tuple[str, int]]:
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
        bytes_read = 0
        for name in progress(sorted(infos), desc="average", unit="tensor"):
            info = infos[name]
            if on_tensor is not None:
                on_tensor(bytes_read)
                bytes_read += sum(files[ref].infos[name].nbytes for ref in used)
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
        if on_tensor is not None:
            on_tensor(bytes_read)
        result = {}
        for ref, w in writers.items():
            result[ref] = (w.close(), w.size)
        return result
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
