"""Streaming safetensors I/O: read inputs tensor by tensor, write outputs tensor by tensor.

The writer knows every tensor's name, dtype and shape up front (they come from the inputs), so
it writes the header first and then each tensor's bytes as they are computed: an averaged model
never has to sit in memory whole.
"""
from __future__ import annotations

import json
import os
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from typing import BinaryIO

import torch
from safetensors import safe_open

DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
DTYPE_BY_NAME = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=DTYPE_BY_NAME[self.dtype]).element_size()

    @property
    def is_float(self) -> bool:
        return self.dtype in ("F64", "F32", "F16", "BF16")


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict]:
    """Tensor infos and metadata of a safetensors file, reading only its header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", {}) or {}
    return {k: TensorInfo(v["dtype"], tuple(v["shape"])) for k, v in header.items()}, meta


class StreamingWriter:
    """Writes a safetensors file whose layout is fixed at construction."""

    def __init__(self, path: str | os.PathLike, infos: dict[str, TensorInfo], metadata: dict | None = None):
        self.path = path
        self.names = sorted(infos)
        header: dict = {}
        offset = 0
        for name in self.names:
            info = infos[name]
            header[name] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [offset, offset + info.nbytes]}
            offset += info.nbytes
        if metadata:
            header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._infos = infos
        self._file: BinaryIO = open(path, "wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0
        self._written = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append `tensor` (a whole tensor or its next rows) to tensor `name`, in layout order."""
        if self._next >= len(self.names) or self.names[self._next] != name:
            expected = self.names[self._next] if self._next < len(self.names) else "nothing"
            raise ValueError(f"tensors must be written in order: expected {expected}, got {name}")
        info = self._infos[name]
        data = tensor.to(DTYPE_BY_NAME[info.dtype]).contiguous().reshape(-1).view(torch.uint8).numpy()
        self._file.write(memoryview(data))
        self._written += data.nbytes
        if self._written > info.nbytes:
            raise ValueError(f"{name}: more bytes written than its shape {info.shape} holds")
        if self._written == info.nbytes:
            self._next += 1
            self._written = 0

    def close(self) -> None:
        self._file.close()
        if self._next != len(self.names):
            raise ValueError(f"{self.path}: only {self._next} of {len(self.names)} tensors written")


class Readers:
    """Opens many safetensors files for lazy, memory-mapped, tensor-by-tensor reads."""

    def __init__(self, paths: dict[str, str | os.PathLike]):
        self._stack = ExitStack()
        self._handles = {key: self._stack.enter_context(safe_open(str(p), framework="pt")) for key, p in paths.items()}

    def get(self, key: str, name: str) -> torch.Tensor:
        return self._handles[key].get_tensor(name)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
