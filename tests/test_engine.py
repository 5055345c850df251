"""The FW engine on small convex problems with known optima (no neural nets, no FusionBench)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from fusion_bench_fw.frank_wolfe import (
    FrankWolfeHard,
    FrankWolfeSoft,
    HardOptions,
    LineSearch,
    SoftOptions,
    LossAndGrad,
    SolverState,
    StopReason,
    make_step_rule,
    project_onto_simplex,
    score_vertices,
    select_hard,
    select_soft,
)
from fusion_bench_fw.frank_wolfe.params import block_dots

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


# --- LMO ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("source_type", [ListSource, BlockListSource])
def test_layerwise_lmo_picks_per_block_minimizers(source_type):
    theta = {"a": torch.zeros(2, dtype=torch.float64), "b": torch.zeros(2, dtype=torch.float64)}
    grad = {"a": torch.tensor([1.0, 0.0], dtype=torch.float64), "b": torch.tensor([0.0, 1.0], dtype=torch.float64)}
    vertices = [
        {"a": torch.tensor([-1.0, 0.0]), "b": torch.tensor([0.0, 5.0])},  # best for block a, worst for b
        {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([0.0, -2.0])},  # best for block b
        {"a": torch.tensor([-0.5, 0.0]), "b": torch.tensor([0.0, -1.0])},  # best in total (-1.5)
    ]
    vertices = [{k: v.double() for k, v in vx.items()} for vx in vertices]
    scores = score_vertices(source_type("xyz", vertices), theta, {"total": grad}, BLOCKS)
    assert select_hard(scores, "layer", "inner_product").tolist() == [0, 1]
    # task-wise totals are 4, 1 and -1.5: the third vertex wins as a whole
    assert select_hard(scores, "task", "inner_product").tolist() == [2, 2]


@pytest.mark.parametrize("source_type", [ListSource, BlockListSource])
def test_cosine_score_ignores_norm_while_inner_product_does_not(source_type):
    theta = {"a": torch.zeros(2, dtype=torch.float64), "b": torch.zeros(1, dtype=torch.float64)}
    grad = {"a": torch.tensor([1.0, 0.0], dtype=torch.float64), "b": torch.zeros(1, dtype=torch.float64)}
    vertices = [
        {"a": torch.tensor([-1.0, 0.0]), "b": torch.zeros(1)},  # perfectly aligned with -g, small
        {"a": torch.tensor([-3.0, 4.0]), "b": torch.zeros(1)},  # larger descent, worse angle
    ]
    vertices = [{k: v.double() for k, v in vx.items()} for vx in vertices]
    scores = score_vertices(source_type("xy", vertices), theta, {"total": grad}, BLOCKS)
    assert select_hard(scores, "task", "inner_product").tolist() == [1, 1]
    assert select_hard(scores, "layer", "cosine")[0].item() == 0
    cosine = scores.block_scores("cosine")[:, 0]
    assert torch.allclose(cosine, torch.tensor([-1.0, -0.6], dtype=torch.float64))


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


@pytest.mark.parametrize("with_norms", [False, True])
@pytest.mark.parametrize("block_group", [16, 2, 1])
def test_block_major_lmo_matches_vertex_major(with_norms, block_group):
    names, vertices, theta, grads = random_lmo_case()
    labels = [f"m{i}" for i in range(len(vertices))]
    reference = score_vertices(ListSource(labels, vertices), theta, grads, names, with_norms=with_norms)
    source = BlockListSource(labels, vertices)
    blocked = score_vertices(source, theta, grads, names, with_norms=with_norms, block_group=block_group)
    assert source.block_loads == len(vertices) and source.loads == 0  # every vertex read block-major
    assert_same_scores(reference, blocked, vertices, theta, grads, names)
    # the two orders differ only by rounding, and do differ: the test can see a wrong table
    assert not torch.equal(reference.grad_dots["total"], torch.zeros_like(reference.grad_dots["total"]))


def test_block_major_tiles_large_blocks_like_whole_blocks(monkeypatch):
    """On the CPU a block is read in slices of CPU_READ_BYTES, multiplied in tiles of CPU_TILE_BYTES;
    tiny, ragged slices and tiles must give the same sums."""
    from fusion_bench_fw.frank_wolfe import reading

    names, vertices, theta, grads = random_lmo_case(seed=1)
    labels = [f"m{i}" for i in range(len(vertices))]
    whole = score_vertices(BlockListSource(labels, vertices), theta, grads, names, with_norms=True)
    monkeypatch.setattr(reading, "CPU_TILE_BYTES", 64)  # a few elements per tile, ragged last tiles
    monkeypatch.setattr(reading, "CPU_READ_BYTES", 36)  # 9 floats per slice: several tiles, ragged too
    tiled = score_vertices(BlockListSource(labels, vertices), theta, grads, names, with_norms=True, block_group=3)
    assert_same_scores(whole, tiled, vertices, theta, grads, names)


@pytest.mark.parametrize("source_type", [ListSource, BlockListSource])
def test_sharded_lmo_sums_to_the_unsharded_tables(source_type):
    names, vertices, theta, grads = random_lmo_case(seed=2, n=5)
    labels = [f"m{i}" for i in range(len(vertices))]
    full = score_vertices(source_type(labels, vertices), theta, grads, names, with_norms=True, block_group=2)
    local = {}
    for rank in (0, 1):  # first pass: capture what each rank contributes
        def capture(tensor, rank=rank):
            local[rank] = tensor.clone()
            return tensor

        source = source_type(labels, vertices)
        score_vertices(source, theta, grads, names, shard=(rank, 2), all_reduce=capture, with_norms=True, block_group=2)
        read = source.block_loads if source_type is BlockListSource else source.loads
        assert read == len(range(rank, len(vertices), 2))  # each rank reads only its share
    # zero rows for the other rank's vertices
    assert torch.count_nonzero(local[0][:, 1::2]) == 0 and torch.count_nonzero(local[1][:, 0::2]) == 0
    streamed = score_vertices(ListSource(labels, vertices), theta, grads, names, with_norms=True)
    for rank in (0, 1):
        summed = score_vertices(source_type(labels, vertices), theta, grads, names, shard=(rank, 2), all_reduce=lambda t: local[0] + local[1], with_norms=True, block_group=2)
        assert_same_scores(full, summed, vertices, theta, grads, names)
        for key in grads:
            # sharded, every process computes <g, theta> the same way: the processes agree bit for bit
            assert torch.equal(summed.theta_grad_dots[key], streamed.theta_grad_dots[key])
    with pytest.raises(ValueError, match="all_reduce"):
        score_vertices(source_type(labels, vertices), theta, grads, names, shard=(0, 2))


def test_single_row_without_norms_streams_even_with_a_block_reader():
    """One product per block: the in-place vertex-major dot beats copying the vertex into tiles."""
    names, vertices, theta, grads = random_lmo_case(seed=3, rows=1)
    labels = [f"m{i}" for i in range(len(vertices))]
    source = BlockListSource(labels, vertices)
    lean = score_vertices(source, theta, grads, names, with_norms=False)
    assert source.block_loads == 0 and source.loads == len(vertices)
    normed = score_vertices(source, theta, grads, names, with_norms=True)
    assert source.block_loads == len(vertices)
    assert_same_scores(lean, normed, vertices, theta, grads, names)


def test_group_without_block_reader_falls_back_to_streaming():
    names, vertices, theta, grads = random_lmo_case(seed=3)
    labels = [f"m{i}" for i in range(len(vertices))]
    reference = score_vertices(ListSource(labels, vertices), theta, grads, names)
    source = BlockListSource(labels, vertices, unreadable={3})
    mixed = score_vertices(source, theta, grads, names, block_group=2)
    # 3 groups of even sizes: {0} and {1,2} block-major, {3,4} streamed one checkpoint at a time
    assert source.block_loads == 3 and source.loads == 2 and source.peak_alive == 1
    assert_same_scores(reference, mixed, vertices, theta, grads, names)
    with pytest.raises(ValueError, match="block_group must be >= 1"):
        score_vertices(source, theta, grads, names, block_group=0)


@pytest.mark.parametrize("source_type", [ListSource, BlockListSource])
def test_norm_terms_are_skipped_without_norms_and_cosine_says_why(source_type):
    names, vertices, theta, grads = random_lmo_case(seed=4)
    labels = [f"m{i}" for i in range(len(vertices))]
    lean = score_vertices(source_type(labels, vertices), theta, grads, names, with_norms=False)
    assert lean.grad_sq is None and lean.theta_sq is None and lean.vertex_sq is None and lean.vertex_theta is None
    with pytest.raises(ValueError, match="with_norms=True"):
        lean.block_scores("cosine")
    full = score_vertices(source_type(labels, vertices), theta, grads, names, with_norms=True)
    assert set(full.grad_sq) == set(grads) and full.theta_sq.shape == (len(names),)
    # the inner-product score does not depend on the norms
    assert torch.equal(lean.block_scores("inner_product"), full.block_scores("inner_product"))
    # cosine from the tables equals cos(g_b, s_b - theta_b) computed directly (float32 rounding)
    for i, vertex in enumerate(vertices):
        for b, name in enumerate(names):
            g = grads["total"][name].double().reshape(-1)
            d = (vertex[name] - theta[name]).double().reshape(-1)
            if g.numel() == 0:
                continue
            expected = float(g @ d / (g.norm() * d.norm()))
            assert full.block_scores("cosine")[i, b].item() == pytest.approx(expected, abs=1e-4)


def test_block_major_rejects_a_checkpoint_of_another_shape():
    names, vertices, theta, grads = random_lmo_case(seed=5, n=2)
    vertices = [dict(v, w=torch.randn(41, 33)) for v in vertices]
    with pytest.raises(ValueError, match="parameter 'w' has 1353 elements in checkpoint.*but 1320"):
        score_vertices(BlockListSource(["a", "b"], vertices), theta, grads, names)


def test_solver_on_a_block_source_follows_the_same_path():
    problem, points = make_problem(seed=2)
    finals = []
    for source in (hull_source(points), BlockListSource(["_pretrained_"] + [f"m{i}" for i in range(1, len(points))], points)):
        state = initial_state(points)
        hard(**solver_kwargs(problem, source, max_iters=20, granularity="layer", lmo_block_group=2), line_search_evals=30).run(state)
        finals.append(state)
    assert [r["selected"] for r in finals[0].trajectory] == [r["selected"] for r in finals[1].trajectory]
    assert torch.allclose(flat(finals[0].theta), flat(finals[1].theta), atol=1e-10)


# --- PoolCheckpoints over real safetensors files ---------------------------------------------------

class FakePool:
    """What PoolCheckpoints reads of a FusionBench pool: ``_models`` (name -> model directory) and
    ``load_model``, here only allowed for the names in ``loadable``."""

    def __init__(self, models, loadable=None):
        self._models = models
        self.loadable = loadable or {}
        self.loaded = []

    def load_model(self, name):
        if name not in self.loadable:
            raise AssertionError(f"load_model({name!r}) called: the safetensors fast path was expected")
        self.loaded.append(name)
        return self.loadable[name]


class ParamModule(torch.nn.Module):
    def __init__(self, params):
        super().__init__()
        for name, tensor in params.items():
            self.register_parameter(name, torch.nn.Parameter(tensor.clone()))


class WithoutBlockReader:
    """Forces the vertex-major path on a source that has the block capability."""

    def __init__(self, source):
        self.source = source
        self.names = source.names

    def stream(self, indices=None):
        return self.source.stream(indices)


def write_models(directory, vertices, dtypes=None):
    from safetensors.torch import save_file

    models = {}
    for i, vertex in enumerate(vertices):
        folder = directory / f"m{i}"
        folder.mkdir()
        dtype = (dtypes or {}).get(i, torch.float32)
        save_file({k: v.to(dtype).contiguous() for k, v in vertex.items()}, str(folder / "model.safetensors"))
        models[f"m{i}"] = str(folder)
    return models


def test_pool_checkpoints_block_reader_reads_safetensors_slices(tmp_path):
    from fusion_bench_fw.checkpoints import PoolCheckpoints

    names, vertices, theta, grads = random_lmo_case(seed=6, n=4)
    # one bf16 and one fp16 checkpoint: read and cast to float32 like the vertex-major path does
    models = write_models(tmp_path, vertices, dtypes={1: torch.bfloat16, 2: torch.float16})
    pool = FakePool(models)
    source = PoolCheckpoints(pool, list(models), names)
    streamed = score_vertices(WithoutBlockReader(PoolCheckpoints(pool, list(models), names)), theta, grads, names, with_norms=True)
    blocked = score_vertices(source, theta, grads, names, with_norms=True, block_group=3)
    assert pool.loaded == [] and source.block_loads == 4 and source.loads == 4 and source.peak_alive == 0
    as_read = [{k: v.to(dtype).float() for k, v in vertex.items()} for vertex, dtype in zip(vertices, [torch.float32, torch.bfloat16, torch.float16, torch.float32])]
    assert_same_scores(streamed, blocked, as_read, theta, grads, names)
    # a direct read of a slice is the stored tensor's slice
    with source.block_reader([0, 3]) as reader:
        part = reader.stack("w", 5, 17)
        assert torch.equal(part, torch.stack([vertices[0]["w"].reshape(-1)[5:17], vertices[3]["w"].reshape(-1)[5:17]]))
        with pytest.raises(IndexError):
            reader.stack("w", 0, 40 * 33 + 1)
    source.validate({k: v for k, v in theta.items()})  # the validation pass still streams and checks


def test_pool_checkpoints_falls_back_without_safetensors(tmp_path):
    from fusion_bench_fw.checkpoints import PoolCheckpoints

    names, vertices, theta, grads = random_lmo_case(seed=7, n=5)
    models = write_models(tmp_path, vertices)
    (tmp_path / "m3" / "model.safetensors").unlink()  # m3 only loads through the pool
    pool = FakePool(models, loadable={"m3": ParamModule(vertices[3])})
    source = PoolCheckpoints(pool, list(models), names)
    reference = score_vertices(ListSource(list(models), vertices), theta, grads, names)
    mixed = score_vertices(source, theta, grads, names, block_group=2)
    assert pool.loaded == ["m3"] and source.block_loads == 3 and source.loads == 5 and source.peak_alive == 1
    assert_same_scores(reference, mixed, vertices, theta, grads, names)
    # prefer_safetensors=False: no block reader at all
    assert PoolCheckpoints(pool, list(models), names, prefer_safetensors=False).block_reader([0, 1]) is None
    # a file without every merged parameter: no block reader (the regular loaders report the problem)
    assert PoolCheckpoints(pool, list(models), names + ["missing"]).block_reader([0, 1]) is None


# --- step sizes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("minimizer", [0.0, 0.137, 0.37, 0.8, 1.0])
def test_line_search_finds_one_dimensional_minimum(minimizer):
    calls = []

    def loss_at(gamma):
        calls.append(gamma)
        return (gamma - minimizer) ** 2 + 1.0

    gamma, loss = LineSearch(evaluations=20).choose(0, loss_at, loss_at_zero=minimizer**2 + 1.0)
    assert abs(gamma - minimizer) < 1e-3
    assert loss == pytest.approx((gamma - minimizer) ** 2 + 1.0)
    # bounded budget: 19 interior points + gamma = 1, then the halvings when no tried step helps
    assert len(calls) == 20 + (LineSearch().backtracks if minimizer == 0.0 else 0)


def test_line_search_refuses_a_direction_that_only_hurts():
    gamma, _ = LineSearch(evaluations=8).choose(0, lambda g: 1.0 + g, loss_at_zero=1.0)
    assert gamma == 0.0


def test_open_loop_and_constant_rules():
    assert make_step_rule("open_loop").choose(0, None, 0.0)[0] == 1.0
    assert make_step_rule("open_loop", scale=0.5, offset=2).choose(2, None, 0.0)[0] == pytest.approx(0.5 * 2 / 6)
    assert make_step_rule("constant", step_size=0.3).choose(7, None, 0.0)[0] == 0.3
    with pytest.raises(ValueError, match="allowed: line_search, open_loop, constant"):
        make_step_rule("armijo")


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


def test_invalid_options_are_rejected_with_the_allowed_values():
    problem, points = make_problem()
    source = ListSource(["m1"], points[1:2])
    with pytest.raises(ValueError, match="allowed values: task, layer"):
        hard(**solver_kwargs(problem, source, granularity="block"))
    with pytest.raises(ValueError, match="allowed values: inner_product, cosine"):
        hard(**solver_kwargs(problem, source, score="dot"))
    with pytest.raises(ValueError, match="topk must be >= 1"):
        soft(**solver_kwargs(problem, source), topk=0)


def test_descent_probe_skips_a_far_vertex_that_wins_the_linear_model():
    """A vertex far away in a descent direction wins the plain LMO, but every real step toward it
    overshoots; the probe skips it for the nearby vertex that actually lowers the loss."""
    dim = 3
    target = {k: torch.ones(dim, dtype=torch.float64) for k in BLOCKS}
    problem = LeastSquares({k: torch.eye(dim, dtype=torch.float64) for k in BLOCKS}, target)
    start = {k: torch.zeros(dim, dtype=torch.float64) for k in BLOCKS}
    near = {k: 0.5 * torch.ones(dim, dtype=torch.float64) for k in BLOCKS}
    far = {k: 100.0 * torch.ones(dim, dtype=torch.float64) for k in BLOCKS}
    source = ListSource(["_pretrained_", "near", "far"], [start, near, far])
    plain = hard(**solver_kwargs(problem, source, max_iters=1), step_rule="constant", step_size=0.5)
    probed = hard(**{**solver_kwargs(problem, source, max_iters=1), "probe_step": 0.05}, step_rule="constant", step_size=0.5)
    plain_state, probed_state = initial_state([start, near, far]), initial_state([start, near, far])
    plain.run(plain_state)
    probed.run(probed_state)
    assert plain_state.trajectory[0]["selected"] == "far"
    assert probed_state.trajectory[0]["selected"] == "near"
    assert probed_state.trajectory[0]["rejected"] == ["far"]
    assert problem.loss(probed_state.theta) < problem.loss(start) < problem.loss(plain_state.theta)
    # the reported FW gap is still the plain one, over every vertex
    assert probed_state.trajectory[0]["fw_gap"] == pytest.approx(plain_state.trajectory[0]["fw_gap"])


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
    """The uniform mix (0.5) is far worse than theta_t = 0; the second search, started at theta_t
    with small steps, finds the descent the FW gap promises."""
    problem, points = _one_vertex_problem()
    source = ListSource(["m1"], points[1:])
    losses = {}
    for init in ("uniform", "current"):
        state = initial_state(points)
        kwargs = solver_kwargs(problem, source, max_iters=1, labels=["_pretrained_", "m1"], vertex_columns=[1])
        soft(**kwargs, inner_steps=3, inner_lr=0.02, inner_init=init).run(state)
        losses[init] = problem.loss(state.theta)
        assert 0.0 < float(state.theta["a"]) <= 0.1 + 1e-9  # moved toward the optimum, not past it
    assert losses["uniform"] == pytest.approx(losses["current"])  # same second search
    assert losses["uniform"] < problem.loss(points[0])


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


@pytest.mark.parametrize("with_norms", [False, True])
@pytest.mark.parametrize("rows", [1, 3])
def test_device_pipeline_matches_the_cpu_pass(monkeypatch, tmp_path, with_norms, rows):
    """The accelerator path (reader threads filling a ring of buffers, products per chunk) run on the
    CPU: chunks of a few elements and a ring smaller than the chunk count make every buffer be reused
    while reads are in flight; the tables must equal the vertex-major pass's, from the real
    safetensors slice reader, also for a single gradient row (which the CPU pass streams)."""
    from fusion_bench_fw.checkpoints import PoolCheckpoints
    from fusion_bench_fw.frank_wolfe import device_pipeline, reading

    names, vertices, theta, grads = random_lmo_case(seed=8, n=5, rows=rows)
    models = write_models(tmp_path, vertices)
    pool = FakePool(models)
    reference = score_vertices(ListSource(list(models), vertices), theta, grads, names, with_norms=with_norms)
    monkeypatch.setattr(reading, "use_device_pipeline", lambda device: True)
    monkeypatch.setattr(device_pipeline, "DEVICE_CHUNK_BYTES", 3 * 4 * 7)  # 7 floats per vertex of a group of 3
    monkeypatch.setattr(device_pipeline, "READ_THREADS", 2)
    source = PoolCheckpoints(pool, list(models), names)
    piped = score_vertices(source, theta, grads, names, with_norms=with_norms, block_group=3)
    assert pool.loaded == [] and source.block_loads == 5 and source.peak_alive == 0  # all read as slices
    assert_same_scores(reference, piped, vertices, theta, grads, names)


@pytest.mark.parametrize("with_norms", [False, True])
def test_a_combined_row_scores_like_reading_the_vertices_against_it(with_norms):
    """FW-soft derives the total row's tables from the per-task rows (total = weighted sum)."""
    from fusion_bench_fw.frank_wolfe.lmo import with_combined_row

    names, vertices, theta, grads = random_lmo_case(seed=9, rows=4)
    # a one-element block makes every cosine score +-1: ties that rounding breaks either way
    names = [name for name in names if name != "scalar"]
    weights = {"task:0": 0.5, "task:1": 0.3, "task:2": 0.2}
    task_rows = {key: grads[key] for key in weights}
    total = {name: sum(w * task_rows[key][name] for key, w in weights.items()) for name in names}
    labels = [f"m{i}" for i in range(len(vertices))]
    direct = score_vertices(ListSource(labels, vertices), theta, {"total": total, **task_rows}, names, with_norms=with_norms)
    partial = score_vertices(ListSource(labels, vertices), theta, task_rows, names, with_norms=with_norms)
    grad_sq = block_dots(total, total, names) if with_norms else None
    derived = with_combined_row(partial, "total", weights, grad_sq)
    assert_same_scores(direct, derived, vertices, theta, {"total": total, **task_rows}, names)
    if with_norms:
        with pytest.raises(ValueError, match="grad_sq"):
            with_combined_row(partial, "total", weights)


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


def test_line_search_halves_its_step_when_the_golden_section_finds_no_decrease():
    """The minimum at 0.001 lies below every point a 10-evaluation golden section tries (the
    smallest is ~0.056, already worse than gamma = 0); halving from there finds a decrease."""
    def loss_at(gamma):
        return (gamma - 0.001) ** 2

    gamma, loss = LineSearch(evaluations=10).choose(0, loss_at, loss_at_zero=loss_at(0.0))
    assert 0 < gamma < 0.002 and loss < loss_at(0.0)
    assert LineSearch(evaluations=10, backtracks=0).choose(0, loss_at, loss_at_zero=loss_at(0.0))[0] == 0.0


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
