"""Small operations on parameter dictionaries (name -> tensor), the engine's notion of a point.

The engine treats a model as an ordered set of blocks (one per parameter tensor); everything the
LMO needs is a handful of per-block inner products, computed here in float64 for stable sums.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import torch

ParamDict = Dict[str, torch.Tensor]


def block_dots(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """Per-block inner products ``<a_b, b_b>`` as a float64 CPU vector of length ``len(names)``.

    The products run in the tensors' own dtype (no float64 copies of whole models: the LMO pass is
    memory-bound) and only the per-block results are widened.
    """
    dots = []
    for name in names:
        x = a[name]
        y = b[name]
        if y.device != x.device or y.dtype != x.dtype:
            y = y.to(device=x.device, dtype=x.dtype, non_blocking=True)
        dots.append(torch.dot(x.reshape(-1), y.reshape(-1)))
    # one device->host transfer per call, not one per block
    return torch.stack(dots).to(device="cpu", dtype=torch.float64)


def combine(points: Sequence[Mapping[str, torch.Tensor]], coefficients: torch.Tensor, names: Sequence[str]) -> ParamDict:
    """``sum_j coefficients[b, j] * points[j][b]`` for every block ``b``.

    ``coefficients`` has shape ``[num_blocks, len(points)]`` or ``[1, len(points)]`` (one set of
    coefficients shared by all blocks).
    """
    shared = coefficients.shape[0] == 1
    out: ParamDict = {}
    for index, name in enumerate(names):
        row = coefficients[0 if shared else index]
        reference = points[0][name]
        acc = torch.zeros_like(reference)
        for j, point in enumerate(points):
            weight = float(row[j])
            if weight != 0.0:
                acc.add_(point[name].to(reference.device), alpha=weight)
        out[name] = acc
    return out
