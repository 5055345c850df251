"""The Frank-Wolfe iterations: hard (Algorithm 1) and soft (§3.3, Theorem 1).

Pure torch: the objective and the checkpoints are passed in behind two small protocols, so the
same code runs on a least-squares toy in the tests and on a CLIP model in FusionBench.

Beside theta_t the solver keeps its exact convex-combination weights over the vertex labels
(pretrained + every candidate, one row per parameter block): W[b, v]. A hard step is
W <- (1 - gamma) W + gamma e_{s_t}; a soft step is W <- sum_j lambda_j W_j. The trajectory reports
them so a merge reads as "0.41 x gtsrb + 0.22 x dtd + ...".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Set, Tuple

import torch

from .lmo import fw_gap, select_hard, with_combined_row
from .options import HardOptions, SolverOptions
from .params import ParamDict, block_dots
from .reading import PassOrder, VertexSource, assemble, choose_order, score_vertices
from .records import IterationRecord, StopReason


@dataclass
class LossAndGrad:
    loss: float
    # None only beside task_grads and task_weights: the total is then derived when asked for
    # (total_grad), as the LMO rarely needs it and a model-sized sum costs page faults and time
    grad: Optional[ParamDict]
    task_grads: Optional[Dict[str, ParamDict]] = None
    # grad == sum_t task_weights[t] * task_grads[t]: the LMO then derives the total row's products
    # from the task rows' instead of reading every vertex against one more gradient row
    task_weights: Optional[Dict[str, float]] = None

    def total_grad(self) -> ParamDict:
        """The total gradient, formed from the weighted task rows if the objective left it out."""
        if self.grad is None:
            rows = [(self.task_weights[task], row) for task, row in self.task_grads.items()]
            self.grad = {name: sum(w * row[name] for w, row in rows) for name in rows[0][1]}
        return self.grad


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
    trajectory: List[Dict[str, Any]] = field(default_factory=list)  # IterationRecord.to_json() of each iteration
    stop_reason: Optional[str] = None  # a sentence with the numbers; ``stop`` is the machine-readable kind
    stop: Optional[StopReason] = None

    def in_hull(self, tolerance: float = 1e-9) -> bool:
        """theta_t is a convex combination of the vertices (its weights are >= 0): only then is the
        FW gap a bound on the suboptimality (an affine start such as task arithmetic is outside)."""
        return bool(self.weights_exact and (self.weights >= -tolerance).all())


@dataclass
class FrankWolfeBase:
    objective: Objective
    source: VertexSource
    block_names: Sequence[str]
    labels: Sequence[str]  # weight columns; candidates map to ``vertex_columns``
    vertex_columns: Sequence[int]
    options: SolverOptions = field(default_factory=SolverOptions)
    on_iteration: Optional[Callable[[IterationRecord, SolverState], None]] = None
    # data parallelism: this process scores vertices rank::world_size of the LMO; all_reduce sums
    shard: Tuple[int, int] = (0, 1)
    all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    # vertices never offered to the LMO (e.g. screened out as not fine-tunes of the pretrained model):
    # neither selected nor part of the set the FW gap is measured over
    screened: Sequence[int] = ()
    # per-block merge weights in every record (layer-wise runs; large: blocks x labels per iteration)
    record_per_block: bool = False

    def __post_init__(self):
        if len(self.vertex_columns) != len(self.source.names):
            raise ValueError("vertex_columns must map every candidate vertex to a weight column")
        if len(set(self.screened)) >= len(self.source.names):
            raise ValueError("every candidate vertex is screened out: nothing is left to merge")
        self.pass_order: Optional[PassOrder] = None  # chosen at the first LMO pass, then fixed

    # --- shared pieces -------------------------------------------------------------------------
    def run(self, state: SolverState) -> SolverState:
        block_sizes = torch.tensor([state.theta[name].numel() for name in self.block_names], dtype=torch.float64)
        max_iters, gap_tol = self.options.max_iters, self.options.gap_tol
        while state.iteration < max_iters:
            started = time.perf_counter()
            record = self.step(state)
            record.iteration = state.iteration
            record.time_s = time.perf_counter() - started
            record.weights = self.summarize_weights(state.weights, block_sizes)
            record.weights_exact = state.weights_exact
            record.in_hull = state.in_hull()
            if self.record_per_block:
                record.details["weights_per_block"] = {name: [round(float(w), 6) for w in row] for name, row in zip(self.block_names, state.weights)}
            state.trajectory.append(record.to_json())
            if record.converged:
                state.stop = StopReason.CONVERGED
                state.stop_reason = f"converged: FW gap {record.fw_gap:.3e} <= gap_tol {gap_tol:g}"
            else:
                state.iteration += 1
                if record.stalled:
                    state.stop = StopReason.STALLED
                    state.stop_reason = (
                        f"stalled: relative decrease {record.relative_decrease:.2e} < min_rel_decrease "
                        f"{self.options.min_rel_decrease:g} at FW gap {record.fw_gap:.3e}"
                    )
            if self.on_iteration is not None:
                self.on_iteration(record, state)
            if state.stop is not None:
                break
        if state.stop is None:
            state.stop = StopReason.MAX_ITERS
            last_gap = state.trajectory[-1]["fw_gap"] if state.trajectory else float("nan")
            state.stop_reason = f"max_iters: reached max_iters={max_iters} at FW gap {last_gap:.3e}"
        return state

    def progress(self, record: IterationRecord, monotone: bool = True) -> None:
        """Sets the record's relative decrease and flags it ``stalled`` below the threshold."""
        record.relative_decrease = (record.loss_before - record.loss_after) / max(abs(record.loss_before), 1e-30)
        record.stalled = bool(monotone and record.relative_decrease < self.options.min_rel_decrease)

    def lmo_pass(self, theta: ParamDict, rows: Mapping[str, ParamDict], with_norms: bool):
        """One LMO pass; its order is chosen at the first pass and kept for the run."""
        if self.pass_order is None:
            first = next(iter(rows.values()))[self.block_names[0]]
            self.pass_order = choose_order(self.source, first.device, len(rows) + int(with_norms), first.dtype)
        return score_vertices(
            self.source, theta, rows, self.block_names, self.shard, self.all_reduce,
            with_norms=with_norms, block_group=self.options.lmo_block_group, order=self.pass_order,
        )

    def gradients_and_scores(self, theta: ParamDict, per_task: bool):
        """The total gradient (and, with ``per_task`` and several objective tasks, each task's), then
        one LMO pass against the rows (the total row's products are derived from the task rows'
        when the objective says how it weighs its tasks). Returns (LossAndGrad, scores, timings)."""
        per_task = per_task and len(self.objective.task_names) > 1
        clock = time.perf_counter()
        evaluated = self.objective.loss_and_grad(theta, per_task=per_task)
        timings = {"time_gradient_s": time.perf_counter() - clock}
        task_rows = {f"task:{task}": grad for task, grad in (evaluated.task_grads or {}).items()} if per_task else {}
        weights = evaluated.task_weights or {}
        derive_total = bool(task_rows) and set(weights) == set(evaluated.task_grads)
        rows = task_rows if derive_total else {"total": evaluated.total_grad(), **task_rows}
        clock = time.perf_counter()
        cosine = self.options.score == "cosine"
        scores = self.lmo_pass(theta, rows, with_norms=cosine)
        if derive_total:
            total_sq = block_dots(evaluated.total_grad(), evaluated.total_grad(), self.block_names) if cosine else None
            scores = with_combined_row(scores, "total", {f"task:{task}": w for task, w in weights.items()}, total_sq)
        timings["time_lmo_s"] = time.perf_counter() - clock
        del rows, evaluated.grad, evaluated.task_grads
        return evaluated, scores, timings

    @property
    def gap_granularity(self) -> str:
        """Whole vertices ("task") or per-block stitching ("layer"): the set the FW gap is taken over."""
        return self.options.granularity

    def gap_set(self) -> str:
        """The set the reported FW gap certifies, in words (for the trajectory and the log)."""
        admitted = len(self.source.names) - len(set(self.screened))
        hull = "the product of per-parameter hulls" if self.gap_granularity == "layer" else "the hull"
        return f"{hull} of the {admitted} admitted vertices"

    def gap_vertex(self, scores) -> torch.Tensor:
        """The LMO vertex of the total gradient over the admitted vertices (per block if the gap's
        set is layer-wise): the vertex that certifies the FW gap, whatever score ranks the candidates."""
        return select_hard(scores, self.gap_granularity, "inner_product", self.screened)

    def summarize_weights(self, weights: torch.Tensor, block_sizes: torch.Tensor) -> Dict[str, float]:
        """Parameter-count-weighted average of the per-block weights, per label."""
        overall = (weights * block_sizes.unsqueeze(1)).sum(0) / block_sizes.sum()
        return {label: round(float(w), 6) for label, w in zip(self.labels, overall)}

    def selection_onehot(self, selection: torch.Tensor) -> torch.Tensor:
        onehot = torch.zeros(len(self.block_names), len(self.labels), dtype=torch.float64)
        columns = torch.tensor(self.vertex_columns, dtype=torch.long)[selection]
        onehot[torch.arange(len(self.block_names)), columns] = 1.0
        return onehot

    def describe_selection(self, selection: torch.Tensor, granularity: Optional[str] = None):
        """Task-wise: the model name. Layer-wise: blocks won per model."""
        names = self.source.names
        if (granularity or self.options.granularity) == "task":
            return names[int(selection[0])]
        counts: Dict[str, int] = {}
        for index in selection.tolist():
            counts[names[index]] = counts.get(names[index], 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def step(self, state: SolverState) -> IterationRecord:  # pragma: no cover - abstract
        raise NotImplementedError

    def probed_selections(self, state: SolverState, before: LossAndGrad, select: Callable[[List[int]], List[Tuple[torch.Tensor, List[str]]]]) -> Tuple[List[torch.Tensor], List[str]]:
        """Selections whose every vertex passes the descent probe; returns them and the rejected names.

        ``select(excluded)`` runs the selection rule without the given vertices and returns
        (per-block vertex indices, gradient rows that chose them). Each distinct vertex is probed
        along the blocks it was selected for, with one forward pass over the objective data: the
        step must not raise the total objective. (Probing only the loss of the task that chose a
        vertex was tried and let a randomly initialized checkpoint through on a poorly learned
        task.) If no admissible choice is left, the plain selection is kept: the probe only
        reorders the LMO's choices.
        """
        excluded: List[int] = list(self.screened)
        first = selections = select(excluded)
        if self.options.probe_step <= 0:
            return [s for s, _ in selections], []
        screened = len(excluded)
        verdicts: Dict[int, bool] = {}
        for _ in range(self.options.max_probe_rounds):
            newly_rejected = []
            for vertex in dict.fromkeys(int(i) for s, _ in selections for i in s.tolist()):
                if vertex not in verdicts:
                    verdicts[vertex] = self._descends(state, before, vertex, selections)
                if not verdicts[vertex]:
                    newly_rejected.append(vertex)
            if not newly_rejected:
                return [s for s, _ in selections], [self.source.names[v] for v in excluded[screened:]]
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
            name: state.theta[name] + self.options.probe_step * (point[name] - state.theta[name]) if mask[b] else state.theta[name]
            for b, name in enumerate(self.block_names)
        }
        del point
        return self.objective.loss(probe) <= before.loss


