"""The FW engine on small convex problems with known optima (no neural nets, no FusionBench, no files)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from engine_toys import (
    BLOCKS, LeastSquares, ListSource, flat, hard, hull_source, initial_state, make_problem, reference_optimum, soft, solver_kwargs,
)
from fusion_bench_fw.frank_wolfe import HardOptions, LossAndGrad, SoftOptions, SolverState, StopReason, project_onto_simplex, score_vertices

# --- simplex projection -------------------------------------------------------------------------

def brute_force_projection(y):
    """Exact projection by enumerating supports: the QP's KKT solution on every subset."""
    best, best_dist = None, np.inf
    n = len(y)
    for size in range(1, n + 1):
        for support in itertools.combinations(range(n), size):
            x = np.zeros(n)
            sub = y[list(support)]
            x[list(support)] = sub - (sub.sum() - 1.0) / size
            if (x >= -1e-12).all():
                dist = ((x - y) ** 2).sum()
                if dist < best_dist:
                    best, best_dist = x, dist
    return best


def test_simplex_projection_matches_brute_force_qp():
    gen = np.random.default_rng(0)
    rows = gen.normal(scale=2.0, size=(200, 5))
    projected = project_onto_simplex(torch.tensor(rows)).numpy()
    for y, x in zip(rows, projected):
        np.testing.assert_allclose(x, brute_force_projection(y), atol=1e-10)
    assert np.allclose(projected.sum(axis=1), 1.0) and (projected >= 0).all()


def test_simplex_projection_keeps_points_already_on_the_simplex():
    point = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(project_onto_simplex(point), point)


# --- full solvers -------------------------------------------------------------------------------

def test_hard_fw_line_search_gap_shrinks_and_reaches_the_optimum():
    problem, points = make_problem()
    source = hull_source(points)
    state = initial_state(points)
    solver = hard(**solver_kwargs(problem, source, max_iters=1000, gap_tol=1e-7), line_search_evals=30)
    solver.run(state)
    optimum = reference_optimum(problem, points)
    gaps = [r["fw_gap"] for r in state.trajectory]
    assert problem.loss(state.theta) == pytest.approx(optimum, rel=1e-3, abs=1e-6)
    # the gap bounds the suboptimality and shrinks by orders of magnitude
    assert gaps[-1] < 1e-3 * gaps[0]
    assert all(r["loss_after"] <= r["loss_before"] + 1e-12 for r in state.trajectory)
    # the bookkeeping weights reproduce theta exactly and form a convex combination
    rebuilt = {k: sum(state.weights[b, v] * points[v][k] for v in range(len(points))) for b, k in enumerate(BLOCKS)}
    assert torch.allclose(flat(rebuilt), flat(state.theta), atol=1e-9)
    assert torch.allclose(state.weights.sum(1), torch.ones(2, dtype=torch.float64))
    assert (state.weights >= -1e-12).all()
    # constant memory: the solver never held more than one streamed checkpoint at a time
    assert source.peak_alive == 1


def test_hard_fw_stops_at_gap_tolerance():
    problem, points = make_problem(seed=1)
    source = hull_source(points)
    state = initial_state(points)
    hard(**solver_kwargs(problem, source, max_iters=500, gap_tol=1e-2), line_search_evals=30).run(state)
    assert state.trajectory[-1]["converged"] is True
    assert state.trajectory[-1]["fw_gap"] <= 1e-2
    assert all(r["fw_gap"] > 1e-2 for r in state.trajectory[:-1])
    assert "gap_tol" in state.stop_reason


def test_layerwise_hard_fw_reaches_a_stitched_optimum_that_taskwise_cannot():
    problem, points = make_problem(seed=2)
    # block a wants vertex 1, block b wants vertex 2: only block-coordinate FW can stitch them
    problem.targets = {"a": problem.matrices["a"] @ points[1]["a"], "b": problem.matrices["b"] @ points[2]["b"]}
    source = hull_source(points)
    finals = {}
    for granularity in ("task", "layer"):
        state = initial_state(points)
        hard(**solver_kwargs(problem, source, max_iters=300, granularity=granularity, record_per_block=True), line_search_evals=30).run(state)
        finals[granularity] = problem.loss(state.theta)
        if granularity == "layer":
            counts = state.trajectory[0]["selected"]
            assert isinstance(counts, dict) and sum(counts.values()) == len(BLOCKS)
            assert set(state.trajectory[-1]["weights_per_block"]) == set(BLOCKS)
            # the per-block weights identify the stitched optimum: a from m1, b from m2
            assert state.weights[0, 1] > 0.99 and state.weights[1, 2] > 0.99
    assert finals["layer"] < 1e-6
    # task-wise FW is confined to one shared lambda: it cannot beat the hull optimum
    assert finals["task"] >= reference_optimum(problem, points) - 1e-6 > 1e-3


