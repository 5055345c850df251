"""In-memory stand-ins for the engine's protocols: vertex sources, a least-squares objective with a
known optimum over the hull, and builders for the solvers (wiring and options from one flat dict)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize

from fusion_bench_fw.frank_wolfe import FrankWolfeHard, FrankWolfeSoft, HardOptions, LossAndGrad, SoftOptions, SolverState, select_hard, select_soft

BLOCKS = ["a", "b"]


class ListSource:
    """Candidate vertices held in a list; counts how many streamed copies are alive at once."""

    def __init__(self, names, vertices):
        self.names = list(names)
        self._vertices = vertices
        self.alive = 0
        self.peak_alive = 0
        self.loads = 0

    def stream(self, indices=None):
        for index in range(len(self.names)) if indices is None else indices:
            self.loads += 1
            self.alive += 1
            self.peak_alive = max(self.peak_alive, self.alive)
            try:
                yield index, {k: v.clone() for k, v in self._vertices[index].items()}
            finally:
                self.alive -= 1


class ListBlocks:
    """Block reader over in-memory vertices: slices of one parameter for a group, stacked."""

    def __init__(self, vertices):
        self._vertices = vertices

    def numel(self, name):
        return self._vertices[0][name].numel()

    def stack(self, name, start=0, stop=None, out=None):
        stop = self.numel(name) if stop is None else stop
        stacked = torch.stack([v[name].reshape(-1)[start:stop] for v in self._vertices])
        return stacked if out is None else out.copy_(stacked)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class BlockListSource(ListSource):
    """ListSource with the optional block-major capability; ``unreadable`` vertices make their
    group fall back to streaming. Counts the vertices read block-major."""

    def __init__(self, names, vertices, unreadable=()):
        super().__init__(names, vertices)
        self.unreadable = set(unreadable)
        self.block_loads = 0

    def block_reader(self, indices):
        if self.unreadable & set(indices):
            return None
        self.block_loads += len(indices)
        return ListBlocks([self._vertices[i] for i in indices])


class LeastSquares:
    """f(theta) = 0.5 * sum_b ||A_b theta_b - y_b||^2, one block per parameter tensor."""

    task_names = ["toy"]

    def __init__(self, matrices, targets):
        self.matrices = matrices
        self.targets = targets

    def loss(self, params):
        return float(sum(0.5 * (self.matrices[k] @ params[k] - self.targets[k]).pow(2).sum() for k in BLOCKS))

    def loss_and_grad(self, params, per_task=False):
        grad = {k: self.matrices[k].T @ (self.matrices[k] @ params[k] - self.targets[k]) for k in BLOCKS}
        return LossAndGrad(loss=self.loss(params), grad=grad, task_grads={"toy": grad} if per_task else None)


def flat(params):
    return torch.cat([params[k].reshape(-1) for k in BLOCKS])


def reference_optimum(problem, points):
    """min over the convex hull (one shared lambda) by SLSQP on lambda: the known optimum."""

    def value(lam):
        theta = {k: sum(float(l) * p[k] for l, p in zip(lam, points)) for k in BLOCKS}
        return problem.loss(theta)

    n = len(points)
    result = minimize(
        value,
        np.full(n, 1.0 / n),
        bounds=[(0, 1)] * n,
        constraints=[{"type": "eq", "fun": lambda lam: lam.sum() - 1}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return result.fun


def make_problem(seed=0, n=5, dim=6):
    gen = torch.Generator().manual_seed(seed)
    points = [{k: torch.randn(dim, generator=gen, dtype=torch.float64) for k in BLOCKS} for _ in range(n + 1)]
    matrices = {k: torch.randn(dim + 2, dim, generator=gen, dtype=torch.float64) for k in BLOCKS}
    # the optimum is a strictly convex combination of all vertices (relative interior of the hull),
    # where vanilla FW with line search converges linearly; on a face it only gets O(1/t)
    mix = torch.softmax(0.3 * torch.randn(n + 1, generator=gen, dtype=torch.float64), dim=0)
    targets = {k: matrices[k] @ sum(w * p[k] for w, p in zip(mix, points)) for k in BLOCKS}
    return LeastSquares(matrices, targets), points


def hull_source(points):
    """Every vertex of M = conv{theta_0..theta_n} is an LMO candidate, theta_0 included."""
    return ListSource(["_pretrained_"] + [f"m{i}" for i in range(1, len(points))], points)


def initial_state(points):
    weights = torch.zeros(len(BLOCKS), len(points), dtype=torch.float64)
    weights[:, 0] = 1.0
    return SolverState(theta={k: v.clone() for k, v in points[0].items()}, weights=weights, weights_exact=True)


def solver_kwargs(problem, source, **overrides):
    """A solver's wiring and options in one flat dict (``hard``/``soft`` split them)."""
    kwargs = dict(
        objective=problem,
        source=source,
        block_names=BLOCKS,
        labels=list(source.names),
        vertex_columns=list(range(len(source.names))),
        probe_step=0.0,  # the paper's plain LMO; the descent probe has its own test
    )
    kwargs.update(overrides)
    return kwargs


