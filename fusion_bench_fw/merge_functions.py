"""Merge functions for hard FW: how theta_{t+1} is formed from theta_t, the LMO vertex s_t and gamma.

``convex`` - (1 - gamma) theta_t + gamma s_t: stays in the convex hull; handled inside the engine.
``ties``   - TIES-merging (FusionBench's implementation: trim, elect sign, disjoint sum) of the two
             scaled task vectors (1 - gamma)(theta_t - theta_0) and gamma (s_t - theta_0), added to
             theta_0. It may leave the hull (paper Fig. 4b), so the convex weights become inexact.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from fusion_bench.method.ties_merging.ties_merging_utils import ties_merging


def ties_merge_fn(theta0, block_names: Sequence[str], threshold: float):
    """Build the engine's ``merge_fn(theta, target, gamma)`` for TIES, with theta_0 bound."""

    def merge(theta, target, gamma):
        current = parameters_to_vector([theta[n] - theta0[n] for n in block_names])
        proposal = parameters_to_vector([target[n] - theta0[n] for n in block_names])
        stacked = torch.stack([(1.0 - gamma) * current, gamma * proposal])
        merged = ties_merging(stacked, reset_thresh=threshold, merge_func="sum")
        out = {n: torch.empty_like(theta0[n]) for n in block_names}
        vector_to_parameters(merged, [out[n] for n in block_names])
        return {n: theta0[n] + out[n] for n in block_names}

    return merge