def test_soft_fw_with_k_equal_n_reaches_the_optimum_in_two_iterations():
    problem, points = make_problem(seed=3)
    source = hull_source(points)
    state = initial_state(points)
    solver = soft(
        **solver_kwargs(problem, source, max_iters=2),
        topk=len(source.names), coefficients="model", inner_steps=3000, inner_lr=0.002, inner_optimizer="sgd",
    )
    solver.run(state)
    optimum = reference_optimum(problem, points)
    assert problem.loss(state.theta) == pytest.approx(optimum, rel=1e-3, abs=1e-6)
    assert len(state.trajectory) <= 2
    rebuilt = {k: sum(state.weights[b, v] * points[v][k] for v in range(len(points))) for b, k in enumerate(BLOCKS)}
    assert torch.allclose(flat(rebuilt), flat(state.theta), atol=1e-9)
    # k = n selected checkpoints resident plus one streamed
    assert source.peak_alive == 1


def test_soft_fw_never_increases_the_objective_and_keeps_weights_exact():
    problem, points = make_problem(seed=4)
    source = hull_source(points)
    state = initial_state(points)
    soft(**solver_kwargs(problem, source, max_iters=5), topk=2, inner_steps=15, inner_lr=0.05).run(state)
    losses = [problem.loss(points[0])] + [r["loss_after"] for r in state.trajectory]
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.5 * losses[0]
    rebuilt = {k: sum(state.weights[b, v] * points[v][k] for v in range(len(points))) for b, k in enumerate(BLOCKS)}
    assert torch.allclose(flat(rebuilt), flat(state.theta), atol=1e-9)
    assert (state.weights >= -1e-12).all() and torch.allclose(state.weights.sum(1), torch.ones(2, dtype=torch.float64))
    assert all(len(r["selected"]) == 2 for r in state.trajectory)
    # where each iteration's time went: every phase timed, together within the iteration's time
    for record in state.trajectory:
        phases = record["time_phases_s"]
        assert set(phases) == {"selection_probe", "assemble", "fw_step", "coefficients"}
        assert all(v >= 0 for v in phases.values()) and record["time_gradient_s"] + record["time_lmo_s"] + sum(phases.values()) <= record["time_s"]


def test_soft_fw_quadratic_fw_step_matches_the_golden_section_with_fewer_evaluations():
    """On a quadratic objective the slope the FW gap gives makes the FW step's model exact: the same
    step size as a 20-evaluation golden section (which a wrong slope would not give), from 2 evaluations."""
    class Counting:  # the search options.fw_step_search names, counting its objective evaluations
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def choose(self, iteration, loss_at, loss_at_zero, slope=None):
            def counted(gamma):
                self.calls += 1
                return loss_at(gamma)
            return self.inner.choose(iteration, counted, loss_at_zero, slope=slope)

    problem, points = make_problem(seed=4)
    steps, evaluations = {}, {}
    for search in ("golden", "quadratic"):
        counting = Counting(SoftOptions(line_search_evals=20, fw_step_search=search).make_fw_step_search())
        state = initial_state(points)
        soft(**solver_kwargs(problem, hull_source(points), max_iters=1, line_search_evals=20, line_search=counting), topk=1, inner_steps=1, fw_step_search=search).run(state)
        steps[search], evaluations[search] = state.trajectory[0]["fw_step_size"], counting.calls
    assert 0 < steps["golden"] < 1 and steps["quadratic"] == pytest.approx(steps["golden"], abs=1e-3)
    assert evaluations == {"golden": 20, "quadratic": 2}


