"""The Frank-Wolfe iterations: hard (Algorithm 1) and soft (§3.3, Theorem 1).

Pure torch: the objective and the checkpoints are passed in behind two small protocols, so the
same code runs on a least-squares toy in the tests and on a CLIP model in FusionBench.

Beside theta_t the solver keeps its exact convex-combination weights over the vertex labels
(pretrained + every candidate, one row per parameter block): W[b, v]. A hard step is
W <- (1 - gamma) W + gamma e_{s_t}; a soft step is W <- sum_j lambda_j W_j. The trajectory reports
them so a merge reads as "0.41 x gtsrb + 0.22 x dtd + ...".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import torch

from .lmo import BLOCK_GROUP, GRANULARITIES, SCORES, VertexSource, assemble, fw_gap, score_vertices, select_hard, select_soft, with_combined_row
from .params import ParamDict, block_dots, combine
from .simplex import project_onto_simplex


@dataclass
class LossAndGrad:
    loss: float
    grad: ParamDict
    task_grads: Optional[Dict[str, ParamDict]] = None
    task_losses: Optional[Dict[str, float]] = None
    # grad == sum_t task_weights[t] * task_grads[t]: the LMO then derives the total row's products
    # from the task rows' instead of reading every vertex against one more gradient row
    task_weights: Optional[Dict[str, float]] = None


class Objective(Protocol):
    task_names: Sequence[str]

    def loss(self, params: Mapping[str, torch.Tensor]) -> float:
        ...

    def loss_and_grad(self, params: Mapping[str, torch.Tensor], per_task: bool = False) -> LossAndGrad:
        ...


MergeFn = Callable[[ParamDict, ParamDict, float], ParamDict]


@dataclass
class SolverState:
    """What an iteration leaves behind; enough to resume or to report."""

    theta: ParamDict
    weights: torch.Tensor  # [n_blocks, n_labels], float64
    weights_exact: bool
    iteration: int = 0
    trajectory: List[Dict[str, Any]] = field(default_factory=list)
    stop_reason: Optional[str] = None


@dataclass
class FrankWolfeBase:
    objective: Objective
    source: VertexSource
    block_names: Sequence[str]
    labels: Sequence[str]  # weight columns; candidates map to ``vertex_columns``
    vertex_columns: Sequence[int]
    granularity: str = "task"
    score: str = "inner_product"
    max_iters: int = 10
    gap_tol: float = 0.0
    on_iteration: Optional[Callable[[Dict[str, Any], SolverState], None]] = None
    # data parallelism: this process scores vertices rank::world_size of the LMO; all_reduce sums
    shard: Tuple[int, int] = (0, 1)
    all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    # descent probe before a vertex is used: l(theta + probe_step (s - theta)) must not exceed
    # l(theta), else the vertex is skipped in this iteration and the next best one is taken. Guards
    # against checkpoints far from everything (e.g. another initialization), whose huge linear term
    # wins the LMO although any real step towards them hurts. 0 disables it (the paper's plain LMO).
    probe_step: float = 0.05
    max_probe_rounds: int = 3
    # vertices scored together per parameter block when the source supports it (see score_vertices):
    # extra memory grows with this group, never with the number of vertices
    lmo_block_group: int = BLOCK_GROUP

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"unknown granularity {self.granularity!r}; allowed: {', '.join(GRANULARITIES)}")
        if self.score not in SCORES:
            raise ValueError(f"unknown LMO score {self.score!r}; allowed: {', '.join(SCORES)}")
        if len(self.vertex_columns) != len(self.source.names):
            raise ValueError("vertex_columns must map every candidate vertex to a weight column")

    # --- shared pieces -------------------------------------------------------------------------
    def run(self, state: SolverState) -> SolverState:
        block_sizes = torch.tensor([state.theta[name].numel() for name in self.block_names], dtype=torch.float64)
        while state.iteration < self.max_iters:
            started = time.perf_counter()
            record = self.step(state)
            record["iteration"] = state.iteration
            record["time_s"] = time.perf_counter() - started
            record["weights"] = self.summarize_weights(state.weights, block_sizes)
            record["weights_exact"] = state.weights_exact
            if self.granularity == "layer":
                record["weights_per_block"] = {
                    name: [round(float(w), 6) for w in row] for name, row in zip(self.block_names, state.weights)
                }
            state.trajectory.append(record)
            if record.get("stopped"):
                state.stop_reason = f"FW gap {record['fw_gap']:.3e} <= gap_tol {self.gap_tol:g}"
            else:
                state.iteration += 1
                if record.get("stalled"):
                    state.stop_reason = "stalled: no point of conv{theta_t, selected vertices} lowers the objective"
            if self.on_iteration is not None:
                self.on_iteration(record, state)
            if state.stop_reason is not None:
                break
        if state.stop_reason is None:
            state.stop_reason = f"reached max_iters={self.max_iters}"
        return state

    def summarize_weights(self, weights: torch.Tensor, block_sizes: torch.Tensor) -> Dict[str, float]:
        """Parameter-count-weighted average of the per-block weights, per label."""
        overall = (weights * block_sizes.unsqueeze(1)).sum(0) / block_sizes.sum()
        return {label: round(float(w), 6) for label, w in zip(self.labels, overall)}

    def selection_onehot(self, selection: torch.Tensor) -> torch.Tensor:
        onehot = torch.zeros(len(self.block_names), len(self.labels), dtype=torch.float64)
        columns = torch.tensor(self.vertex_columns, dtype=torch.long)[selection]
        onehot[torch.arange(len(self.block_names)), columns] = 1.0
        return onehot

    def describe_selection(self, selection: torch.Tensor):
        """Task-wise: the model name. Layer-wise: blocks won per model."""
        names = self.source.names
        if self.granularity == "task":
            return names[int(selection[0])]
        counts: Dict[str, int] = {}
        for index in selection.tolist():
            counts[names[index]] = counts.get(names[index], 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def step(self, state: SolverState) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def admissible(self, state: SolverState, before: LossAndGrad, select: Callable[[List[int]], List[Tuple[torch.Tensor, List[str]]]]) -> Tuple[List[torch.Tensor], List[str]]:
        """Selections whose every vertex passes the descent probe; returns them and the rejected names.

        ``select(excluded)`` runs the selection rule without the given vertices and returns
        (per-block vertex indices, gradient rows that chose them). Each distinct vertex is probed
        along the blocks it was selected for, with one forward pass over the objective data: the
        step must not raise the total objective. (Probing only the loss of the task that chose a
        vertex was tried and let a randomly initialized checkpoint through on a poorly learned
        task.) If no admissible choice is left, the plain selection is kept: the probe only
        reorders the LMO's choices.
        """
        excluded: List[int] = []
        first = selections = select(excluded)
        if self.probe_step <= 0:
            return [s for s, _ in selections], []
        verdicts: Dict[int, bool] = {}
        for _ in range(self.max_probe_rounds):
            newly_rejected = []
            for vertex in dict.fromkeys(int(i) for s, _ in selections for i in s.tolist()):
                if vertex not in verdicts:
                    verdicts[vertex] = self._descends(state, before, vertex, selections)
                if not verdicts[vertex]:
                    newly_rejected.append(vertex)
            if not newly_rejected:
                return [s for s, _ in selections], [self.source.names[v] for v in excluded]
            excluded.extend(newly_rejected)
            if len(excluded) >= len(self.source.names):
                break
            selections = select(excluded)
            if not selections:
                break
        return [s for s, _ in first], []

    def _descends(self, state: SolverState, before: LossAndGrad, vertex: int, selections) -> bool:
        mask = [any(int(s[b]) == vertex for s, _ in selections) for b in range(len(self.block_names))]
        (point,) = assemble(self.source, [torch.full((len(self.block_names),), vertex, dtype=torch.long)], self.block_names, state.theta)
        probe = {
            name: state.theta[name] + self.probe_step * (point[name] - state.theta[name]) if mask[b] else state.theta[name]
            for b, name in enumerate(self.block_names)
        }
        del point
        return self.objective.loss(probe) <= before.loss


@dataclass
class FrankWolfeHard(FrankWolfeBase):
    """Algorithm 1: s_t = argmin LMO, theta_{t+1} = MergeFn(theta_t, s_t, gamma_t)."""

    step_rule: Any = None  # a step_size rule object
    merge_fn: Optional[MergeFn] = None  # None: convex combination (exact weights)

    def step(self, state: SolverState) -> Dict[str, Any]:
        theta = state.theta
        clock = time.perf_counter()
        evaluated = self.objective.loss_and_grad(theta)
        timings = {"time_gradient_s": time.perf_counter() - clock}
        clock = time.perf_counter()
        scores = score_vertices(self.source, theta, {"total": evaluated.grad}, self.block_names, self.shard, self.all_reduce, with_norms=self.score == "cosine", block_group=self.lmo_block_group)
        timings["time_lmo_s"] = time.perf_counter() - clock
        del evaluated.grad
        (selection,), rejected = self.admissible(state, evaluated, lambda excluded: [(select_hard(scores, self.granularity, self.score, excluded), ["total"])])
        gap = fw_gap(scores, select_hard(scores, self.granularity, self.score))  # over all vertices
        record: Dict[str, Any] = {
            "selected": self.describe_selection(selection),
            "rejected": rejected,
            "fw_gap": gap,
            "loss_before": evaluated.loss,
            "stopped": False,
            **timings,
        }
        if gap <= self.gap_tol:
            record.update(stopped=True, loss_after=evaluated.loss, step_size=0.0)
            return record
        (vertex,) = assemble(self.source, [selection], self.block_names, theta)
        direction = {name: vertex[name] - theta[name] for name in self.block_names}
        del vertex

        def loss_at(gamma: float) -> float:
            return self.objective.loss({name: theta[name] + gamma * direction[name] for name in self.block_names})

        gamma, loss_after = self.step_rule.choose(state.iteration, loss_at, evaluated.loss)
        if self.merge_fn is None:
            state.theta = {name: theta[name] + gamma * direction[name] for name in self.block_names}
        else:
            target = {name: theta[name] + direction[name] for name in self.block_names}
            state.theta = self.merge_fn(theta, target, gamma)
            state.weights_exact = False
            loss_after = None
        if loss_after is None:
            loss_after = self.objective.loss(state.theta)
        state.weights = (1.0 - gamma) * state.weights + gamma * self.selection_onehot(selection)
        record.update(step_size=gamma, loss_after=loss_after)
        return record


INNER_INITS = ("current", "uniform")


@dataclass
class FrankWolfeSoft(FrankWolfeBase):
    """Soft FW: top-k vertices, coefficients on the simplex by projected gradient descent.

    ``include_current`` adds theta_t itself as a point of the inner simplex, so
    theta_{t+1} = l_0 theta_t + sum_j l_j s_j (l in the simplex); keeping theta_t feasible makes
    every step a descent step. ``include_current=False`` is the paper's eq. 9 verbatim
    (sum_j l_j = 1 over the top-k vertices only).
    """

    topk: int = 1
    per_task_selection: bool = True
    coefficients: str = "layer"  # "layer": one simplex per block, "model": one shared simplex
    inner_steps: int = 20
    inner_lr: float = 0.05
    inner_optimizer: str = "adam"
    include_current: bool = True
    # where the coefficient search starts: "uniform" mix (then theta_t if that fails), or "current" = theta_t
    inner_init: str = "uniform"

    def __post_init__(self):
        super().__post_init__()
        if self.inner_init not in INNER_INITS:
            raise ValueError(f"unknown inner_init {self.inner_init!r}; allowed: {', '.join(INNER_INITS)}")
        if self.inner_init == "current" and not self.include_current:
            raise ValueError("inner_init='current' needs include_current=True (theta_t must be a point of the inner simplex)")
        if self.topk < 1:
            raise ValueError(f"topk must be >= 1, got {self.topk}")
        if self.coefficients not in ("layer", "model"):
            raise ValueError(f"unknown coefficients {self.coefficients!r}; allowed: layer, model")
        if self.inner_optimizer not in ("adam", "sgd"):
            raise ValueError(f"unknown inner_optimizer {self.inner_optimizer!r}; allowed: adam, sgd")

    def step(self, state: SolverState) -> Dict[str, Any]:
        theta = state.theta
        per_task = self.per_task_selection and len(self.objective.task_names) > 1
        clock = time.perf_counter()
        evaluated = self.objective.loss_and_grad(theta, per_task=per_task)
        timings = {"time_gradient_s": time.perf_counter() - clock}
        task_rows = {f"task:{task}": grad for task, grad in (evaluated.task_grads or {}).items()} if per_task else {}
        weights = evaluated.task_weights or {}
        derive_total = bool(task_rows) and set(weights) == set(evaluated.task_grads)
        rows: Dict[str, ParamDict] = task_rows if derive_total else {"total": evaluated.grad, **task_rows}
        clock = time.perf_counter()
        cosine = self.score == "cosine"
        scores = score_vertices(self.source, theta, rows, self.block_names, self.shard, self.all_reduce, with_norms=cosine, block_group=self.lmo_block_group)
        if derive_total:
            total_sq = block_dots(evaluated.grad, evaluated.grad, self.block_names) if cosine else None
            scores = with_combined_row(scores, "total", {f"task:{task}": w for task, w in weights.items()}, total_sq)
        timings["time_lmo_s"] = time.perf_counter() - clock
        del rows, evaluated.grad, evaluated.task_grads
        selection_rows = [key for key in scores.grad_dots if key != "total"] or ["total"]
        directions, rejected = self.admissible(
            state, evaluated, lambda excluded: select_soft(scores, self.granularity, self.score, self.topk, selection_rows, excluded)
        )
        # per-layer coefficients put theta_t in the product of per-block hulls, where the task-wise gap
        # can be negative; the block-wise gap is the FW gap of that set (always >= 0 there)
        gap_granularity = "layer" if self.coefficients == "layer" else self.granularity
        gap = fw_gap(scores, select_hard(scores, gap_granularity, "inner_product"))
        record: Dict[str, Any] = {
            "selected": [self.describe_selection(d) for d in directions],
            "rejected": rejected,
            "fw_gap": gap,
            "loss_before": evaluated.loss,
            "stopped": False,
            **timings,
        }
        if gap <= self.gap_tol:
            record.update(stopped=True, loss_after=evaluated.loss, coefficients=None)
            return record
        vertices = assemble(self.source, directions, self.block_names, theta)
        points = ([theta] if self.include_current else []) + vertices
        point_weights = ([state.weights] if self.include_current else []) + [self.selection_onehot(d) for d in directions]
        lam, loss_after = self.optimize_coefficients(points, evaluated.loss)
        state.theta = combine(points, lam, self.block_names)
        rows_lam = lam if lam.shape[0] > 1 else lam.expand(len(self.block_names), -1)
        state.weights = sum(rows_lam[:, j : j + 1] * w for j, w in enumerate(point_weights))
        point_labels = (["current"] if self.include_current else []) + [str(self.describe_selection(d)) for d in directions]
        if lam.shape[0] == 1:
            record["coefficients"] = {label: round(float(v), 6) for label, v in zip(point_labels, lam[0])}
        else:
            mean = lam.mean(0)
            record["coefficients"] = {label: round(float(v), 6) for label, v in zip(point_labels, mean)}
            record["coefficients_per_block"] = [[round(float(v), 6) for v in row] for row in lam]
        record["loss_after"] = loss_after
        # theta_t kept all the weight: the samples are fixed, so the next iteration would repeat this one
        record["stalled"] = bool(self.include_current and not loss_after < evaluated.loss)
        return record

    def optimize_coefficients(self, points: Sequence[Mapping[str, torch.Tensor]], loss_current: float):
        """Projected (Adam or plain) gradient descent on the simplex; returns the best iterate.

        ``inner_init="uniform"`` starts from the uniform mix, which takes large steps early on; when
        that search ends above l(theta_t) (theta_t is already a good mix) and theta_t is a point of
        the simplex, a second search starts at theta_t itself, before the iteration counts as stalled.
        ``"current"`` only does the second kind of search."""
        m = len(points)
        rows = len(self.block_names) if self.coefficients == "layer" else 1
        at_current = torch.zeros((rows, m), dtype=torch.float64)
        at_current[:, 0] = 1.0
        starts = [torch.full((rows, m), 1.0 / m, dtype=torch.float64)] if self.inner_init == "uniform" else []
        if self.include_current:
            starts.append(at_current)
        best_lam, best_loss = at_current, loss_current if self.include_current else math.inf
        for start in starts:
            lam, loss = self.projected_descent(points, start)
            if loss < best_loss:
                best_lam, best_loss = lam, loss
                break  # improved on theta_t: no second search
        return best_lam, best_loss

    def projected_descent(self, points: Sequence[Mapping[str, torch.Tensor]], lam: torch.Tensor):
        """``inner_steps`` projected steps from ``lam``; the best iterate seen and its loss."""
        best_loss, best_lam = math.inf, lam.clone()
        moment1 = torch.zeros_like(lam)
        moment2 = torch.zeros_like(lam)
        for step in range(1, self.inner_steps + 1):
            evaluated = self.objective.loss_and_grad(combine(points, lam, self.block_names))
            if evaluated.loss < best_loss:
                best_loss, best_lam = evaluated.loss, lam.clone()
            # d loss / d lam[b, j] = <g_b, p_j,b>; rows are centred because a shift common to a row
            # does not change the simplex projection but would distort Adam's scale estimates.
            grad = torch.stack([block_dots(evaluated.grad, p, self.block_names) for p in points], dim=1)
            del evaluated
            if lam.shape[0] == 1:
                grad = grad.sum(0, keepdim=True)
            grad = grad - grad.mean(dim=1, keepdim=True)
            if self.inner_optimizer == "adam":
                moment1.mul_(0.9).add_(grad, alpha=0.1)
                moment2.mul_(0.999).addcmul_(grad, grad, value=0.001)
                update = (moment1 / (1 - 0.9**step)) / ((moment2 / (1 - 0.999**step)).sqrt() + 1e-8)
            else:
                update = grad
            lam = project_onto_simplex(lam - self.inner_lr * update)
        final_loss = self.objective.loss(combine(points, lam, self.block_names))
        if final_loss < best_loss:
            best_loss, best_lam = final_loss, lam
        return best_lam, best_loss
