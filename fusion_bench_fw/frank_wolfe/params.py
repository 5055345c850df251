"""Small operations on parameter dictionaries (name -> tensor), the engine's notion of a point.

The engine treats a model as an ordered set of blocks (one per parameter tensor); everything the
LMO needs is a handful of per-block inner products, computed here in float64 for stable sums.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import torch

ParamDict = Dict[str, torch.Tensor]


# bfloat16/float16 products are widened to float32: torch.dot on such tensors rounds its result to
# the input dtype (relative error ~2e-3 on a 20M-element bfloat16 block, enough to reorder close LMO
# scores) and on the CPU it also ran ~5x slower here than copying 256K-element chunks into reused
# float32 buffers and dotting those (the chunks stay in cache; a whole-block float32 copy does not)
REDUCED_PRECISION = (torch.bfloat16, torch.float16)
WIDEN_CHUNK_CPU = 1 << 18
WIDEN_CHUNK_DEVICE = 1 << 24  # few kernel launches; float32 chunks of 64 MiB


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype products of ``dtype`` tensors run in: float32 for the half-precision types."""
    return torch.float32 if dtype in REDUCED_PRECISION else dtype


def _widened_dot(x: torch.Tensor, y: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """<x, y> of two flat half-precision tensors, chunk by chunk through the float32 ``buffer``
    (``[2, chunk]``, on their device), summed in float64."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    chunk, n = buffer.shape[1], x.numel()
    for start in range(0, n, chunk):
        w = min(chunk, n - start)
        total += torch.dot(buffer[0, :w].copy_(x[start : start + w]), buffer[1, :w].copy_(y[start : start + w]))
    return total


def block_dots(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """Per-block inner products ``<a_b, b_b>`` as a float64 CPU vector of length ``len(names)``.

    The products run in the tensors' own dtype, widened to float32 for half precision (no float64
    copies of whole models: the LMO pass is memory-bound); only the per-block results are widened
    to float64.
    """
    dots = []
    buffer = None  # float32 chunks for half-precision blocks, grown to the largest chunk needed
    for name in names:
        x = a[name]
        y = b[name]
        if y.device != x.device or y.dtype != x.dtype:
            y = y.to(device=x.device, dtype=x.dtype, non_blocking=True)
        if x.dtype in REDUCED_PRECISION:
            chunk = min(x.numel(), WIDEN_CHUNK_CPU if x.device.type == "cpu" else WIDEN_CHUNK_DEVICE)
            if buffer is None or buffer.device != x.device or buffer.shape[1] < chunk:
                buffer = torch.empty(2, max(chunk, 1), dtype=torch.float32, device=x.device)
            dots.append(_widened_dot(x.reshape(-1), y.reshape(-1), buffer))
        else:
            dots.append(torch.dot(x.reshape(-1), y.reshape(-1)).double())
    # one device->host transfer per call, not one per block
    return torch.stack(dots).to(device="cpu", dtype=torch.float64) if dots else torch.zeros(0, dtype=torch.float64)


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