def test_invalid_options_are_rejected_with_the_allowed_values():
    problem, points = make_problem()
    source = ListSource(["m1"], points[1:2])
    with pytest.raises(ValueError, match="allowed values: task, layer"):
        hard(**solver_kwargs(problem, source, granularity="block"))
    with pytest.raises(ValueError, match="allowed values: inner_product, cosine"):
        hard(**solver_kwargs(problem, source, score="dot"))
    with pytest.raises(ValueError, match="topk must be >= 1"):
        soft(**solver_kwargs(problem, source), topk=0)
    with pytest.raises(ValueError, match="invalid fw_step_search='armijo'; allowed values: golden, quadratic"):
        soft(**solver_kwargs(problem, source), fw_step_search="armijo")
    with pytest.raises(ValueError, match="inner_restart=true .* use it with inner_init=uniform .*got inner_init=current"):
        soft(**solver_kwargs(problem, source), inner_restart=True, inner_init="current")


def _one_vertex_problem():
    """1-d blocks: theta_0 = 0 near the optimum 0.1, the only other vertex at 1 (gap > 0)."""
    eye = {k: torch.eye(1, dtype=torch.float64) for k in BLOCKS}
    problem = LeastSquares(eye, {k: torch.full((1,), 0.1, dtype=torch.float64) for k in BLOCKS})
    points = [{k: torch.zeros(1, dtype=torch.float64) for k in BLOCKS}, {k: torch.ones(1, dtype=torch.float64) for k in BLOCKS}]
    return problem, points


def _stitched_optimum_problem():
    """1-d blocks, f = 0.5 ||theta - (1, 1)||^2 from theta_0 = 0. The whole model v3 = (.45, .45)
    wins the task-wise LMO, but the optimum (1, 1) is stitched from v1's block a and v2's block b:
    once at (.45, .45), v3 is still every row's top-1, and per-task selection alone idles there at
    a gap of 0.605 although layer-wise coefficients could reach the optimum."""
    eye = {k: torch.eye(1, dtype=torch.float64) for k in BLOCKS}
    problem = LeastSquares(eye, {k: torch.ones(1, dtype=torch.float64) for k in BLOCKS})
    values = [(0.0, 0.0), (1.0, -0.2), (-0.2, 1.0), (0.45, 0.45)]
    points = [{k: torch.tensor([v[i]], dtype=torch.float64) for i, k in enumerate(BLOCKS)} for v in values]
    return problem, points


def test_soft_fw_without_the_gap_vertex_idles_at_a_positive_gap_and_says_so():
    problem, points = _stitched_optimum_problem()
    state = initial_state(points)
    solver = soft(**solver_kwargs(problem, hull_source(points), max_iters=10), offer_gap_vertex=False, inner_steps=60, inner_lr=0.05)
    solver.run(state)
    assert problem.loss(state.theta) == pytest.approx(0.3025, abs=1e-4)
    assert state.trajectory[-1]["fw_gap"] == pytest.approx(0.605, abs=1e-3)
    # the iteration that changed nothing ends the run, with the gap in the reason
    assert state.stop is StopReason.STALLED and len(state.trajectory) < 10
    assert state.trajectory[-1]["relative_decrease"] < 1e-4
    assert all(r["relative_decrease"] >= 1e-4 for r in state.trajectory[:-1])
    assert "FW gap 6.05" in state.stop_reason


def test_soft_fw_offers_the_gap_vertex_and_drives_the_gap_below_tolerance():
    problem, points = _stitched_optimum_problem()
    state = initial_state(points)
    solver = soft(**solver_kwargs(problem, hull_source(points), max_iters=30, gap_tol=1e-4), inner_steps=60, inner_lr=0.05)
    solver.run(state)
    assert state.stop is StopReason.CONVERGED, state.stop_reason
    assert state.trajectory[-1]["fw_gap"] <= 1e-4
    assert problem.loss(state.theta) < 1e-4
    # every iteration before the last lowered the objective, and never below the FW step's point
    assert all(r["loss_after"] < r["loss_before"] for r in state.trajectory[:-1])
    assert all(r["loss_after"] <= r["loss_fw_step"] + 1e-15 for r in state.trajectory[:-1])
    assert "gap vertex" in state.trajectory[0]["coefficients"]


def test_soft_fw_makes_progress_even_when_the_coefficient_search_cannot():
    """Steps so coarse that every Adam iterate is a corner of the simplex: the search alone never
    beats theta_t (version 0.1 stopped here); the line search toward the gap's vertex still does."""
    problem, points = _one_vertex_problem()
    source = ListSource(["m1"], points[1:])
    state = initial_state(points)
    kwargs = solver_kwargs(problem, source, max_iters=1, labels=["_pretrained_", "m1"], vertex_columns=[1])
    soft(**kwargs, inner_steps=5, inner_lr=50.0).run(state)
    record = state.trajectory[0]
    assert record["fw_gap"] > 0 and 0 < record["fw_step_size"] < 1
    assert float(state.theta["a"]) == pytest.approx(0.1, abs=0.02)
    assert record["loss_after"] <= record["loss_fw_step"] < record["loss_before"]


