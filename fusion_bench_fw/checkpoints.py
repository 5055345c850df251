"""Stream fine-tuned checkpoints from a FusionBench model pool, one at a time.

This is what keeps FW-Merging's memory flat in the number of models: the LMO reads each
checkpoint once per iteration and drops it before reading the next. Where each checkpoint's files are
is decided once (:mod:`.checkpoint_files`: local directories, the Hugging Face cache, shards);
safetensors checkpoints are read tensor by tensor (only the merged parameters, memory mapped);
anything else goes through the pool's own ``load_model`` and is released right after. For the
block-major LMO pass, a group of safetensors checkpoints can also be read one parameter slice at a
time (:meth:`PoolCheckpoints.block_reader`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from safetensors import safe_open

from .checkpoint_files import LORA, POOL_LOADER, STREAMING, CheckpointFiles, reader_counts, resolve_pool
from .frank_wolfe.params import ParamDict
from .safetensors_slices import SliceReader, stored_prefix

log = logging.getLogger(__name__)


class PoolCheckpoints:
    """A :class:`~fusion_bench_fw.frank_wolfe.lmo.VertexSource` over named models of a pool.

    ``block_names`` are the merged parameters (names as in ``model.named_parameters()``). Loaded
    tensors are cast to ``dtype`` and stay on the CPU; the engine moves each block to the device
    of theta as it computes inner products. ``loads`` and ``peak_alive`` make streaming observable:
    ``loads`` counts vertex reads (one per vertex per pass, whichever reader), ``block_loads`` the
    part of them done by :meth:`block_reader`, and ``peak_alive`` the most whole checkpoints held at
    once by :meth:`stream`; the block reader never holds one (only a slice of one parameter per
    vertex of its group), so it leaves ``peak_alive`` unchanged. :meth:`reader_of` says which reader
    serves a checkpoint (STREAMING or POOL_LOADER), the same in every process.

    ``files`` are the resolved entries (:func:`~.checkpoint_files.resolve_pool`), resolved here when
    not given. ``base`` (the pretrained parameters already in memory, and the files they came from)
    lets a LoRA vertex on those same base files start from them instead of re-reading the base from
    disk for every adapter; ``base_reads`` counts the LoRA vertices that still read it from disk.
    """

    def __init__(self, modelpool, names: Sequence[str], block_names: Sequence[str], dtype: torch.dtype = torch.float32,
                 prefer_safetensors: bool = True, files: Optional[Mapping[str, CheckpointFiles]] = None,
                 base: Optional[Tuple[ParamDict, CheckpointFiles]] = None):
        self.modelpool = modelpool
        self.names: List[str] = list(names)
        self.block_names = list(block_names)
        self.dtype = dtype
        self.prefer_safetensors = prefer_safetensors
        self.files = dict(files) if files is not None else resolve_pool(modelpool, self.names, prefer_safetensors)
        self.base = base
        self.loads = 0
        self.block_loads = 0
        self.base_reads = 0
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
        read from their safetensors files; None, so the caller streams them, unless every one of
        them is a safetensors checkpoint with every merged parameter (and ``prefer_safetensors``)."""
        served = [self._served(self.names[index], STREAMING) for index in indices]
        if any(s is None for s in served):
            return None
        maps = [files.weight_map for files, _ in served]
        reader = SliceReader.open(maps, self.block_names, self.dtype, [prefix for _, prefix in served])
        if reader is not None:
            self.loads += len(maps)
            self.block_loads += len(maps)
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
        served = self._served(name, STREAMING)
        if served is not None:
            return self._read_safetensors(*served)
        lora = self._served(name, LORA)
        if lora is not None:
            params = self._lora_base(*lora)
            for block, delta in lora[0].adapter.deltas(self.block_names, self.dtype).items():
                params[block] += delta
            return params
        return self._load_through_pool(name)

    def reader_of(self, name: str) -> str:
        if self._served(name, STREAMING) is not None:
            return STREAMING
        return LORA if self._served(name, LORA) is not None else POOL_LOADER

    def reader_counts(self) -> Dict[str, int]:
        """How many of the checkpoints each reader serves (the LoRA reader listed only when used)."""
        return reader_counts({name: CheckpointFiles(name, self.reader_of(name), "") for name in self.names})

    def _served(self, name: str, reader: str) -> Optional[Tuple[CheckpointFiles, str]]:
        """(resolved files, key prefix) of a checkpoint that ``reader`` (STREAMING, or LORA: its base
        model's files) serves: safetensors holding every merged parameter, under its own name or
        under one prefix (a head model's checkpoint, see ``stored_prefix``); an unusual key layout is
        left to the pool's loader and its errors."""
        files = self.files.get(name)
        if not self.prefer_safetensors or files is None or files.reader != reader:
            return None
        prefix = stored_prefix(files.weight_map, self.block_names)
        return None if prefix is None else (files, prefix)

    def _lora_base(self, files: CheckpointFiles, prefix: str) -> ParamDict:
        """The base weights a LoRA vertex adds its deltas to: a CPU copy of the in-memory pretrained
        parameters when the adapter's base model is the same files, else read from disk."""
        if self.base is not None and not prefix:
            params, base_files = self.base
            if dict(base_files.weight_map) == dict(files.weight_map) and all(b in params for b in self.block_names):
                return {b: params[b].detach().to(device="cpu", dtype=self.dtype, copy=True) for b in self.block_names}
        self.base_reads += 1
        return self._read_safetensors(files, prefix)

    def _read_safetensors(self, files: CheckpointFiles, prefix: str = "") -> ParamDict:
        by_file: Dict[Path, List[str]] = defaultdict(list)
        for block in self.block_names:
            by_file[files.weight_map[prefix + block]].append(block)
        params: ParamDict = {}
        for file, blocks in by_file.items():  # one shard open at a time
            with safe_open(str(file), framework="pt") as handle:
                params.update({block: handle.get_tensor(prefix + block).to(self.dtype) for block in blocks})
        return {block: params[block] for block in self.block_names}

    def _load_through_pool(self, name: str) -> ParamDict:
        model = self.modelpool.load_model(name)
        # a lazily loading pool (CausalLMPool enable_lazy_loading) returns a LazyStateDict: a mapping
        # that reads each tensor when asked, which is all this needs
        parameters = dict(model.named_parameters()) if isinstance(model, torch.nn.Module) else model
        missing = [block for block in self.block_names if block not in parameters]
        if missing:
            raise ValueError(
                f"model {name!r} has no parameter {missing[0]!r} (and {len(missing) - 1} more) that the "
                f"pretrained model has: the checkpoints in the pool must share one architecture"
            )
        params = {block: parameters[block].detach().to(self.dtype) for block in self.block_names}
        del model, parameters
        return params
