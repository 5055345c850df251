"""The linear minimization oracle's maths: scores, selections and the FW gap from one pass's tables.

A reading pass (``reading.py``) leaves, for every candidate vertex s_i and parameter block b, the
inner products <g_b, s_i,b> for each gradient row (the total objective and, optionally, each task)
and, for the cosine score, <s_i,b, s_i,b> and <s_i,b, theta_b>. Everything here works on those
tables only, so it is the same whichever way the checkpoints were read:

* ``inner_product`` score of block b: <g_b, s_b - theta_b>   (eq. 7 / eq. 10, exact)
* ``cosine`` score of block b: cos(g_b, s_b - theta_b)       (heuristic of the upstream code)

Task-wise selection sums block scores over blocks; layer-wise (block-coordinate) selection picks
per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

SCORES = ("inner_product", "cosine")
GRANULARITIES = ("task", "layer")


@dataclass
class VertexScores:
    """Everything one LMO pass learned; tensors are float64, shape ``[n_vertices, n_blocks]``."""

    grad_dots: Dict[str, torch.Tensor]  # row key -> <g_b, s_i,b>
    theta_grad_dots: Dict[str, torch.Tensor]  # row key -> <g_b, theta_b>, shape [n_blocks]
    # the norms below serve only the cosine score: None unless score_vertices(..., with_norms=True)
    grad_sq: Optional[Dict[str, torch.Tensor]]  # row key -> ||g_b||^2, shape [n_blocks]
    vertex_sq: Optional[torch.Tensor]  # ||s_i,b||^2
    vertex_theta: Optional[torch.Tensor]  # <s_i,b, theta_b>
    theta_sq: Optional[torch.Tensor]  # ||theta_b||^2, shape [n_blocks]

    @property
    def num_vertices(self) -> int:
        return next(iter(self.grad_dots.values())).shape[0]

    def block_scores(self, kind: str, row: str = "total") -> torch.Tensor:
        """Per-vertex, per-block LMO score (lower = better descent direction)."""
        linear = self.grad_dots[row] - self.theta_grad_dots[row].unsqueeze(0)
        if kind == "inner_product":
            return linear
        if kind == "cosine":
            if self.vertex_sq is None or self.vertex_theta is None or self.grad_sq is None or self.theta_sq is None:
                raise ValueError("cosine scores need the vertex norms: call score_vertices(..., with_norms=True)")
            dist_sq = (self.vertex_sq - 2 * self.vertex_theta + self.theta_sq.unsqueeze(0)).clamp_min(0)
            denom = (dist_sq * self.grad_sq[row].unsqueeze(0)).sqrt().clamp_min(1e-30)
            return linear / denom
        raise ValueError(f"unknown LMO score {kind!r}; allowed: {', '.join(SCORES)}")

    def linear_terms(self, row: str = "total") -> torch.Tensor:
        """<g_b, s_i,b - theta_b>: the exact first-order change of the objective, per block."""
        return self.block_scores("inner_product", row)


def with_combined_row(scores: VertexScores, key: str, weights: Mapping[str, float], grad_sq: Optional[torch.Tensor] = None) -> VertexScores:
    """``scores`` plus a row ``key`` = sum_r weights[r] * row r, without reading any vertex again:
    <sum_r w_r g_r, s> = sum_r w_r <g_r, s> (FW-soft's total gradient is the weighted sum of its
    per-task rows, so its pass reads the vertices against one row fewer). ``grad_sq`` (its per-block
    squared norm) is not a function of the rows' tables: give it when the norms are kept (cosine)."""

    def combine(table: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(float(w) * table[row] for row, w in weights.items())

    if scores.grad_sq is not None and grad_sq is None:
        raise ValueError(f"row {key!r}: these scores keep the norms (cosine), so its grad_sq must be given")
    return VertexScores(
        grad_dots={**scores.grad_dots, key: combine(scores.grad_dots)},
        theta_grad_dots={**scores.theta_grad_dots, key: combine(scores.theta_grad_dots)},
        grad_sq=None if scores.grad_sq is None else {**scores.grad_sq, key: grad_sq.to(torch.float64)},
        vertex_sq=scores.vertex_sq,
        vertex_theta=scores.vertex_theta,
        theta_sq=scores.theta_sq,
    )


def exclude_vertices(block: torch.Tensor, excluded: Iterable[int]) -> torch.Tensor:
    """Scores with excluded vertices pushed to +inf, so no selection rule can pick them."""
    excluded = list(excluded)
    if not excluded:
        return block
    block = block.clone()
    block[excluded] = float("inf")
    return block


def select_hard(scores: VertexScores, granularity: str, score: str, excluded: Iterable[int] = (), row: str = "total") -> torch.Tensor:
    """Winning vertex index per block (shape ``[n_blocks]``): argmin of the LMO score of ``row``."""
    block = exclude_vertices(scores.block_scores(score, row), excluded)
    if granularity == "task":
        winner = int(block.sum(dim=1).argmin())
        return torch.full((block.shape[1],), winner, dtype=torch.long)
    if granularity == "layer":
        return block.argmin(dim=0)
    raise ValueError(f"unknown LMO granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}")


def select_soft(scores: VertexScores, granularity: str, score: str, k: int, rows: Sequence[str], excluded: Iterable[int] = ()) -> List[Tuple[torch.Tensor, List[str]]]:
    """Top-k directions, each a per-block vertex index vector, with the rows that chose it.

    With several gradient rows (one per objective task) each row contributes its own top-k and the
    union is kept in order, without duplicates: the paper's task-wise top-k for multi-task objectives.
    """
    excluded = list(excluded)
    k = min(k, scores.num_vertices - len(excluded))
    directions: List[Tuple[torch.Tensor, List[str]]] = []
    seen: Dict[tuple, List[str]] = {}
    for row in rows:
        block = exclude_vertices(scores.block_scores(score, row), excluded)
        if granularity == "task":
            order = block.sum(dim=1).argsort()[:k]
            candidates = [torch.full((block.shape[1],), int(i), dtype=torch.long) for i in order]
        elif granularity == "layer":
            order = block.argsort(dim=0)[:k]  # [k, n_blocks]
            candidates = [order[j].clone() for j in range(order.shape[0])]
        else:
            raise ValueError(f"unknown LMO granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}")
        for candidate in candidates:
            key = tuple(candidate.tolist())
            if key in seen:
                seen[key].append(row)
            else:
                seen[key] = [row]
                directions.append((candidate, seen[key]))
    return directions


def fw_gap(scores: VertexScores, selection: torch.Tensor, row: str = "total") -> float:
    """FW gap <-g, s - theta> (eq. 4) for a stitched vertex given by per-block indices."""
    linear = scores.linear_terms(row)
    return float(-linear.gather(0, selection.unsqueeze(0)).sum())