def test_soft_fw_searches_again_from_theta_t_when_the_uniform_start_fails():
    """The uniform mix (0.5) is far worse than theta_t = 0. With inner_restart, a second search
    starts at the FW step's point and improves on it; without it, the iteration ends there."""
    problem, points = _one_vertex_problem()
    source = ListSource(["m1"], points[1:])
    losses, records = {}, {}
    for init, restart in (("uniform", True), ("fw_step", False), ("uniform", False)):
        state = initial_state(points)
        kwargs = solver_kwargs(problem, source, max_iters=1, labels=["_pretrained_", "m1"], vertex_columns=[1])
        # a coarse golden-section FW step (3 trials) that misses the optimum on its line
        soft(**kwargs, inner_steps=3, inner_lr=0.02, inner_init=init, inner_restart=restart, fw_step_search="golden", line_search_evals=3).run(state)
        losses[init, restart], records[init, restart] = problem.loss(state.theta), state.trajectory[0]
        assert 0.0 < float(state.theta["a"]) < 0.2  # moved toward the optimum 0.1
    assert losses["uniform", True] == pytest.approx(losses["fw_step", False])  # the same second search
    assert losses["uniform", True] < records["uniform", True]["loss_fw_step"] - 1e-9  # which improved on the FW step
    assert losses["uniform", False] == pytest.approx(records["uniform", False]["loss_fw_step"])  # no second search: the FW step's point
    assert losses["uniform", False] < problem.loss(points[0])


def test_soft_fw_with_layer_coefficients_reports_the_block_wise_gap():
    """theta_t stitched from two vertices (block a from v1, b from v2), the optimum lying beyond it:
    every whole vertex scores worse than theta_t (the task-wise 'gap' is negative), but theta_t is
    optimal over the product of per-block hulls that layer-wise coefficients reach: the gap is 0."""
    dim = 3
    gen = torch.Generator().manual_seed(11)
    v1 = {k: torch.randn(dim, generator=gen, dtype=torch.float64) for k in BLOCKS}
    v2 = {k: torch.randn(dim, generator=gen, dtype=torch.float64) for k in BLOCKS}
    stitched = {"a": v1["a"].clone(), "b": v2["b"].clone()}
    target = {"a": 2 * v1["a"] - v2["a"], "b": 2 * v2["b"] - v1["b"]}
    problem = LeastSquares({k: torch.eye(dim, dtype=torch.float64) for k in BLOCKS}, target)
    grad = problem.loss_and_grad(stitched).grad
    task_wise = -min(sum(float(grad[k] @ (v[k] - stitched[k])) for k in BLOCKS) for v in (v1, v2))
    assert task_wise < 0  # the set-up does what the docstring says
    source = ListSource(["v1", "v2"], [v1, v2])
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    state = SolverState(theta={k: t.clone() for k, t in stitched.items()}, weights=weights, weights_exact=True)
    kwargs = solver_kwargs(problem, source, max_iters=3, labels=["v1", "v2"], vertex_columns=[0, 1])
    soft(**kwargs, topk=1, coefficients="layer", inner_steps=5).run(state)
    assert state.trajectory[0]["fw_gap"] == pytest.approx(0.0, abs=1e-12)
    assert state.stop is StopReason.CONVERGED  # a certificate of optimality, not a stall


class TwoTasks:
    """Two least-squares tasks on shared parameters; loss and gradient are their weighted sum."""

    task_names = ["a", "b"]

    def __init__(self, first, second, weights=(0.7, 0.3), announce_weights=True):
        self.tasks = {"a": first, "b": second}
        self.weights = dict(zip(self.task_names, weights))
        self.announce_weights = announce_weights
        self.calls = 0

    def loss(self, params):
        return sum(w * self.tasks[t].loss(params) for t, w in self.weights.items())

    def loss_and_grad(self, params, per_task=False):
        self.calls += 1
        task_grads = {t: self.tasks[t].loss_and_grad(params).grad for t in self.task_names}
        grad = {k: sum(w * task_grads[t][k] for t, w in self.weights.items()) for k in BLOCKS}
        return LossAndGrad(
            loss=self.loss(params), grad=grad, task_grads=task_grads if per_task else None,
            task_weights=dict(self.weights) if per_task and self.announce_weights else None,
        )


