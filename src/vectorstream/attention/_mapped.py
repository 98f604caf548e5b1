"""Stored tensors read through memory maps, and the int8 key sketch kept beside them.

A ``MappedFile`` views a safetensors file's tensors without reading them: only the pages a decode
step touches become resident, and ``release`` hands the pages of named tensors back to the kernel
(they stay in the page cache, so the next step reads them again cheaply, but they no longer count
against the process). A context's layers are released one by one as decoding passes them, so a
long context's resident share stays about one layer's rows.

``sketch.safetensors`` (``codes.<layer>`` int8 (H, n, d), ``scales.<layer>`` float32 (H, n)) is the
int8 copy of the keys the compiled scan scores (``_stream_scan``); it is written with the context,
or built once from the stored keys for a context written before it existed.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from ..errors import StoreError
from ._stream_scan import KeySketch, quantize_keys

__all__ = ["MappedFile", "SketchReader", "load_sketches", "write_sketch"]

SKETCH_FILE = "sketch.safetensors"

# safetensors dtype → (numpy dtype of the stored bytes, torch dtype to view them as, if another).
_NUMPY_DTYPES: dict[str, tuple[str, torch.dtype | None]] = {
    "F32": ("float32", None),
    "F16": ("float16", None),
    "BF16": ("uint16", torch.bfloat16),
    "F64": ("float64", None),
    "I8": ("int8", None),
}
_PAGE = mmap.PAGESIZE


class MappedFile:
    """The tensors of one safetensors file as views of a private memory map."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            self.header = json.loads(f.read(size))
            # Private (copy on write): the tensors are writable for torch, the file never changes.
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        self._fd: int | None = None
        self.base = 8 + size
        self.path = path
        # Decoding reads scattered rows: without this the kernel reads ahead and maps the pages
        # around each one, and most of the file becomes resident.
        self.map.madvise(mmap.MADV_RANDOM)

    def array(self, name: str) -> np.ndarray:
        """The stored array ``name`` (a view of the map: nothing is read yet)."""
        info = self.header.get(name)
        if info is None:
            raise StoreError(f"{self.path}: no tensor {name!r}")
        kind = _NUMPY_DTYPES.get(info["dtype"])
        if kind is None:
            raise StoreError(f"{self.path}: cannot map {name} of dtype {info['dtype']}")
        start, end = info["data_offsets"]
        count = (end - start) // np.dtype(kind[0]).itemsize
        arr = np.frombuffer(self.map, dtype=kind[0], count=count, offset=self.base + start)
        return arr.reshape(info["shape"])

    def tensor(self, name: str, length: int) -> torch.Tensor:
        """``name`` as a torch view, cut to ``length`` tokens (dim 1)."""
        tensor = torch.from_numpy(self.array(name))
        kind = _NUMPY_DTYPES[self.header[name]["dtype"]]
        if kind[1] is not None:
            tensor = tensor.view(kind[1])
        return tensor[:, :length]

    def release(self, names: Sequence[str] = ()) -> None:
        """Drop the resident pages of ``names`` (every page of the map when none are named)."""
        if not names:
            self.map.madvise(mmap.MADV_DONTNEED)
            return
        for name in names:
            start, end = self.header[name]["data_offsets"]
            a = (self.base + start) // _PAGE * _PAGE
            b = self.base + end
            self.map.madvise(mmap.MADV_DONTNEED, a, b - a)

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray:
        """Copy ``name`` into ``out`` (same size) with one read, mapping none of its pages.

        A tensor read whole at every step is cheaper copied from the page cache into one reused
        buffer than mapped page by page and given back again.
        """
        start, end = self.header[name]["data_offsets"]
        view = out.reshape(-1).view(np.uint8).data
        if view.nbytes != end - start:
            raise StoreError(f"{self.path}: {name} is {end - start} bytes, not {view.nbytes}")
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            done = 0
            while done < view.nbytes:
                got = os.preadv(self._fd, [view[done:]], self.base + start + done)
                if got <= 0:
                    raise StoreError(f"{self.path}: {name} ends early")
                done += got
        except OSError as exc:
            raise StoreError(f"cannot read {name} from {self.path}: {exc}") from exc
        return out

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # type: ignore[arg-type]

    def releaser(self, names: Sequence[str] = ()) -> Callable[[], None]:
        return lambda: self.release(tuple(names))


def write_sketch(folder: Path, keys: Sequence[torch.Tensor | np.ndarray]) -> None:
    """Write ``folder/sketch.safetensors`` from each layer's keys (H, n, d), atomically."""
    arrays: dict[str, np.ndarray] = {}
    for layer, k in enumerate(keys):
        data = k.detach().float().cpu().numpy() if isinstance(k, torch.Tensor) else k
        codes, scales = quantize_keys(data)
        arrays[f"codes.{layer}"] = codes
        arrays[f"scales.{layer}"] = scales
    fd, tmp = tempfile.mkstemp(prefix=".sketch-", dir=folder)
    os.close(fd)
    try:
        save_file(arrays, tmp)
        os.replace(tmp, folder / SKETCH_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SketchReader:
    """Reads one layer's sketch at a time into two buffers shared by every layer of a context.

    With the context's pages given back after each layer, a step would otherwise map every
    sketch page again (a quarter of the keys' bytes) and unmap it after; one read per tensor
    into a buffer costs a copy from the page cache instead, and keeps one layer's sketch resident.
    """

    def __init__(self, mapped: MappedFile) -> None:
        self.mapped = mapped
        self._codes: np.ndarray | None = None
        self._scales: np.ndarray | None = None

    def read(self, layer: int) -> KeySketch:
        codes_shape = tuple(self.mapped.header[f"codes.{layer}"]["shape"])
        scales_shape = tuple(self.mapped.header[f"scales.{layer}"]["shape"])
        if self._codes is None or self._codes.shape != codes_shape:
            self._codes = np.empty(codes_shape, dtype=np.int8)
        if self._scales is None or self._scales.shape != scales_shape:
            self._scales = np.empty(scales_shape, dtype=np.float32)
        self.mapped.read_into(f"codes.{layer}", self._codes)
        self.mapped.read_into(f"scales.{layer}", self._scales)
        return KeySketch(self._codes, self._scales)


def load_sketches(
    folder: Path, kv: MappedFile, n_layers: int
) -> tuple[MappedFile, list[KeySketch]]:
    """Each layer's int8 sketch, memory-mapped; built from the stored keys once if missing."""
    path = folder / SKETCH_FILE
    if not path.exists():
        # A context stored before sketches existed: build it layer by layer from the map.
        keys = []
        for layer in range(n_layers):
            keys.append(np.array(kv.array(f"keys.{layer}"), dtype=np.float32))
            kv.release([f"keys.{layer}"])
        try:
            write_sketch(folder, keys)
        except OSError as exc:
            raise StoreError(f"cannot write the key sketch of {folder}: {exc}") from exc
        del keys
    mapped = MappedFile(path)
    sketches = [
        KeySketch(mapped.array(f"codes.{i}"), mapped.array(f"scales.{i}")) for i in range(n_layers)
    ]
    return mapped, sketches
