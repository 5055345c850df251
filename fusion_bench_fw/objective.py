"""The merging objective l(theta, D) for CLIP vision models: the only data-dependent part of FW.

``cross_entropy`` uses a fixed set of labelled training samples per task (the paper's setting,
100 per task); ``entropy`` uses unlabelled test samples (AdaMerging's objective, used by the
paper's scaling experiments). The loss is the mean over tasks of each task's mean sample loss.
Samples are drawn once with a seeded generator and pre-processed, so every evaluation of the
objective sees the same data and line search / the FW gap are exact for it.

Gradients go through Lightning Fabric (``fabric.backward``) in mini-batches; parameters are passed
functionally (``torch.func.functional_call``) so theta never needs to be copied into a module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from .frank_wolfe.params import ParamDict
from .frank_wolfe.solver import LossAndGrad

log = logging.getLogger(__name__)

LOSSES = ("cross_entropy", "entropy")

# compute_logits(module, images, task) -> logits; FusionBench's CLIPClassificationMixin provides it
LogitFn = Callable[[Callable, torch.Tensor, str], torch.Tensor]


@dataclass
class TaskBatches:
    """One task's fixed samples on this process. ``num_samples`` counts them on *all* processes:
    with data parallelism each rank holds a shard, but every rank normalizes by the global count so
    that summing the ranks' contributions gives exactly the single-process loss and gradient."""

    task: str
    batches: List[Tuple[torch.Tensor, Optional[torch.Tensor]]]  # (images, labels or None)
    num_samples: int = 0

    def __post_init__(self):
        if self.num_samples == 0:
            self.num_samples = sum(images.shape[0] for images, _ in self.batches)


def sample_indices(dataset_len: int, count: int, seed: int) -> List[int]:
    """``count`` distinct indices drawn with a seeded generator (all of them if count >= len)."""
    if count >= dataset_len:
        return list(range(dataset_len))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(dataset_len, generator=generator)[:count].tolist())


def make_task_batches(task: str, dataset, indices: Sequence[int], batch_size: int, with_labels: bool, to_device: Callable, rank: int = 0, world_size: int = 1) -> TaskBatches:
    """Pre-process this rank's share of the chosen samples once and batch them.

    ``dataset[i]`` must give ``(pixel_values, label)``. Rank r keeps ``indices[r::world_size]``.
    """
    local = list(indices)[rank::world_size]
    batches = []
    for start in range(0, len(local), batch_size):
        items = [dataset[i] for i in local[start : start + batch_size]]
        images = to_device(torch.stack([image for image, _ in items]))
        labels = to_device(torch.as_tensor([label for _, label in items])) if with_labels else None
        batches.append((images, labels))
    return TaskBatches(task=task, batches=batches, num_samples=len(indices))


class ClassificationObjective:
    """Implements the engine's ``Objective`` protocol for a vision encoder + zero-shot heads."""

    def __init__(self, model: nn.Module, block_names: Sequence[str], data: Sequence[TaskBatches], compute_logits: LogitFn, loss: str = "cross_entropy", backward: Optional[Callable[[torch.Tensor], None]] = None, all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        if loss not in LOSSES:
            raise ValueError(f"unknown objective loss {loss!r}; allowed: {', '.join(LOSSES)}")
        self.model = model
        self.block_names = list(block_names)
        self.data = list(data)
        self.task_names = [d.task for d in self.data]
        self.compute_logits = compute_logits
        self.loss_name = loss
        self.backward = backward or (lambda value: value.backward())
        # sums a tensor over data-parallel processes; None in a single process
        self.all_reduce = all_reduce
        self.forward_passes = 0
        self.backward_passes = 0

    def _batch_loss(self, params: Mapping[str, torch.Tensor], task: str, images: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        def encoder(pixel_values):
            return functional_call(self.model, dict(params), (pixel_values,))

        logits = self.compute_logits(encoder, images, task)
        if self.loss_name == "cross_entropy":
            return F.cross_entropy(logits, labels, reduction="sum")
        probs = logits.softmax(dim=-1)
        return -(probs * logits.log_softmax(dim=-1)).sum()

    @torch.no_grad()
    def task_losses(self, params: Mapping[str, torch.Tensor]) -> Dict[str, float]:
        """Each objective task's mean sample loss (summed over data-parallel processes)."""
        sums = torch.zeros(len(self.data), dtype=torch.float64)
        for index, task_data in enumerate(self.data):
            for images, labels in task_data.batches:
                sums[index] += float(self._batch_loss(params, task_data.task, images, labels))
                self.forward_passes += 1
        sums = self._reduce(sums)
        return {d.task: float(sums[i]) / d.num_samples for i, d in enumerate(self.data)}

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
        leaves = {name: params[name].detach().requires_grad_(True) for name in self.block_names}
        total_grad: ParamDict = {name: torch.zeros_like(leaves[name]) for name in self.block_names}
        task_grads: Dict[str, ParamDict] = {}
        sums = torch.zeros(len(self.data), dtype=torch.float64)
        weight_per_task = 1.0 / len(self.data)
        for index, task_data in enumerate(self.data):
            scale = weight_per_task / task_data.num_samples
            for images, labels in task_data.batches:
                batch_loss = self._batch_loss(leaves, task_data.task, images, labels)
                self.backward(batch_loss * scale)
                sums[index] += float(batch_loss.detach())
                self.forward_passes += 1
                self.backward_passes += 1
            grad = {name: leaves[name].grad.detach().clone() if leaves[name].grad is not None else torch.zeros_like(leaves[name]) for name in self.block_names}
            for name in self.block_names:
                total_grad[name].add_(grad[name])
                leaves[name].grad = None
            if per_task:
                # per-task rows are d(task loss)/d theta, unscaled by the task weight
                task_grads[task_data.task] = {name: g / weight_per_task for name, g in grad.items()}
        self._reduce_params([total_grad, *task_grads.values()])
        sums = self._reduce(sums)
        task_losses = {d.task: float(sums[i]) / d.num_samples for i, d in enumerate(self.data)}
        loss = sum(task_losses.values()) * weight_per_task
        return LossAndGrad(
            loss=loss, grad=total_grad, task_grads=task_grads if per_task else None,
            task_weights={d.task: weight_per_task for d in self.data} if per_task else None,
        )