@pytest.mark.parametrize("score", ["inner_product", "cosine"])
def test_soft_fw_derives_the_total_row_and_follows_the_same_path(score, monkeypatch):
    """With task weights announced, the LMO reads the vertices against the task rows only (one
    row fewer); the run must match the one that scores the total row directly."""
    import fusion_bench_fw.frank_wolfe.solver as solver_module

    first, points = make_problem(seed=10)
    second, _ = make_problem(seed=11)
    runs = []
    for announce in (True, False):
        rows_seen = []

        def recording(*args, _inner=score_vertices, **kwargs):
            rows_seen.append(sorted(args[2]))  # the gradient rows the vertices are read against
            return _inner(*args, **kwargs)

        monkeypatch.setattr(solver_module, "score_vertices", recording)
        state = initial_state(points)
        problem = TwoTasks(first, second, announce_weights=announce)
        soft(**solver_kwargs(problem, hull_source(points), max_iters=3), topk=1, inner_steps=20, inner_lr=0.05, score=score).run(state)
        runs.append((state, rows_seen))
    (derived, derived_rows), (direct, direct_rows) = runs
    assert derived_rows[0] == ["task:a", "task:b"] and direct_rows[0] == ["task:a", "task:b", "total"]
    assert len(derived.trajectory) == len(direct.trajectory) >= 2
    assert [r["selected"] for r in derived.trajectory] == [r["selected"] for r in direct.trajectory]
    assert [r["fw_gap"] for r in derived.trajectory] == pytest.approx([r["fw_gap"] for r in direct.trajectory], rel=1e-9, abs=1e-12)
    assert torch.allclose(derived.weights, direct.weights, atol=1e-9)


def test_pairwise_fw_removes_a_bad_vertex_that_vanilla_fw_only_shrinks():
    """Optimum (0.5, 0) on the edge v0-v1, theta_0 holding 0.25 of the off-edge vertex v2: vanilla FW
    keeps a factor prod(1 - gamma_t) of v2 forever; a pairwise step moves v2's weight away whole."""
    eye = {k: torch.eye(2, dtype=torch.float64) for k in BLOCKS}
    problem = LeastSquares(eye, {k: torch.tensor([0.5, 0.0], dtype=torch.float64) for k in BLOCKS})
    corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    points = [{k: torch.tensor(c, dtype=torch.float64) for k in BLOCKS} for c in corners]
    start = torch.tensor([[0.5, 0.25, 0.25]] * len(BLOCKS), dtype=torch.float64)
    finals = {}
    for variant in ("fw", "pairwise"):
        theta = {k: sum(float(w) * p[k] for w, p in zip(start[0], points)) for k in BLOCKS}
        state = SolverState(theta=theta, weights=start.clone(), weights_exact=True)
        solver = hard(**solver_kwargs(problem, hull_source(points), max_iters=6, granularity="task", min_rel_decrease=0.0), line_search_evals=40, variant=variant)
        solver.run(state)
        losses = [problem.loss(theta)] + [r["loss_after"] for r in state.trajectory]
        assert all(b <= a + 1e-15 for a, b in zip(losses, losses[1:]))
        rebuilt = {k: sum(state.weights[b, v] * points[v][k] for v in range(3)) for b, k in enumerate(BLOCKS)}
        assert torch.allclose(flat(rebuilt), flat(state.theta), atol=1e-12)
        assert (state.weights >= -1e-12).all() and torch.allclose(state.weights.sum(1), torch.ones(2, dtype=torch.float64))
        finals[variant] = (float(state.weights[0, 2]), problem.loss(state.theta), state.trajectory)
    assert finals["pairwise"][0] == 0.0 and finals["pairwise"][1] < 1e-12
    assert finals["fw"][0] > 1e-3 and finals["fw"][1] > 1e-6
    assert finals["pairwise"][2][0]["away"] == "m2"


def test_pairwise_needs_exact_convex_weights():
    problem, points = make_problem()
    with pytest.raises(ValueError, match="allowed values: fw, pairwise"):
        hard(**solver_kwargs(problem, hull_source(points)), variant="away")
    with pytest.raises(ValueError, match="use merge_fn=convex"):
        HardOptions(variant="pairwise", merge_fn="ties")


