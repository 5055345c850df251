"""The merging objective l(theta, D): a mean over tasks of each task's mean sample loss, on fixed samples.

The model family (``families/``) says how a batch is made and how its loss is computed; this module
holds what is the same for every family. Samples are drawn once with a seeded generator and
pre-processed, so every evaluation of the objective sees the same data and line search / the FW gap
are exact for it. Gradients go through Lightning Fabric's ``backward`` in mini-batches; with data
parallelism each process holds a shard of every task's samples and the sums are all-reduced.
Whole batches of several tasks share a forward pass (up to ``batch_size`` samples) where the total
objective is all that is needed; per-task gradients take one task's batches at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .frank_wolfe.params import ParamDict
from .frank_wolfe.solver import LossAndGrad

# batch_loss(params, task, batch) -> the *summed* loss of the batch's samples (a scalar tensor)
BatchLoss = Callable[[Mapping[str, torch.Tensor], str, Any], torch.Tensor]
# batch_losses(params, [(task, batch), ...]) -> each batch's summed loss, from one forward pass where
# the family can share it (ModelFamily.batch_losses)
BatchLosses = Callable[[Mapping[str, torch.Tensor], Sequence[Tuple[str, Any]]], List[torch.Tensor]]


@dataclass
class TaskBatches:
    """One task's fixed samples on this process, in batches. ``num_samples`` counts them on *all*
    processes: every rank normalizes by the global count, so summing the ranks' contributions gives
    exactly the single-process loss and gradient."""

    task: str
    batches: List[Any]
    num_samples: int
    sizes: List[int] = field(default_factory=list)  # samples per batch; empty: unknown (never packed)


def sample_indices(dataset_len: int, count: int, seed: int) -> List[int]:
    """``count`` distinct indices drawn with a seeded generator (all of them if count >= len)."""
    if count >= dataset_len:
        return list(range(dataset_len))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(dataset_len, generator=generator)[:count].tolist())


def shard_batches(task: str, indices: Sequence[int], batch_size: int, make_batch: Callable[[List[int]], Any], rank: int = 0, world_size: int = 1) -> TaskBatches:
    """This rank's share (``indices[rank::world_size]``) of the chosen samples, pre-processed once
    by ``make_batch(indices)`` in batches of ``batch_size``."""
    local = list(indices)[rank::world_size]
    starts = range(0, len(local), batch_size)
    batches = [make_batch(local[start : start + batch_size]) for start in starts]
    return TaskBatches(task=task, batches=batches, num_samples=len(indices), sizes=[len(local[start : start + batch_size]) for start in starts])


def pack_batches(data: Sequence[TaskBatches], pass_size: Optional[int]) -> List[List[Tuple[int, int]]]:
    """(task index, batch index) groups of whole batches with at most ``pass_size`` samples each,
    first-fit by decreasing size; one batch per group where sizes or ``pass_size`` are unknown."""
    items = [(t, b) for t, d in enumerate(data) for b in range(len(d.batches))]
    if pass_size is None or any(len(d.sizes) != len(d.batches) for d in data):
        return [[item] for item in items]
    packs: List[List[Tuple[int, int]]] = []
    room: List[int] = []
    for t, b in sorted(items, key=lambda item: -data[item[0]].sizes[item[1]]):
        size = data[t].sizes[b]
        slot = next((i for i, free in enumerate(room) if size <= free), None)
        if slot is None:
            packs.append([])
            room.append(max(pass_size, size))
            slot = len(packs) - 1
        packs[slot].append((t, b))
        room[slot] -= size
    return [sorted(pack) for pack in packs]


class SampleObjective:
    """Implements the engine's ``Objective`` protocol on fixed per-task samples."""

    def __init__(self, block_names: Sequence[str], data: Sequence[TaskBatches], batch_loss: BatchLoss, backward: Optional[Callable[[torch.Tensor], None]] = None,
                 all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, batch_losses: Optional[BatchLosses] = None, pass_size: Optional[int] = None):
        self.block_names = list(block_names)
        self.data = list(data)
        self.task_names = [d.task for d in self.data]
        self.batch_loss = batch_loss
        self.batch_losses = batch_losses or (lambda params, items: [batch_loss(params, task, batch) for task, batch in items])
        # the forward passes of the total objective: whole batches of several tasks together
        self.packs = pack_batches(self.data, pass_size if batch_losses is not None else None)
        self.backward = backward or (lambda value: value.backward())
        # sums a tensor over data-parallel processes; None in a single process
        self.all_reduce = all_reduce
        self.forward_passes = 0
        self.backward_passes = 0

    @torch.no_grad()
    def task_losses(self, params: Mapping[str, torch.Tensor]) -> Dict[str, float]:
        """Each objective task's mean sample loss (summed over data-parallel processes)."""
        sums = torch.zeros(len(self.data), dtype=torch.float64)
        for pack in self.packs:
            for (index, _), value in zip(pack, self.batch_losses(params, self._items(pack))):
                sums[index] += float(value)
            self.forward_passes += 1
        sums = self._reduce(sums)
        return {d.task: float(sums[i]) / d.num_samples for i, d in enumerate(self.data)}

    def _items(self, pack: Sequence[Tuple[int, int]]) -> List[Tuple[str, Any]]:
        return [(self.data[t].task, self.data[t].batches[b]) for t, b in pack]

    def loss(self, params: Mapping[str, torch.Tensor]) -> float:
        return sum(self.task_losses(params).values()) / len(self.data)

    def _reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.all_reduce is None else self.all_reduce(tensor)

    def _reduce_params(self, groups: List[ParamDict]) -> None:
        """All-reduce (sum) several parameter dicts in place with one flat communication."""
        if self.all_reduce is None:
            return
        flat = torch.cat([g[name].reshape(-1) for g in groups for name in self.block_names])
        flat = self.all_reduce(flat)
        offset = 0
        for g in groups:
            for name in self.block_names:
                size = g[name].numel()
                g[name].copy_(flat[offset : offset + size].view_as(g[name]))
                offset += size

    def loss_and_grad(self, params: Mapping[str, torch.Tensor], per_task: bool = False) -> LossAndGrad:
        """The objective and its gradient (and, with ``per_task``, each task's). The gradient tensors
        are autograd's own buffers, taken over rather than copied: on the CPU every fresh model-sized
        tensor costs page faults, and the copies once made up a quarter of an FW-soft iteration."""
        leaves = {name: params[name].detach().requires_grad_(True) for name in self.block_names}
        total_grad: Optional[ParamDict] = None
        task_grads: Dict[str, ParamDict] = {}
        sums = torch.zeros(len(self.data), dtype=torch.float64)
        weight_per_task = 1.0 / len(self.data)
        if per_task:
            for index, task_data in enumerate(self.data):
                scale = weight_per_task / task_data.num_samples
                for batch in task_data.batches:
                    batch_loss = self.batch_loss(leaves, task_data.task, batch)
                    self.backward(batch_loss * scale)
                    sums[index] += float(batch_loss.detach())
                    self.forward_passes += 1
                    self.backward_passes += 1
                # per-task rows are d(task loss)/d theta, unscaled by the task weight; the total is
                # derived from them if asked for (LossAndGrad.total_grad)
                task_grads[task_data.task] = {name: self._take_grad(leaves[name]).div_(weight_per_task) for name in self.block_names}
        else:  # the total's gradient: autograd sums the packed passes' into the leaves
            for pack in self.packs:
                values = self.batch_losses(leaves, self._items(pack))
                self.backward(sum(value * (weight_per_task / self.data[t].num_samples) for (t, _), value in zip(pack, values)))
                for (t, _), value in zip(pack, values):
                    sums[t] += float(value.detach())
                self.forward_passes += 1
                self.backward_passes += 1
            total_grad = {name: self._take_grad(leaves[name]) for name in self.block_names}
        self._reduce_params(list(task_grads.values()) if per_task else [total_grad])
        sums = self._reduce(sums)
        task_losses = {d.task: float(sums[i]) / d.num_samples for i, d in enumerate(self.data)}
        loss = sum(task_losses.values()) * weight_per_task
        return LossAndGrad(
            loss=loss, grad=total_grad, task_grads=task_grads if per_task else None,
            task_weights={d.task: weight_per_task for d in self.data} if per_task else None,
        )

    @staticmethod
    def _take_grad(leaf: torch.Tensor) -> torch.Tensor:
        """The leaf's accumulated gradient, detached from it (zeros for a parameter the loss does not use)."""
        grad, leaf.grad = leaf.grad, None
        return grad if grad is not None else torch.zeros_like(leaf)
