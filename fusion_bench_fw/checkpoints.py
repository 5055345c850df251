"""Stream fine-tuned checkpoints from a FusionBench model pool, one at a time.

This is what keeps FW-Merging's memory flat in the number of models: the LMO reads each
checkpoint once per iteration and drops it before reading the next. Local Hugging Face model
directories with safetensors weights are read tensor by tensor (only the merged parameters, memory
mapped); anything else goes through the pool's own ``load_model`` and is released right after.
For the block-major LMO pass, a group of such local checkpoints can also be read one parameter
slice at a time (:meth:`PoolCheckpoints.block_reader`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from safetensors import safe_open

from .frank_wolfe.params import ParamDict
from .safetensors_slices import SliceReader

log = logging.getLogger(__name__)


def local_safetensors_file(entry) -> Optional[Path]:
    """The single ``model.safetensors`` of a pool entry that is a local model directory, if any."""
    if not isinstance(entry, (str, os.PathLike)):
        return None
    path = Path(entry).expanduser()
    candidate = path / "model.safetensors"
    return candidate if candidate.is_file() else None


class PoolCheckpoints:
    """A :class:`~fusion_bench_fw.frank_wolfe.lmo.VertexSource` over named models of a pool.

    ``block_names`` are the merged parameters (names as in ``model.named_parameters()``). Loaded
    tensors are cast to ``dtype`` and stay on the CPU; the engine moves each block to the device
    of theta as it computes inner products. ``loads`` and ``peak_alive`` make streaming observable:
    ``loads`` counts vertex reads (one per vertex per pass, whichever reader), ``block_loads`` the
    part of them done by :meth:`block_reader`, and ``peak_alive`` the most whole checkpoints held at
    once by :meth:`stream`; the block reader never holds one (only a slice of one parameter per
    vertex of its group), so it leaves ``peak_alive`` unchanged.
    """

    def __init__(self, modelpool, names: Sequence[str], block_names: Sequence[str], dtype: torch.dtype = torch.float32, prefer_safetensors: bool = True):
        self.modelpool = modelpool
        self.names: List[str] = list(names)
        self.block_names = list(block_names)
        self.dtype = dtype
        self.prefer_safetensors = prefer_safetensors
        self.loads = 0
        self.block_loads = 0
        self.alive = 0
        self.peak_alive = 0

    def stream(self, indices: Optional[Iterable[int]] = None) -> Iterator[Tuple[int, ParamDict]]:
        for index in range(len(self.names)) if indices is None else indices:
            params = self.load(self.names[index])
            self.alive += 1
            self.peak_alive = max(self.peak_alive, self.alive)
            try:
                yield index, params
            finally:
                self.alive -= 1
                del params

    def block_reader(self, indices: Sequence[int]) -> Optional[SliceReader]:
        """Slices of each parameter for the vertices ``indices`` at once (the block-major LMO pass),
        read from their local ``model.safetensors`` files; None, so the caller streams them, unless
        every one of them is such a file with every merged parameter (and ``prefer_safetensors``)."""
        if not self.prefer_safetensors:
            return None
        files = [local_safetensors_file(self._entry(self.names[index])) for index in indices]
        if any(file is None for file in files):
            return None
        reader = SliceReader.open(files, self.block_names, self.dtype)
        if reader is not None:
            self.loads += len(files)
            self.block_loads += len(files)
        return reader

    def validate(self, reference: ParamDict, shard=(0, 1)) -> torch.Tensor:
        """Read every checkpoint once and fail early, naming the model and tensor, on a parameter
        that is missing, has another shape than in the pretrained model, or holds NaN/Inf.
        ``shard=(rank, world_size)`` checks only this process's share.

        Returns each checkpoint's distance from ``reference`` relative to the reference's norm,
        ||theta_i - theta_0|| / ||theta_0|| (float64, zero for the other processes' shares, so the
        shares sum to the full vector): fine-tunes stay close to their base, a checkpoint of another
        initialization does not."""
        rank, world_size = shard
        distances = torch.zeros(len(self.names), dtype=torch.float64)
        reference_sq = sum(float(t.double().pow(2).sum()) for t in reference.values())
        for index, params in self.stream(range(rank, len(self.names), world_size)):
            name = self.names[index]
            squared = 0.0
            for block, expected in reference.items():
                tensor = params.get(block)
                if tensor is None:
                    raise ValueError(f"model {name!r} has no parameter {block!r}: every checkpoint must have the pretrained model's architecture")
                if tensor.shape != expected.shape:
                    raise ValueError(
                        f"model {name!r}: parameter {block!r} has shape {tuple(tensor.shape)} but the pretrained "
                        f"model's is {tuple(expected.shape)} (architecture mismatch); remove the model from the pool"
                    )
                if not torch.isfinite(tensor).all():
                    raise ValueError(f"model {name!r}: parameter {block!r} contains NaN or Inf values; remove or repair this checkpoint")
                squared += float((tensor.to(expected.device, torch.float64) - expected.double()).pow(2).sum())
            distances[index] = (squared / max(reference_sq, 1e-30)) ** 0.5
        return distances

    def load(self, name: str) -> ParamDict:
        self.loads += 1
        file = local_safetensors_file(self._entry(name)) if self.prefer_safetensors else None
        if file is not None:
            params = self._read_safetensors(file)
            if params is not None:
                return params
        return self._load_through_pool(name)

    def _entry(self, name: str):
        return self.modelpool._models[name] if hasattr(self.modelpool, "_models") else None

    def _read_safetensors(self, file: Path) -> Optional[ParamDict]:
        with safe_open(str(file), framework="pt") as handle:
            available = set(handle.keys())
            if not set(self.block_names) <= available:
                return None  # unusual key layout: let the pool's loader (and its errors) handle it
            return {name: handle.get_tensor(name).to(self.dtype) for name in self.block_names}

    def _load_through_pool(self, name: str) -> ParamDict:
        model = self.modelpool.load_model(name)
        parameters = dict(model.named_parameters())
        missing = [block for block in self.block_names if block not in parameters]
        if missing:
            raise ValueError(
                f"model {name!r} has no parameter {missing[0]!r} (and {len(missing) - 1} more) that the "
                f"pretrained model has: the checkpoints in the pool must share one architecture"
            )
        params = {block: parameters[block].detach().to(self.dtype) for block in self.block_names}
        del model, parameters
        return params