def test_an_affine_start_is_reported_outside_the_hull_and_takes_plain_fw_steps():
    """Task-arithmetic-like weights (-0.5 on theta_0): the gap is no certificate there, and the
    pairwise variant, which needs non-negative weights, falls back to the FW step."""
    problem, points = make_problem(seed=5)
    weights = torch.tensor([[-0.5, 0.5, 0.5, 0.5, 0.0, 0.0]] * len(BLOCKS), dtype=torch.float64)
    theta = {k: sum(float(w) * p[k] for w, p in zip(weights[0], points)) for k in BLOCKS}
    state = SolverState(theta=theta, weights=weights, weights_exact=True)
    assert not state.in_hull()
    # a 10% step keeps 0.9 x -0.5 on theta_0: still outside the hull after the iteration
    hard(**solver_kwargs(problem, hull_source(points), max_iters=1), step_rule="constant", step_size=0.1, variant="pairwise").run(state)
    record = state.trajectory[0]
    assert "away" not in record and record["step_size"] == 0.1
    expected = 0.9 * -0.5 + (0.1 if record["selected"] == "_pretrained_" else 0.0)  # a vanilla FW step
    assert record["in_hull"] is False and float(state.weights[0, 0]) == pytest.approx(expected)
    rebuilt = {k: sum(state.weights[b, v] * points[v][k] for v in range(len(points))) for b, k in enumerate(BLOCKS)}
    assert torch.allclose(flat(rebuilt), flat(state.theta), atol=1e-9)


def test_task_winner_candidates_keep_a_model_that_helps_no_task_out_of_the_layerwise_lmo():
    """m3 scores best in block a (a large step along task A's gradient there) but pushes block b
    where neither task wants it, so it wins no task's row as a whole. The layer-wise LMO over all
    vertices picks it for block a; with lmo_candidates=task_winners it is never offered, and the
    gap is still measured over every vertex (m3 included)."""
    u, v, w = (torch.eye(3, dtype=torch.float64)[i] for i in range(3))
    zero = torch.zeros(3, dtype=torch.float64)
    eye = {k: torch.eye(3, dtype=torch.float64) for k in BLOCKS}
    task_a = LeastSquares(eye, {"a": u, "b": -w})
    task_b = LeastSquares(eye, {"a": zero, "b": v - w})
    points = [{"a": zero, "b": zero}, {"a": u, "b": -w}, {"a": zero, "b": v - w}, {"a": 2 * u, "b": 3 * w}]
    selected = {}
    for candidates in ("all", "task_winners"):
        state = initial_state(points)
        problem = TwoTasks(task_a, task_b, weights=(0.5, 0.5))
        hard(**solver_kwargs(problem, hull_source(points), max_iters=5, granularity="layer", variant="pairwise", lmo_candidates=candidates)).run(state)
        selected[candidates] = [r["selected"] for r in state.trajectory]
        gaps = [r["fw_gap"] for r in state.trajectory]
        assert gaps[-1] < gaps[0]
    assert selected["all"][0] == {"m3": 1, "m2": 1}
    assert selected["task_winners"][0] == {"m1": 1, "m2": 1}
    assert not any("m3" in s for s in selected["task_winners"])


def test_soft_fw_coefficient_search_leaves_blocks_with_only_rounding_noise_where_they_start():
    """Block "b" barely enters the loss (its gradient is 1e-8 of block "a"'s, like an attention key
    bias's rounding noise): Adam's per-entry scaling would move its coefficients about as fast as "a"'s."""
    problem, points = make_problem(seed=3)
    problem.matrices["b"] = 1e-4 * problem.matrices["b"]
    problem.targets["b"] = 1e-4 * problem.targets["b"]
    solver = soft(**solver_kwargs(problem, hull_source(points[1:])), coefficients="layer", inner_steps=10, inner_lr=0.1)
    start = torch.full((len(BLOCKS), len(points)), 0.3 / (len(points) - 1), dtype=torch.float64)
    start[:, 0] = 0.7  # far from the optimum (near the uniform mix)
    lam, loss = solver.projected_descent(points, start)
    torch.testing.assert_close(lam[1], start[1], rtol=0, atol=1e-12)  # block "b": not moved
    assert (lam[0] - start[0]).abs().max() > 0.05 and loss < problem.loss({k: sum(float(start[0, j]) * p[k] for j, p in enumerate(points)) for k in BLOCKS})
