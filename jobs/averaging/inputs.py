"""The average job's inputs: opened as memory maps and checked to be averageable together.

Same tensor names, shapes and dtypes everywhere (a run-sum is fp32 while snapshots may be bf16:
against a run-sum only float-ness is compared), the same frozen head, equal integer buffers.
Each mismatch is one AverageError naming the tensor and the two models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from jobs.averaging.errors import AverageError
from jobs.snapshots import SnapshotError
from jobs.tensorio import HeaderError, MappedFile, TensorInfo


def open_inputs(paths: dict[str, Path], ready: dict[str, Callable[[int], int]] | None = None) -> dict[str, MappedFile]:
    """Memory-map every input (ref -> local file); a bad header is a SnapshotError naming the model.
    `ready` (ref -> wait for bytes) for files still downloading (WeightsCache.stream)."""
    files = {}
    try:
        for ref, p in paths.items():
            try:
                files[ref] = MappedFile(p, (ready or {}).get(ref))
            except HeaderError as e:
                raise SnapshotError(f"model {ref}: {e}") from None
    except BaseException:
        for f in files.values():
            f.close()
        raise
    return files


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
