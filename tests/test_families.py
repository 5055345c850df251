"""The model-family seam: FWHard/FWSoft run on any family; the CLIP family is chosen from the pool."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from fusion_bench.modelpool import BaseModelPool

from fusion_bench_fw import FWHard, FWSoft
from fusion_bench_fw.families import ModelFamily, family_for, register_family
from fusion_bench_fw.objective import sample_indices, shard_batches

TASKS = ("a", "b", "c")


def _maps(seed=0):
    """A base linear map and one 'fine-tune' per task: the base plus a small task-specific change."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(3, 4, generator=gen)
    return base, {t: base + 0.3 * torch.randn(3, 4, generator=gen) for t in TASKS}


def _linear(weight):
    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


class LinearRegressionPool(BaseModelPool):
    """A pool of in-memory linear maps; task t's data follow fine-tune t's map."""


@register_family
class LinearRegressionFamily(ModelFamily):
    """Linear regressors of an in-memory pool (a test family, no FusionBench model class)."""

    name = "test_linear"
    description = "in-memory linear regressors (tests)"
    losses = ("cross_entropy",)  # only the name is shared: here it is the squared error on labelled samples

    @classmethod
    def accepts(cls, modelpool) -> bool:
        return isinstance(modelpool, LinearRegressionPool)

    def load_base(self):
        return self.modelpool.load_model("_pretrained_").requires_grad_(False).eval()

    def tasks_with_data(self, loss):
        return list(TASKS)

    def task_batches(self, task, loss, count, seed, batch_size):
        gen = torch.Generator().manual_seed(1000 + seed)
        inputs = torch.randn(count, 4, generator=gen)
        targets = inputs @ self.modelpool.load_model(task).weight.detach().t()
        return shard_batches(task, sample_indices(count, count, seed), batch_size, lambda idx: (inputs[idx], targets[idx]))

    def batch_loss(self, model, loss):
        return lambda params, task, batch: (functional_call(model, dict(params), (batch[0],)) - batch[1]).pow(2).sum()


def _pool():
    base, maps = _maps()
    return LinearRegressionPool(models={"_pretrained_": _linear(base), **{t: _linear(w) for t, w in maps.items()}}), maps


@pytest.mark.parametrize("algorithm", ["hard", "soft"])
def test_a_family_without_clip_merges_through_the_same_algorithms(algorithm, tmp_path):
    """The objective is task b's regression: FW must move (nearly) all weight onto b's model and
    return the family's own model with b's map written into it."""
    pool, maps = _pool()
    common = dict(objective_tasks=["b"], samples_per_task=64, trajectory_path=str(tmp_path / "t.json"), max_relative_distance=None, probe_step=0)
    method = FWHard(granularity="task", variant="fw", max_iters=30, **common) if algorithm == "hard" else FWSoft(max_iters=10, inner_steps=40, inner_lr=0.1, **common)
    merged = method.run(pool)
    assert isinstance(merged, nn.Linear)
    weights = method.fw_summary["weights"]
    assert weights["b"] > 0.9 and max(weights["a"], weights["c"]) < 0.05
    assert torch.allclose(merged.weight, maps["b"], atol=0.05 * float(maps["b"].abs().max()))
    assert method.fw_summary["model_family"] == "test_linear"
    assert method.fw_summary["lmo_pass_order"] == "vertex_major"  # in-memory models: no slice reader


def test_the_clip_family_is_chosen_for_a_clip_pool_and_an_unknown_pool_is_refused():
    from fusion_bench.modelpool import CLIPVisionModelPool

    from fusion_bench_fw.families.clip_vision import CLIPVisionFamily

    assert family_for(CLIPVisionModelPool(models={})) is CLIPVisionFamily
    with pytest.raises(ValueError, match=r"no model family for a BaseModelPool.*clip_vision.*method.model_family"):
        family_for(BaseModelPool(models={}))
    with pytest.raises(ValueError, match=r"invalid model_family='llama'; allowed values: clip_vision"):
        family_for(BaseModelPool(models={}), "llama")


def test_a_loss_the_family_cannot_compute_is_refused_before_any_model_is_loaded():
    pool, _ = _pool()
    with pytest.raises(ValueError, match=r"invalid loss='entropy' for test_linear pools; allowed values: cross_entropy"):
        FWSoft(loss="entropy", objective_tasks=["a"]).run(pool)
