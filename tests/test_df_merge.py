"""DF-Merge: the streamed Fisher-weighted merge against a dense reference, and the method on the micro pool."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from fusion_bench_fw.baselines.fisher_weighted import FisherMergeAccumulator, SampleGradients, diagonal_fisher, fisher_merge_streamed

# --- a toy pool: softmax regression, whose per-sample gradient is known in closed form ---------

CLASSES, FEATURES = 3, 4


def toy_loss(params, task, batch):
    x, y = batch
    return F.cross_entropy(x @ params["w"].T + params["b"], y, reduction="sum")


def analytic_fisher(params, tasks):
    """Mean over tasks of the mean over samples of ((p - e_y) x^T)^2 and (p - e_y)^2."""
    fw, fb = torch.zeros_like(params["w"]), torch.zeros_like(params["b"])
    for x, y in tasks:
        residual = (x @ params["w"].T + params["b"]).softmax(-1) - F.one_hot(y, CLASSES).double()
        fw += (residual[:, :, None] * x[:, None, :]).square().mean(0) / len(tasks)
        fb += residual.square().mean(0) / len(tasks)
    return {"w": fw, "b": fb}


@pytest.fixture
def toy():
    g = torch.Generator().manual_seed(0)
    theta0 = {"w": torch.randn(CLASSES, FEATURES, generator=g, dtype=torch.float64), "b": torch.zeros(CLASSES, dtype=torch.float64)}
    models = [{k: v + 0.5 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in theta0.items()} for _ in range(3)]
    tasks = [(torch.randn(n, FEATURES, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (n,), generator=g)) for n in (5, 7)]
    return theta0, models, tasks


def per_sample_batches(tasks, batch_size=1):
    return [(f"t{k}", [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)], len(y)) for k, (x, y) in enumerate(tasks)]


def test_diagonal_fisher_is_the_empirical_fisher(toy):
    theta0, models, tasks = toy
    fisher = diagonal_fisher(models[0], toy_loss, per_sample_batches(tasks))
    expected = analytic_fisher(models[0], tasks)
    for name in expected:
        torch.testing.assert_close(fisher[name], expected[name])
    # batches of several samples: per-sample gradients in one vectorised pass, the same Fisher
    batched = diagonal_fisher(models[0], toy_loss, per_sample_batches(tasks, batch_size=4))
    for name in expected:
        torch.testing.assert_close(batched[name], expected[name])
    # (the squared gradient of a whole batch's loss would be a different, coarser estimate)
    x, y = tasks[0]
    leaves = {k: v.clone().requires_grad_(True) for k, v in models[0].items()}
    coarse = torch.autograd.grad(toy_loss(leaves, "t0", (x, y)), leaves["w"])[0].square() / len(y)
    exact = diagonal_fisher(models[0], toy_loss, per_sample_batches([tasks[0]], batch_size=len(y)))["w"]
    torch.testing.assert_close(exact, analytic_fisher(models[0], [tasks[0]])["w"])
    assert not torch.allclose(exact, coarse)


def test_a_loss_vmap_cannot_batch_falls_back_to_one_backward_pass_per_sample(toy):
    theta0, models, tasks = toy
    calls = []

    def unbatchable_loss(params, task, batch):
        x, y = batch
        calls.append(len(y))
        if float(x.sum()) > 1e9:  # data-dependent control flow: vmap refuses .item() on a batched tensor
            raise AssertionError
        return toy_loss(params, task, batch)

    gradients = SampleGradients(unbatchable_loss)
    x, y = tasks[1]
    squares = gradients.summed_squares(models[0], "t1", (x, y))
    assert not gradients.vectorised
    expected = analytic_fisher(models[0], [tasks[1]])
    torch.testing.assert_close(squares["w"] / len(y), expected["w"])
    assert calls[-len(y):] == [1] * len(y)  # then one sample at a time
    with pytest.raises(ValueError, match="common first"):
        gradients.summed_squares(models[0], "t1", (x, y[:2]))


def test_streamed_fisher_merge_equals_the_dense_formula(toy):
    theta0, models, tasks = toy
    coefficients = [0.2, 0.9, 0.5]
    floor = 1e-3
    streamed = fisher_merge_streamed(theta0, enumerate(models), coefficients, lambda point: diagonal_fisher(point, toy_loss, per_sample_batches(tasks)), floor)
    # dense: every scaled model and its Fisher in memory at once
    deltas = [{k: lam * (m[k] - theta0[k]) for k in theta0} for lam, m in zip(coefficients, models)]
    fishers = [analytic_fisher({k: theta0[k] + d[k] for k in theta0}, tasks) for d in deltas]
    for k in theta0:
        numerator = sum((f[k] + floor) * d[k] for f, d in zip(fishers, deltas))
        denominator = sum(f[k] + floor for f in fishers)
        torch.testing.assert_close(streamed[k], theta0[k] + numerator / denominator)
    # unequal Fishers: not the plain mean of the scaled task vectors
    mean = {k: theta0[k] + sum(d[k] for d in deltas) / 3 for k in theta0}
    assert not torch.allclose(streamed["w"], mean["w"])


def test_without_fisher_information_the_merge_is_the_mean_of_scaled_task_vectors(toy):
    theta0, models, _ = toy
    accumulator = FisherMergeAccumulator(theta0, floor=1e-12)
    deltas = [{k: 0.5 * (m[k] - theta0[k]) for k in theta0} for m in models]
    for d in deltas:
        accumulator.add({k: torch.zeros_like(v) for k, v in theta0.items()}, d)
    merged = accumulator.merged()
    torch.testing.assert_close(merged["w"], theta0["w"] + sum(d["w"] for d in deltas) / 3)
    with pytest.raises(ValueError, match="no model"):
        FisherMergeAccumulator(theta0).merged()


# --- the FusionBench algorithm on the micro pool ---------------------------------------------


def test_invalid_options_fail_at_construction_naming_the_option():
    from fusion_bench_fw import DFMerge

    with pytest.raises(ValueError, match="fisher_samples_per_task"):
        DFMerge(samples_per_task=10, fisher_samples_per_task=20)
    with pytest.raises(ValueError, match="acquisition.*ucb, ei"):
        DFMerge(acquisition="pi")
    with pytest.raises(ValueError, match="coefficient_min"):
        DFMerge(coefficient_min=1.0, coefficient_max=0.5)
    with pytest.raises(ValueError, match="objective_tasks='scenes'"):  # a list without brackets
        DFMerge(objective_tasks="scenes")


@pytest.mark.slow
def test_bayesian_optimisation_beats_its_initial_points_and_returns_the_best_merge(micro_pool, tmp_path):
    from lightning.fabric import Fabric

    from fusion_bench_fw import DFMerge
    from fusion_bench_fw.families.clip_vision import CLIPVisionFamily

    pool = micro_pool.make_modelpool()
    tasks = micro_pool.eval_tasks
    trajectory_path = tmp_path / "df.json"
    algorithm = DFMerge(init_points=3, n_iter=10, samples_per_task=100, fisher_samples_per_task=10, objective_tasks=tasks, trajectory_path=str(trajectory_path))
    merged = algorithm.run(pool)

    record = json.loads(trajectory_path.read_text())
    steps = record["iterations"]
    assert [s["phase"] for s in steps] == ["init"] * 3 + ["bo"] * 10
    best_init = max(s["validation_accuracy"] for s in steps[:3])
    best_bo = max(s["validation_accuracy"] for s in steps[3:])
    assert best_bo > best_init + 0.02  # measured: 0.430 vs 0.375 (200 validation samples)
    summary = record["summary"]
    assert summary["best_validation_accuracy"] == max(best_init, best_bo)
    # streaming: one checkpoint alive at a time, every model read once per step, by the safetensors reader
    models = len(pool.model_names)
    assert summary["peak_streamed_checkpoints"] == 1
    assert summary["checkpoint_loads"] == 13 * models
    assert summary["readers"] == {"safetensors": models, "pool_loader": 0}
    for coefficient in summary["coefficients"].values():
        assert 0.0 <= coefficient <= 1.0

    # the returned model is the best step's merge: its validation accuracy, scored independently, is the recorded best
    family = CLIPVisionFamily(pool, Fabric(accelerator="cpu", devices=1))
    family.prepare(merged, tasks)
    correct = family.batch_correct(merged)
    params = dict(merged.named_parameters())
    with torch.no_grad():
        scores = []
        for k, task in enumerate(tasks):
            data = family.task_batches(task, "cross_entropy", 100, k, 32)  # seed 0 + k, train split
            scores.append(sum(correct(params, task, b) for b in data.batches) / data.num_samples)
    assert sum(scores) / len(scores) == pytest.approx(summary["best_validation_accuracy"])
    assert sum(scores) / len(scores) > micro_pool.chance_level


@pytest.mark.slow
def test_a_pool_without_train_splits_is_refused_before_any_merge(micro_pool):
    from fusion_bench_fw import DFMerge

    pool = micro_pool.make_modelpool()
    pool._train_datasets = None  # FusionBench's attribute behind train_dataset_names
    with pytest.raises(ValueError, match="train datasets"):
        DFMerge(init_points=1, n_iter=0, objective_tasks=None).run(pool)