@dataclass
class FrankWolfeHard(FrankWolfeBase):
    """Algorithm 1: s_t = argmin LMO, theta_{t+1} = MergeFn(theta_t, s_t, gamma_t).

    ``variant="pairwise"`` (pairwise FW, Lacoste-Julien & Jaggi 2015) moves weight from the worst
    vertex theta_t holds (per block: the active vertex with the largest linear term, the "away"
    vertex) to the LMO vertex: theta + gamma * w_a (s - a), gamma in [0, 1], w_a the away vertex's
    weight. Vanilla FW can only shrink a bad vertex's weight by (1 - gamma) per step; a pairwise step
    removes it, which is what keeps many irrelevant models from lingering in the merge. It needs
    theta_t inside the hull (non-negative exact weights); otherwise the iteration takes the FW step.
    """

    options: HardOptions = field(default_factory=HardOptions)
    # the merge function of options.merge_fn="ties" (it needs theta_0, so the caller builds it);
    # None: the convex combination, with exact weights
    merge_fn: Optional[MergeFn] = None

    def __post_init__(self):
        super().__post_init__()
        if (self.options.merge_fn == "convex") != (self.merge_fn is None):
            raise ValueError(f"merge_fn={self.options.merge_fn} needs its merge function (and convex none)")
        self.step_rule = self.options.make_step_rule()

    def step(self, state: SolverState) -> IterationRecord:
        theta, options = state.theta, self.options
        task_winners = options.lmo_candidates == "task_winners"
        evaluated, scores, timings = self.gradients_and_scores(theta, per_task=task_winners)
        outside = self.outside_candidates(scores, state) if task_winners else set()
        (selection,), rejected = self.probed_selections(
            state, evaluated, lambda excluded: [(select_hard(scores, options.granularity, options.score, sorted(set(excluded) | outside)), ["total"])]
        )
        gap = fw_gap(scores, self.gap_vertex(scores))  # over every admitted vertex
        record = IterationRecord(
            fw_gap=gap, loss_before=evaluated.loss, loss_after=evaluated.loss, selected=self.describe_selection(selection),
            rejected=rejected, **timings,
        )
        if gap <= options.gap_tol:
            record.converged, record.step_size = True, 0.0
            return record
        away = self.away_vertex(scores, state) if options.variant == "pairwise" and state.in_hull() else None
        if away is None:
            new_weights = self.selection_onehot(selection) - state.weights
        else:
            away_index, scale = away
            new_weights = scale.unsqueeze(1) * (self.selection_onehot(selection) - self.selection_onehot(away_index))
            record.details["away"] = self.describe_selection(away_index)
        if state.weights_exact and not bool(new_weights.any()):
            # the LMO chose where theta_t already is (e.g. every other candidate failed the descent
            # probe): the direction is zero, so neither its read nor a line search can change anything
            record.step_size = 0.0
            self.progress(record, monotone=self.merge_fn is None and self.step_rule.monotone)
            return record
        if away is None:
            (vertex,) = assemble(self.source, [selection], self.block_names, theta)
            direction = {name: vertex[name] - theta[name] for name in self.block_names}
        else:
            vertex, away_point = assemble(self.source, [selection, away_index], self.block_names, theta)
            direction = {name: float(scale[b]) * (vertex[name] - away_point[name]) for b, name in enumerate(self.block_names)}
            del away_point
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
        state.weights = state.weights + gamma * new_weights
        record.step_size, record.loss_after = gamma, loss_after
        self.progress(record, monotone=self.merge_fn is None and self.step_rule.monotone)
        return record

    def outside_candidates(self, scores, state: SolverState) -> Set[int]:
        """``lmo_candidates="task_winners"``: the vertices the LMO may not pick this iteration, i.e. all
        but those theta_t already holds weight in and each objective task's whole-model LMO winner.

        With many candidates, a per-block LMO over all of them lets models that help no objective
        task win blocks by chance (the extreme of many noisy linear terms) and fit the few samples;
        a model must first win a task's row as a whole, as FW-soft's per-task selection asks. The FW
        gap is still measured over every admitted vertex (``gap_set``)."""
        rows = [key for key in scores.grad_dots if key != "total"] or ["total"]
        allowed = {int(select_hard(scores, "task", self.options.score, self.screened, row=row)[0]) for row in rows}
        held = self.held_weights(state).max(dim=1).values
        allowed |= {int(i) for i in torch.nonzero(held > 1e-12).flatten()}
        return set(range(len(self.source.names))) - allowed

    def held_weights(self, state: SolverState) -> torch.Tensor:
        """Each candidate vertex's weight in theta_t, per block: ``[vertices, blocks]``."""
        return state.weights[:, list(self.vertex_columns)].t()

    def away_vertex(self, scores, state: SolverState) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Per block, the active vertex (weight > 0) with the largest linear term <g_b, v_b>, and its
        weight there (the most a pairwise step can move); None if no vertex holds weight anywhere."""
        held = self.held_weights(state)
        linear = scores.block_scores("inner_product")
        if self.options.granularity == "task":
            held = held.min(dim=1, keepdim=True).values.expand_as(held)
            linear = linear.sum(dim=1, keepdim=True).expand_as(linear)
        masked = torch.where(held > 1e-12, linear, torch.full_like(linear, -float("inf")))
        index = masked.argmax(dim=0)
        scale = held.gather(0, index.unsqueeze(0)).squeeze(0).clamp_min(0.0)
        if not bool((scale > 0).any()):
            return None
        return index, scale

