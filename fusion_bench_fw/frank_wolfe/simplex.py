"""Euclidean projection onto the probability simplex.

FW-soft keeps its merging coefficients on the simplex (paper §3.3, footnote 2: projected gradient
descent with a projection after every update). The sort-based algorithm is exact and runs batched
over rows, so layer-wise coefficients (one simplex per parameter block) are projected in one call.
"""

from __future__ import annotations

import torch


def project_onto_simplex(values: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    """Project each row of ``values`` (shape ``[..., k]``) onto ``{x >= 0, sum(x) = radius}``.

    Sort descending, find the largest index rho whose shifted value stays positive, shift every
    coordinate by the same threshold and clamp at zero.
    """
    if radius <= 0:
        raise ValueError(f"simplex radius must be positive, got {radius}")
    if values.shape[-1] == 0:
        raise ValueError("cannot project an empty vector onto the simplex")
    sorted_desc, _ = torch.sort(values, dim=-1, descending=True)
    cumulative = sorted_desc.cumsum(dim=-1) - radius
    ranks = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
    positive = sorted_desc - cumulative / ranks > 0
    # rho = last index where the condition holds (always >= 0: the first entry satisfies it)
    rho = positive.to(torch.int64).cumsum(dim=-1).argmax(dim=-1, keepdim=True)
    threshold = cumulative.gather(-1, rho) / (rho + 1).to(values.dtype)
    return torch.clamp(values - threshold, min=0.0)
