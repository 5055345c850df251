"""Fisher-weighted merging of scaled task vectors, one checkpoint at a time (DF-Merge's merge step).

DF-Merge (arXiv 2504.18992) merges ``theta0 + sum_i F_i * lam_i * tau_i / sum_i F_i`` where
``tau_i = theta_i - theta0`` and ``F_i`` is the diagonal Fisher information of the *scaled* model
``theta0 + lam_i * tau_i`` (not of the fine-tune itself), so a coefficient changes both how far a
model moves the merge and how much say it has per parameter. Two accumulators (numerator and
denominator) make the merge streaming: memory is a fixed number of model copies whatever the
number of checkpoints. Pure torch: no FusionBench import, testable on toy models.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Mapping, Sequence, Tuple

import torch

ParamDict = Dict[str, torch.Tensor]
# batch_loss(params, task, batch) -> the summed negative log-likelihood of the batch's samples
BatchLoss = Callable[[Mapping[str, torch.Tensor], str, Any], torch.Tensor]


def diagonal_fisher(params: Mapping[str, torch.Tensor], batch_loss: BatchLoss, tasks: Sequence[Tuple[str, Sequence[Any], int]]) -> ParamDict:
    """Empirical diagonal Fisher at ``params``: per task, the mean over its samples of the squared
    gradient of the sample's negative log-likelihood; then the mean over tasks (each objective task
    counts alike). ``tasks``: ``(task, batches, num_samples)``. With batches of one sample this is
    the exact empirical Fisher; larger batches square the gradient of a batch's summed loss (cheaper,
    coarser: cross terms between samples stay in)."""
    leaves = {name: value.detach().requires_grad_(True) for name, value in params.items()}  # shares storage: nothing is written to it
    fisher = {name: torch.zeros_like(value) for name, value in leaves.items()}
    for task, batches, num_samples in tasks:
        for batch in batches:
            loss = batch_loss(leaves, task, batch)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            for (name, _), grad in zip(leaves.items(), grads):
                if grad is not None:
                    fisher[name].add_(grad.detach().square(), alpha=1.0 / (num_samples * len(tasks)))
    return fisher


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
