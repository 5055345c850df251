"""The paper's fair AdaMerging: entropy on the objective tasks only, every model merged."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from fusion_bench_fw.baselines.adamerging import ObjectiveTaskWiseAdaMerging, objective_adamerging

SETTINGS = dict(lr=1e-2, init_values=0.3, clamp_weights=False, tie_weights=True, strict=False, devices=1, batch_size=8,
                num_workers=0, max_steps=2, fast_dev_run=False, save_merging_weights=False, cache_dir="outputs", weights=None, optimizer="adam")


class _SeenTasks(ObjectiveTaskWiseAdaMerging):
    """Records the task of every entropy term the adaptation loop computes."""

    seen: list

    def compute_logits(self, module, batch, task):
        self.seen.append(task)
        return super().compute_logits(module, batch, task)


def _run(micro_pool, tasks, tmp_path):
    from omegaconf import OmegaConf

    algorithm = _SeenTasks(OmegaConf.create({"name": "clip_task_wise_adamerging", **SETTINGS, "cache_dir": str(tmp_path)}))
    algorithm.objective_tasks, algorithm.seen = tasks, []
    algorithm._fabric = L.Fabric(accelerator="cpu", devices=1)  # what the fusion_bench program hands it
    pool = micro_pool.make_modelpool()
    merged = algorithm.run(pool)
    return algorithm, pool, merged


def test_entropy_sees_only_the_objective_tasks_and_every_model_is_merged(micro_pool, tmp_path):
    task = micro_pool.eval_tasks[0]
    algorithm, pool, merged = _run(micro_pool, [task], tmp_path)
    assert algorithm.seen == [task] * SETTINGS["max_steps"]
    assert algorithm.modelpool is pool  # the view is gone after the adaptation
    # the merge holds all five models: theta_0 + sum_i w_i tau_i with every w_i > 0 moves every task vector in
    base = pool.load_model("_pretrained_").state_dict()
    key = "vision_model.encoder.layers.0.mlp.fc1.weight"
    delta = merged.state_dict()[key] - base[key]
    vectors = torch.stack([pool.load_model(n).state_dict()[key].flatten() - base[key].flatten() for n in pool.model_names])
    weights = torch.linalg.lstsq(vectors.t(), delta.flatten().unsqueeze(1)).solution.flatten()
    assert len(pool.model_names) == 5 and (weights > 0.2).all(), weights


def test_null_objective_tasks_is_fusion_bench_default(micro_pool, tmp_path):
    algorithm, pool, _ = _run(micro_pool, None, tmp_path)
    assert algorithm.seen == list(pool.model_names) * SETTINGS["max_steps"]


def test_unknown_objective_task_is_refused_before_loading(micro_pool, tmp_path):
    algorithm = objective_adamerging("clip_task_wise_adamerging", ["sun397"], **SETTINGS)
    with pytest.raises(ValueError, match=r"objective_tasks=\['sun397'\].*not models of the pool"):
        algorithm.run(micro_pool.make_modelpool())
    with pytest.raises(ValueError, match="method.name='adamerging'"):
        objective_adamerging("adamerging", None, **SETTINGS)