WIRING = ("objective", "source", "block_names", "labels", "vertex_columns", "on_iteration", "shard", "all_reduce", "screened", "record_per_block", "merge_fn", "line_search")


def _build(solver_class, options_class, settings):
    wiring = {k: v for k, v in settings.items() if k in WIRING}
    options = options_class(**{k: v for k, v in settings.items() if k not in WIRING})
    return solver_class(options=options, **wiring)


def hard(**settings) -> FrankWolfeHard:
    return _build(FrankWolfeHard, HardOptions, settings)


def soft(**settings) -> FrankWolfeSoft:
    return _build(FrankWolfeSoft, SoftOptions, settings)


def random_lmo_case(seed=0, n=5, rows=3, dtype=torch.float32):
    """Random vertices, theta and gradient rows over blocks of assorted shapes (one empty)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"w": (40, 33), "b": (33,), "conv": (4, 3, 5, 5), "scalar": (), "empty": (0, 3)}

    def point(scale=1.0):
        return {k: scale * torch.randn(shape, generator=gen, dtype=dtype) for k, shape in shapes.items()}

    vertices = [point() for _ in range(n)]
    theta = point()
    grads = {"total": point(1e-2)}
    grads.update({f"task:{t}": point(1e-2) for t in range(rows - 1)})
    return list(shapes), vertices, theta, grads


def dot_tolerance(a, b, names):
    """Scale-aware float32 rounding bound per block: 1e-5 * ||a_b|| ||b_b|| (>= |<a_b, b_b>|)."""
    return torch.tensor([1e-5 * float(a[k].double().norm() * b[k].double().norm()) + 1e-12 for k in names], dtype=torch.float64)


def assert_same_scores(reference, other, vertices, theta, grads, names):
    """Equal tables up to float32 rounding, and identical selections."""
    for key, grad in grads.items():
        for i, vertex in enumerate(vertices):
            diff = (reference.grad_dots[key][i] - other.grad_dots[key][i]).abs()
            assert (diff <= dot_tolerance(grad, vertex, names)).all(), (key, i, diff)
        # block-major computes <g_b, theta_b> with theta as one more column of its first group
        assert ((reference.theta_grad_dots[key] - other.theta_grad_dots[key]).abs() <= dot_tolerance(grad, theta, names)).all()
    if reference.vertex_sq is not None:
        for i, vertex in enumerate(vertices):
            assert ((reference.vertex_sq[i] - other.vertex_sq[i]).abs() <= dot_tolerance(vertex, vertex, names)).all()
            assert ((reference.vertex_theta[i] - other.vertex_theta[i]).abs() <= dot_tolerance(theta, vertex, names)).all()
    scores = ("inner_product", "cosine") if reference.vertex_sq is not None else ("inner_product",)
    for score in scores:
        for granularity in ("task", "layer"):
            assert torch.equal(select_hard(reference, granularity, score), select_hard(other, granularity, score))
            soft = [select_soft(s, granularity, score, 2, list(grads)) for s in (reference, other)]
            assert [(d.tolist(), r) for d, r in soft[0]] == [(d.tolist(), r) for d, r in soft[1]]
