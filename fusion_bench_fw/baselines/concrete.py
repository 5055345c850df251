"""Concrete task arithmetic whose entropy objective sees only the objective tasks, while every model is merged.

FusionBench's ``ConcreteTaskArithmeticAlgorithmForCLIP`` learns a mask over the task vectors by the
entropy of the merged model on the test images of every pool model's task, as its AdaMerging does;
the paper's fair setting (§4.1) gives data-informed baselines only the objective tasks. Its mask
training loop reads the tasks from ``self.modelpool.model_names``, so, as for AdaMerging
(:mod:`.adamerging`), that loop alone sees a view of the pool limited to the objective tasks; loading
the models and the final merge see the whole pool. No FusionBench code is changed.

    fusion_bench method=concrete_objective method.objective_tasks=[scenes,shapes] modelpool=... taskpool=...
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from fusion_bench.method.concrete_subspace.clip_concrete_task_arithmetic import ConcreteTaskArithmeticAlgorithmForCLIP

from .adamerging import _ObjectiveTasksView, check_objective_tasks


class ObjectiveConcreteTaskArithmetic(ConcreteTaskArithmeticAlgorithmForCLIP):
    objective_tasks: Optional[Sequence[str]] = None

    def run(self, modelpool):
        self.entropy_tasks = check_objective_tasks(self.objective_tasks, modelpool)
        return super().run(modelpool)

    def train_mask(self, module, mask_model):
        whole = self.modelpool
        self.modelpool = _ObjectiveTasksView(whole, self.entropy_tasks)  # the adaptation loop: objective tasks only
        try:
            return super().train_mask(module, mask_model)
        finally:
            self.modelpool = whole


def objective_concrete_ta(objective_tasks: Optional[Sequence[str]] = None, **config: Any):
    """Hydra ``_target_``: FusionBench's Concrete task arithmetic with its config, its entropy restricted to ``objective_tasks``."""
    algorithm = ObjectiveConcreteTaskArithmetic(OmegaConf.create({"name": "clip_concrete_task_arithmetic", **config}))
    algorithm.objective_tasks = None if objective_tasks is None else list(objective_tasks)
    return algorithm
