"""Fisher-weighted merging of scaled task vectors, one checkpoint at a time (DF-Merge's merge step).

DF-Merge (arXiv 2504.18992) merges ``theta0 + sum_i F_i * lam_i * tau_i / sum_i F_i`` where
``tau_i = theta_i - theta0`` and ``F_i`` is the diagonal Fisher information of the *scaled* model
``theta0 + lam_i * tau_i`` (not of the fine-tune itself), so a coefficient changes both how far a
model moves the merge and how much say it has per parameter. Two accumulators (numerator and
denominator) make the merge streaming: memory is a fixed number of model copies whatever the
number of checkpoints. Pure torch: no FusionBench import, testable on toy models.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, Mapping, Sequence, Tuple

import torch
from torch.utils._pytree import tree_leaves, tree_map

log = logging.getLogger(__name__)

ParamDict = Dict[str, torch.Tensor]
# batch_loss(params, task, batch) -> the summed negative log-likelihood of the batch's samples
BatchLoss = Callable[[Mapping[str, torch.Tensor], str, Any], torch.Tensor]


def diagonal_fisher(params: Mapping[str, torch.Tensor], batch_loss: BatchLoss, tasks: Sequence[Tuple[str, Sequence[Any], int]], vectorised: bool = True) -> ParamDict:
    """Empirical diagonal Fisher at ``params``: per task, the mean over its samples of the squared
    gradient of the sample's negative log-likelihood; then the mean over tasks (each objective task
    counts alike). ``tasks``: ``(task, batches, num_samples)``. Exact whatever the batch size: the
    gradients of a batch's samples are taken one per sample (:class:`SampleGradients`)."""
    leaves = {name: value.detach() for name, value in params.items()}
    fisher = {name: torch.zeros_like(value) for name, value in leaves.items()}
    gradients = SampleGradients(batch_loss, vectorised)
    for task, batches, num_samples in tasks:
        for batch in batches:
            for name, squares in gradients.summed_squares(leaves, task, batch).items():
                fisher[name].add_(squares, alpha=1.0 / (num_samples * len(tasks)))
    return fisher


class SampleGradients:
    """Sum over a batch's samples of each sample's squared gradient.

    The per-sample gradients of a batch come from one vectorised pass (``torch.func.vmap`` over
    ``torch.func.grad``), several times faster than one backward pass per sample on small models
    (benchmarks/results/df_merge_fisher). A model whose forward ``vmap`` cannot batch (data-dependent
    control flow, in-place writes to its inputs) falls back, once and with a log line, to a backward
    pass per sample: the same numbers, slower. A batch is a tensor or a tuple/list/dict of tensors
    whose first dimension is the sample."""

    def __init__(self, batch_loss: BatchLoss, vectorised: bool = True):
        self.batch_loss = batch_loss
        self.vectorised = vectorised

    def summed_squares(self, params: Mapping[str, torch.Tensor], task: str, batch: Any) -> ParamDict:
        if self.vectorised:
            try:
                return self._vectorised(params, task, batch)
            except Exception as error:  # noqa: BLE001 - any vmap limitation of the model's forward
                log.info("per-sample gradients: torch.func.vmap cannot batch this model's loss (%s: %s); one backward pass per sample instead", type(error).__name__, str(error).splitlines()[0] if str(error) else "")
                self.vectorised = False
        return self._looped(params, task, batch)

    def _vectorised(self, params, task, batch) -> ParamDict:
        def sample_loss(p, sample):
            return self.batch_loss(p, task, tree_map(lambda t: t.unsqueeze(0), sample))

        gradients = torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, 0))(dict(params), batch)
        return {name: g.square().sum(0) for name, g in gradients.items()}

    def _looped(self, params, task, batch) -> ParamDict:
        leaves = {name: value.detach().requires_grad_(True) for name, value in params.items()}  # shares storage: nothing is written to it
        squares = {name: torch.zeros_like(value) for name, value in leaves.items()}
        for index in range(batch_length(batch)):
            sample = tree_map(lambda t: t[index : index + 1], batch)
            grads = torch.autograd.grad(self.batch_loss(leaves, task, sample), list(leaves.values()), allow_unused=True)
            for name, grad in zip(leaves, grads):
                if grad is not None:
                    squares[name].add_(grad.detach().square())
        return squares


def batch_length(batch: Any) -> int:
    sizes = {leaf.shape[0] for leaf in tree_leaves(batch) if isinstance(leaf, torch.Tensor)}
    if len(sizes) != 1:
        raise ValueError(f"a Fisher batch must hold tensors with one common first (sample) dimension, got sizes {sorted(sizes)}")
    return sizes.pop()


class FisherMergeAccumulator:
    """``theta0 + sum_i F_i * delta_i / sum_i F_i``, accumulated one model at a time.

    ``floor`` is added to every model's Fisher (the usual guard of Fisher merging): where no model
    carries information for a parameter, the merge falls back to the plain mean of the scaled task
    vectors instead of dividing by zero."""

    def __init__(self, theta0: Mapping[str, torch.Tensor], floor: float = 1e-12):
        self.theta0 = theta0
        self.floor = float(floor)
        self.numerator = {name: torch.zeros_like(value) for name, value in theta0.items()}
        self.denominator = {name: torch.zeros_like(value) for name, value in theta0.items()}
        self.models = 0

    def add(self, fisher: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> None:
        """One model: its Fisher and its scaled task vector ``lam_i * tau_i``."""
        for name in self.theta0:
            weight = fisher[name] + self.floor
            self.numerator[name].addcmul_(weight, delta[name])
            self.denominator[name].add_(weight)
        self.models += 1

    def merged(self) -> ParamDict:
        if self.models == 0:
            raise ValueError("no model was added to the Fisher merge")
        return {name: base + self.numerator[name] / self.denominator[name] for name, base in self.theta0.items()}


def fisher_merge_streamed(
    theta0: Mapping[str, torch.Tensor],
    checkpoints: Iterable[Tuple[int, Mapping[str, torch.Tensor]]],
    coefficients: Sequence[float],
    fisher_at: Callable[[ParamDict], ParamDict],
    floor: float = 1e-12,
) -> ParamDict:
    """The DF-Merge merge for one coefficient vector: for each streamed ``(index, theta_i)``, the
    Fisher ``fisher_at(theta0 + lam_i tau_i)`` weighs ``lam_i tau_i``; one checkpoint alive at a time."""
    accumulator = FisherMergeAccumulator(theta0, floor)
    for index, vertex in checkpoints:
        lam = float(coefficients[index])
        delta = {name: (vertex[name].to(device=base.device, dtype=base.dtype) - base).mul_(lam) for name, base in theta0.items()}
        point = {name: base + delta[name] for name, base in theta0.items()}
        accumulator.add(fisher_at(point), delta)
        del point, delta
    return accumulator.merged()
