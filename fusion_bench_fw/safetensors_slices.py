"""Slices of same-named tensors from several safetensors checkpoints (single files or shards), read with positioned reads.

This serves the block-major LMO pass (one parameter of a group of checkpoints at a time). It does not
use ``safe_open``: its tensors are views of a memory map, and every page touched stays mapped (counted
in the process's RSS) while the file is open, so a group of 16 open checkpoints read to the end would
add 16 whole models to the RSS (measured: +1.37 GB for 4 CLIP ViT-B/32 files). ``preadv`` into the
caller's buffer costs one copy from the page cache, like a plain read, and holds nothing else.

The format is the documented one: an 8-byte little-endian header length, a JSON header mapping each
tensor name to its dtype, shape and ``data_offsets`` (relative to the end of the header), then data.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass(frozen=True)
class TensorEntry:
    dtype: Optional[torch.dtype]  # None: a dtype this reader does not handle
    shape: tuple
    offset: int  # absolute byte offset of the first element in the file
    nbytes: int

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= int(size)
        return count


def read_header(path: Path) -> Dict[str, TensorEntry]:
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than its header length)")
        (size,) = struct.unpack("<Q", prefix)
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    base = 8 + size
    return {
        name: TensorEntry(DTYPES.get(info["dtype"]), tuple(info["shape"]), base + info["data_offsets"][0], info["data_offsets"][1] - info["data_offsets"][0])
        for name, info in header.items()
    }


def stored_prefix(keys, names: Sequence[str]) -> Optional[str]:
    """The prefix a checkpoint stores ``names`` under: "" for their own names; e.g. "transformer." for
    a checkpoint saved from a model that wraps the base model (GPT2ForSequenceClassification around
    GPT2Model: Hugging Face's from_pretrained strips this prefix the same way); None if neither."""
    if all(name in keys for name in names):
        return ""
    first = names[0] if names else ""
    for key in keys:
        if key.endswith("." + first):
            prefix = key[: len(key) - len(first)]
            if all(prefix + name in keys for name in names):
                return prefix
    return None


class SliceReader:
    """A :class:`~fusion_bench_fw.frank_wolfe.lmo.BlockReader` over safetensors checkpoints (one row per
    vertex), each a single file or a sharded set: ``weight_maps[row]`` maps a tensor name to its file.

    Use :meth:`open`, which returns None when the files cannot be read this way, then ``with``.
    """

    def __init__(self, weight_maps: Sequence[Mapping[str, Path]], headers: Dict[Path, Dict[str, TensorEntry]], dtype: torch.dtype,
                 prefixes: Optional[Sequence[str]] = None):
        self.weight_maps = [dict(m) for m in weight_maps]
        self.prefixes = list(prefixes) if prefixes is not None else [""] * len(self.weight_maps)
        self.headers = headers
        self.dtype = dtype
        self.fds: Dict[Path, int] = {}
        self._located: Dict[str, list] = {}  # name -> (file, entry) per row, looked up once
        self._scratch: Optional[torch.Tensor] = None  # raw bytes of a slice that needs a cast, reused
        try:
            for file in headers:
                self.fds[file] = os.open(str(file), os.O_RDONLY)
        except OSError:
            self.close()
            raise

    @classmethod
    def open(cls, weight_maps: Sequence[Mapping[str, Path]], names: Sequence[str], dtype: torch.dtype,
             prefixes: Optional[Sequence[str]] = None) -> Optional["SliceReader"]:
        """None unless every checkpoint holds every name, in a floating dtype, with one shape across
        checkpoints and a byte size that matches it (anything unusual is left to the regular loaders and their errors).
        ``prefixes[row]`` is put before each name in that checkpoint's files (``transformer.`` for a
        head model's checkpoint read into its base model; see :func:`stored_prefix`)."""
        if not hasattr(os, "preadv") or sys.byteorder != "little":
            return None
        prefixes = list(prefixes) if prefixes is not None else [""] * len(weight_maps)
        # one Path per distinct file: a Path per (checkpoint, tensor) cost ~0.1 s per LMO pass over 16 models
        paths: Dict[str, Path] = {}
        weight_maps = [{n: paths.setdefault(str(f), Path(f)) for n, f in m.items()} for m in weight_maps]
        headers: Dict[Path, Dict[str, TensorEntry]] = {}
        try:
            for file in {m[p + n] for m, p in zip(weight_maps, prefixes) for n in names if p + n in m}:
                headers[file] = read_header(file)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
        for name in names:
            entries = [headers[m[p + name]].get(p + name) if p + name in m else None for m, p in zip(weight_maps, prefixes)]
            if any(e is None or e.dtype is None or e.nbytes != e.numel * e.dtype.itemsize for e in entries):
                return None
            if len({e.shape for e in entries}) != 1:
                return None
        return cls(weight_maps, headers, dtype, prefixes)

    def _entry(self, row: int, name: str) -> Tuple[Path, TensorEntry]:
        key = self.prefixes[row] + name
        file = self.weight_maps[row][key]
        return file, self.headers[file][key]

    def numel(self, name: str) -> int:
        return self._entry(0, name)[1].numel

    def stack(self, name: str, start: int = 0, stop: Optional[int] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        numel = self.numel(name)
        stop = numel if stop is None else stop
        if not 0 <= start <= stop <= numel:
            raise IndexError(f"slice [{start}, {stop}) out of range for parameter {name!r} with {numel} elements")
        width = stop - start
        count = len(self.weight_maps)
        if out is None:
            out = torch.empty(count, width, dtype=self.dtype)
        if tuple(out.shape) != (count, width) or not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"out must be a contiguous CPU tensor of shape {(count, width)}")
        located = self._located.get(name)
        if located is None:
            located = self._located[name] = [self._entry(row, name) for row in range(count)]
        direct = [entry.dtype == self.dtype == out.dtype for _, entry in located]
        rows = memoryview(out.view(torch.uint8).reshape(-1).numpy()) if any(direct) else None
        row_bytes = width * out.element_size()
        for row, (file, entry) in enumerate(located):
            fd = self.fds[file]
            offset = entry.offset + start * entry.dtype.itemsize
            # read straight into the output row unless a cast is needed (same casts as the vertex-major path)
            if direct[row]:
                self._read(fd, file, rows[row * row_bytes : (row + 1) * row_bytes], offset)
            else:
                raw = self._raw(width, entry.dtype)
                self._read(fd, file, memoryview(raw.view(torch.uint8).numpy()), offset)
                # a file already in self.dtype is only widened into out (e.g. bf16 into the float32
                # tiles of the LMO pass); another one is first rounded to self.dtype, as a load would
                out[row].copy_(raw if entry.dtype == self.dtype else raw.to(self.dtype))
        return out

    def _raw(self, width: int, dtype: torch.dtype) -> torch.Tensor:
        """``width`` elements of scratch in ``dtype``, reused across calls: a fresh buffer per slice
        and row would fault its pages in each time."""
        nbytes = width * dtype.itemsize
        if self._scratch is None or self._scratch.numel() < nbytes:
            self._scratch = torch.empty(nbytes, dtype=torch.uint8)
        return self._scratch[:nbytes].view(dtype)

    @staticmethod
    def _read(fd: int, file: Path, view: memoryview, offset: int) -> None:
        done = os.preadv(fd, [view], offset)
        while done < len(view):  # short reads: only near the end of a file, or interrupted
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise ValueError(f"{file} ends before the data its header announces (truncated checkpoint?)")
            done += got

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def __enter__(self) -> "SliceReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
