"""The LMO's tables and selections, and the orders of the reading pass that fills them (in-memory sources)."""

from __future__ import annotations

import pytest
import torch

from engine_toys import BLOCKS, BlockListSource, ListSource, assert_same_scores, flat, hard, hull_source, initial_state, make_problem, random_lmo_case, solver_kwargs
from fusion_bench_fw.frank_wolfe import score_vertices, select_hard
from fusion_bench_fw.frank_wolfe.params import block_dots

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


@pytest.mark.parametrize("order", ["vertex_major", "block_major", "device_pipeline"])
def test_half_precision_products_are_summed_in_float32(order):
    """bfloat16 rows and vertices (an LLM pool computing in bfloat16): every order's tables equal the
    float64 products of the same bfloat16 values to float32 rounding. torch.dot on bfloat16 rounds
    its result to bfloat16, ~2e-3 relative on this block: 1e-5 would fail that."""
    from fusion_bench_fw.frank_wolfe.reading import PassOrder

    gen = torch.Generator().manual_seed(3)
    # a block over two CPU widening chunks, a nonzero mean so the sums are large
    shapes = {"w": (300_001,), "b": (7,)}

    def point(scale=1.0):
        return {k: (scale * (torch.randn(s, generator=gen) + 0.5)).bfloat16() for k, s in shapes.items()}

    names = list(shapes)
    vertices = [point() for _ in range(3)]
    theta = point()
    grads = {"total": point(1e-2), "task:0": point(1e-2)}
    scores = score_vertices(BlockListSource(list("xyz"), vertices), theta, grads, names, with_norms=True, order=PassOrder(order))

    def exact(a, b):
        return torch.tensor([float(torch.dot(a[k].double(), b[k].double())) for k in names], dtype=torch.float64)

    def close(measured, reference):
        assert torch.allclose(measured, reference, rtol=1e-5, atol=1e-6), (order, measured, reference)

    for key, grad in grads.items():
        for i, vertex in enumerate(vertices):
            close(scores.grad_dots[key][i], exact(grad, vertex))
        close(scores.theta_grad_dots[key], exact(grad, theta))
        close(scores.grad_sq[key], exact(grad, grad))
    for i, vertex in enumerate(vertices):
        close(scores.vertex_sq[i], exact(vertex, vertex))
        close(scores.vertex_theta[i], exact(theta, vertex))
    # the bound can see the bfloat16 rounding this guards against
    assert abs(float(torch.dot(grads["total"]["w"], vertices[0]["w"])) / float(exact(grads["total"], vertices[0])[0]) - 1) > 1e-4


def test_the_pass_order_reads_half_precision_rows_block_major_even_for_one_row():
    from fusion_bench_fw.frank_wolfe.reading import PassOrder, choose_order

    class Readable:
        def block_reader(self, indices):
            return None

    cpu = torch.device("cpu")
    assert choose_order(Readable(), cpu, 1, torch.float32) is PassOrder.VERTEX_MAJOR
    assert choose_order(Readable(), cpu, 2, torch.float32) is PassOrder.BLOCK_MAJOR
    assert choose_order(Readable(), cpu, 1, torch.bfloat16) is PassOrder.BLOCK_MAJOR
    assert choose_order(Readable(), cpu, 1, torch.float16) is PassOrder.BLOCK_MAJOR
    assert choose_order(Readable(), torch.device("cuda"), 1, torch.float32) is PassOrder.DEVICE_PIPELINE
    assert choose_order(object(), cpu, 5, torch.bfloat16) is PassOrder.VERTEX_MAJOR  # no block reader
