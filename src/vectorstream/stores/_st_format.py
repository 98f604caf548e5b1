"""The safetensors layout of the ``safetensors:`` store: read by memory map, written as a stream.

A safetensors file is an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``), then the tensors'
bytes, little-endian, with no holes. That is all this module relies on, so:

* reading maps the one tensor wanted with ``np.memmap`` over the file object already opened:
  nothing is copied, every process serving the same file shares its pages, and a file renamed
  over the path meanwhile does not change what this reader sees (the map holds the old inode);
* writing puts the header first (the row count is known before the rows) and then streams the rows
  block by block, so a publish never holds the whole matrix in memory.

``safetensors.numpy.load_file`` reads the files written here (the tests check it), and files
written by it (or by torch's ``save_file``) are read here.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import StoreError

# The dtypes a row tensor may have on disk; BF16 is read as uint16 and widened (numpy has no bf16).
READ_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"),
}
# What a writer may be asked for, and its safetensors name.
WRITE_DTYPES = {"float32": "F32", "float16": "F16"}

# The safetensors library refuses larger headers; so do we, before reading one.
MAX_HEADER = 100_000_000
_ALIGN = 8  # the library pads its header so the data start is 8-byte aligned; so do we

# What a tensor written by vectorstream says about itself and its mapping (``__metadata__``).
FORMAT_KEY = "vectorstream.format"  # "1"
ROWS_KEY = "vectorstream.rows"
MAPPING_KEY = "vectorstream.mapping"  # the mapping file's name
DIGEST_KEY = "vectorstream.mapping_sha256"  # of the mapping file's bytes
GENERATION_KEY = "vectorstream.generation"  # 1, 2, …: one per publish


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Where one 2-D tensor lies in a safetensors file, and the file's free-form metadata."""

    path: Path
    key: str
    dtype: str  # the safetensors name: F32, F16, BF16, F64
    rows: int
    dim: int
    start: int  # absolute byte offset of the tensor's first byte
    metadata: Mapping[str, str]


def read_info(fh: BinaryIO, path: Path, key: str) -> TensorInfo:
    """The header of the file open as ``fh``, checked, for the tensor named ``key``.

    ``StoreError`` says what is wrong: too short or truncated, a header that is not
    safetensors JSON, no tensor ``key`` (naming the ones there are), not 2-D, an unsupported dtype.
    """
    size = os.fstat(fh.fileno()).st_size
    head = fh.read(8)
    if len(head) < 8:
        raise StoreError(f"{path} is not a safetensors file: {size} bytes, shorter than a header")
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER or 8 + length > size:
        raise StoreError(
            f"{path} is truncated or not a safetensors file: its header says {length} bytes, "
            f"the file has {size}"
        )
    try:
        header = json.loads(fh.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(
            f"{path} is not a safetensors file: its header is not JSON ({exc})"
        ) from exc
    if not isinstance(header, dict):
        raise StoreError(f"{path} is not a safetensors file: its header is not a JSON object")
    raw_meta = header.pop("__metadata__", None) or {}
    metadata = {str(k): str(v) for k, v in raw_meta.items()} if isinstance(raw_meta, dict) else {}
    data_start = 8 + length
    end = 0
    for name, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(v, int) and v >= 0 for v in offsets)
        ):
            raise StoreError(f"{path}: tensor {name!r} has no valid data_offsets in its header")
        end = max(end, offsets[1])
    if data_start + end > size:
        raise StoreError(
            f"{path} is truncated: its header describes {data_start + end} bytes, the file has "
            f"{size} (an interrupted copy or write; copy the file again)"
        )
    if data_start + end < size:
        raise StoreError(
            f"{path} is not a valid safetensors file: {size - data_start - end} bytes follow "
            "the last tensor"
        )
    entry = header.get(key)
    if not isinstance(entry, dict):
        names = sorted(header)
        raise StoreError(
            f"{path} has no tensor {key!r}; it holds {names}: name the one to use with "
            f"?key=NAME (e.g. safetensors:{path}?key={names[0] if names else 'NAME'})"
        )
    dtype = entry.get("dtype")
    if dtype not in READ_DTYPES:
        raise StoreError(
            f"{path}: tensor {key!r} is {dtype}; rows of {sorted(READ_DTYPES)} can be served"
        )
    shape = entry.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) for s in shape)):
        raise StoreError(
            f"{path}: tensor {key!r} has shape {shape}; one row per text means 2-D (rows, dim)"
        )
    rows, dim = int(shape[0]), int(shape[1])
    begin, stop = (int(v) for v in entry["data_offsets"])
    if dim <= 0 or stop - begin != rows * dim * READ_DTYPES[dtype].itemsize:
        raise StoreError(
            f"{path}: tensor {key!r} of shape {shape} ({dtype}) does not match its "
            f"{stop - begin} data bytes"
        )
    return TensorInfo(path, key, dtype, rows, dim, data_start + begin, metadata)


def map_rows(fh: BinaryIO, info: TensorInfo) -> np.ndarray:
    """The tensor's rows as a read-only array mapped from the open file (no copy)."""
    dtype = READ_DTYPES[info.dtype]
    if info.rows == 0:
        return np.zeros((0, info.dim), dtype=dtype)
    mapped = np.memmap(fh, dtype=dtype, mode="r", offset=info.start, shape=(info.rows, info.dim))
    return mapped.view(np.ndarray)  # a plain array over the same pages


def as_float32(block: np.ndarray, dtype: str) -> np.ndarray:
    """Rows read in ``dtype`` (the safetensors name) as float32."""
    if dtype == "BF16":
        return (block.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(block, dtype=np.float32)


def write_tensor(
    path: Path,
    key: str,
    shape: tuple[int, int],
    dtype: str,
    metadata: Mapping[str, str],
    blocks: Iterable[np.ndarray],
) -> None:
    """Write a one-tensor safetensors file: the header, then ``blocks`` of rows, then ``fsync``.

    ``dtype`` is ``F32`` or ``F16``; the blocks must add up to ``shape``.
    """
    rows, dim = shape
    np_dtype = READ_DTYPES[dtype]
    nbytes = rows * dim * np_dtype.itemsize
    header = {
        "__metadata__": dict(metadata),
        key: {"dtype": dtype, "shape": [rows, dim], "data_offsets": [0, nbytes]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % _ALIGN)
    written = 0
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        for block in blocks:
            data = np.ascontiguousarray(block, dtype=np_dtype)
            out.write(data.tobytes())
            written += data.nbytes
        if written != nbytes:
            raise StoreError(f"{path}: wrote {written} bytes of rows, the header says {nbytes}")
        out.flush()
        os.fsync(out.fileno())


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        # Some filesystems refuse fsync on a directory; the renames have happened all the same.
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "DIGEST_KEY",
    "FORMAT_KEY",
    "GENERATION_KEY",
    "MAPPING_KEY",
    "MAX_HEADER",
    "READ_DTYPES",
    "ROWS_KEY",
    "WRITE_DTYPES",
    "TensorInfo",
    "as_float32",
    "fsync_dir",
    "map_rows",
    "read_info",
    "write_tensor",
]
