"""Soft Frank-Wolfe (paper §3.3, Theorem 1): the selected vertices mixed by simplex coefficients.

One iteration at theta_t:
1. gradients of the total objective and of each objective task; one LMO pass scores every vertex;
2. the FW gap over the set the coefficients can reach (layer-wise coefficients: the product of
   per-block hulls, so the gap's vertex v is stitched per block; model-wise: whole vertices);
3. the points of the inner simplex: theta_t, the top-k vertices of every task's row (the paper's
   task-wise selection, after the descent probe) and v itself, the vertex that certifies the gap;
4. a line search along v - theta_t (a plain FW step): its point is in the simplex, so the
   coefficient search that follows, keeping its best iterate, ends at least as low. That is what
   makes an iteration with a gap above ``gap_tol`` lower the objective, as Frank-Wolfe's theory
   needs; without v (per-task selections only) the search can idle at a large gap;
5. projected Adam (or SGD) on the coefficients, ``torch.optim`` steps followed by a projection
   onto the simplex (one simplex per block for layer-wise coefficients).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Tuple, Union

import torch

from .lmo import fw_gap, select_soft
from .options import SoftOptions
from .params import block_dots, combine
from .reading import assemble
from .records import IterationRecord
from .simplex import project_onto_simplex
from .solver import FrankWolfeBase, SolverState
from .step_size import LineSearch, SlopeLineSearch

# coefficient-gradient entries below this fraction of the largest are rounding noise (float32 sums)
NOISE_FLOOR = 1e-6


@dataclass
class FrankWolfeSoft(FrankWolfeBase):
    """Soft FW: top-k vertices plus the gap's vertex, coefficients on the simplex.

    ``include_current`` adds theta_t as a point of the inner simplex, so
    theta_{t+1} = l_0 theta_t + sum_j l_j s_j (l in the simplex) and every step is a descent step.
    ``include_current=False`` is the paper's eq. 9 verbatim (sum_j l_j = 1 over the selected
    vertices only); it has no FW step to fall back on, so its progress is not guaranteed.
    """

    options: SoftOptions = field(default_factory=SoftOptions)
    # the FW step's line search; None = the one options.fw_step_search names (default: quadratic)
    line_search: Optional[Union[LineSearch, SlopeLineSearch]] = None

    @property
    def gap_granularity(self) -> str:
        # per-layer coefficients reach the product of per-block hulls, where the task-wise gap can be
        # negative; the block-wise gap is the FW gap of that set (always >= 0 there)
        return "layer" if self.options.coefficients == "layer" else self.options.granularity

    def step(self, state: SolverState) -> IterationRecord:
        theta, options = state.theta, self.options
        evaluated, scores, timings = self.gradients_and_scores(theta, per_task=options.per_task_selection)
        selection_rows = [key for key in scores.grad_dots if key != "total"] or ["total"]
        clock = time.perf_counter()
        directions, rejected = self.probed_selections(
            state, evaluated, lambda excluded: select_soft(scores, options.granularity, options.score, options.topk, selection_rows, excluded)
        )
        gap_vertex = self.gap_vertex(scores)
        record = IterationRecord(
            fw_gap=fw_gap(scores, gap_vertex), loss_before=evaluated.loss, loss_after=evaluated.loss,
            selected=[self.describe_selection(d) for d in directions], rejected=rejected, **timings,
        )
        record.details["gap_vertex"] = self.describe_selection(gap_vertex, self.gap_granularity)
        # where the rest of the iteration's time goes (the cost benchmarks read these)
        phases = record.details["time_phases_s"] = {"selection_probe": time.perf_counter() - clock}
        if record.fw_gap <= options.gap_tol:
            record.converged = True
            return record
        # the gap's vertex joins the selections unless one of them already is it (gap_index: its
        # position among the selections; None only in the ablation without it)
        gap_index = next((j for j, d in enumerate(directions) if torch.equal(d, gap_vertex)), None)
        offered = options.offer_gap_vertex and gap_index is None
        selections = directions + [gap_vertex] if offered else directions
        if offered:
            gap_index = len(directions)
        clock = time.perf_counter()
        vertices = assemble(self.source, selections, self.block_names, theta)
        phases["assemble"] = time.perf_counter() - clock
        points = ([theta] if options.include_current else []) + vertices
        point_weights = ([state.weights] if options.include_current else []) + [self.selection_onehot(d) for d in selections]
        fw_start, fw_loss = None, math.inf
        if options.include_current and gap_index is not None:
            column = 1 + gap_index  # theta_t is point 0
            clock = time.perf_counter()
            fw_start, fw_loss = self._fw_step(points, column, evaluated.loss, record.fw_gap)
            phases["fw_step"] = time.perf_counter() - clock
            record.details.update(fw_step_size=float(fw_start[0, column]), loss_fw_step=fw_loss)
        clock = time.perf_counter()
        lam, record.loss_after = self.optimize_coefficients(points, evaluated.loss, fw_start, fw_loss)
        phases["coefficients"] = time.perf_counter() - clock
        state.theta = combine(points, lam, self.block_names)
        rows_lam = lam if lam.shape[0] > 1 else lam.expand(len(self.block_names), -1)
        state.weights = sum(rows_lam[:, j : j + 1] * w for j, w in enumerate(point_weights))
        labels = (["current"] if options.include_current else []) + [str(self.describe_selection(d)) for d in directions]
        labels += ["gap vertex"] if offered else []
        record.details["coefficients"] = {label: round(float(v), 6) for label, v in zip(labels, lam.mean(0))}
        if lam.shape[0] > 1 and self.record_per_block:
            record.details["coefficients_per_block"] = [[round(float(v), 6) for v in row] for row in lam]
        self.progress(record, monotone=options.include_current)
        return record

    def _fw_step(self, points, column: int, loss_current: float, gap: float) -> Tuple[torch.Tensor, float]:
        """Line search from theta_t (point 0) toward point ``column`` (the gap's vertex, so the slope
        at theta_t is minus the FW gap); its coefficients and loss."""
        theta, target = points[0], points[column]

        def loss_at(gamma: float) -> float:
            return self.objective.loss({name: theta[name] + gamma * (target[name] - theta[name]) for name in self.block_names})

        search = self.line_search or self.options.make_fw_step_search()
        gamma, loss = search.choose(0, loss_at, loss_current, slope=-gap)
        rows = len(self.block_names) if self.options.coefficients == "layer" else 1
        start = torch.zeros((rows, len(points)), dtype=torch.float64)
        start[:, 0] = 1.0 - gamma
        start[:, column] += gamma
        return start, loss  # the line search returns loss_current itself when gamma = 0

    def optimize_coefficients(self, points: Sequence[Mapping[str, torch.Tensor]], loss_current: float, fw_start: Optional[torch.Tensor] = None, fw_loss: float = math.inf):
        """The coefficient search; returns the best point seen, never worse than the FW step's.

        ``inner_init="uniform"`` starts from the uniform mix, which takes large steps early on (with
        ``inner_restart``, a search that ends above the FW step's point is followed by a second one
        from there). ``"fw_step"`` and ``"current"`` search once, from that point or from theta_t."""
        m, options = len(points), self.options
        rows = len(self.block_names) if options.coefficients == "layer" else 1
        best_lam, best_loss = (fw_start, fw_loss) if fw_start is not None else (None, math.inf)
        at_current = torch.zeros((rows, m), dtype=torch.float64)
        at_current[:, 0] = 1.0
        if options.include_current and loss_current < best_loss:
            best_lam, best_loss = at_current, loss_current
        uniform = torch.full((rows, m), 1.0 / m, dtype=torch.float64)
        restart = [best_lam] if options.inner_restart else []  # validated: only with include_current
        starts = {"uniform": [uniform] + restart, "fw_step": [best_lam], "current": [at_current]}[options.inner_init]
        for start in starts:
            lam, loss = self.projected_descent(points, start)
            if loss < best_loss:
                best_lam, best_loss = lam, loss
            if best_loss < fw_loss:
                break  # improved on the FW step: no second search
        return best_lam, best_loss

    def projected_descent(self, points: Sequence[Mapping[str, torch.Tensor]], start: torch.Tensor):
        """``inner_steps`` optimizer steps from ``start``, each projected onto the simplex; returns the
        best iterate seen and its loss."""
        lam = start.clone().requires_grad_(True)
        lr = self.options.inner_lr
        optimizer = torch.optim.Adam([lam], lr=lr) if self.options.inner_optimizer == "adam" else torch.optim.SGD([lam], lr=lr)
        best_loss, best_lam = math.inf, start.clone()
        for _ in range(self.options.inner_steps):
            evaluated = self.objective.loss_and_grad(combine(points, lam.detach(), self.block_names))
            if evaluated.loss < best_loss:
                best_loss, best_lam = evaluated.loss, lam.detach().clone()
            # d loss / d lam[b, j] = <g_b, p_j,b>; rows are centred because a shift common to a row
            # does not change the simplex projection but would distort Adam's scale estimates
            grad = torch.stack([block_dots(evaluated.grad, p, self.block_names) for p in points], dim=1)
            del evaluated
            if lam.shape[0] == 1:
                grad = grad.sum(0, keepdim=True)
            grad = grad - grad.mean(dim=1, keepdim=True)
            # entries at float32 rounding level of the largest carry no signal (e.g. attention key
            # biases, whose true gradient is 0); Adam's per-entry scaling would turn their noise
            # into full-size steps and an arbitrary, run-dependent merge of those blocks
            grad[grad.abs() <= NOISE_FLOOR * grad.abs().max()] = 0.0
            lam.grad = grad
            optimizer.step()
            with torch.no_grad():
                lam.copy_(project_onto_simplex(lam))
        final = lam.detach()
        final_loss = self.objective.loss(combine(points, final, self.block_names))
        if final_loss < best_loss:
            best_loss, best_lam = final_loss, final.clone()
        return best_lam, best_loss
