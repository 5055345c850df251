"""AdaMerging + Representation Surgery whose test-time data are only the objective tasks', every model merged.

FusionBench's ``surgery/adamerging_surgery`` runs layer-wise AdaMerging (entropy on the test images of
every pool model's task), then trains one small feature adapter per pool task so that the merged
tower's projected features match that task's fine-tuned model's (L1, on the same test images). The
paper's fair setting (§4.1) gives data-informed baselines only the objective tasks. FusionBench's
``run(modelpool)`` takes the task list from the pool it is given, for the AdaMerging loop and for
the surgery alike; here it is given a view of the pool limited to the objective tasks, and only the
construction of the merged model sees the whole pool, so every model is merged. No FusionBench code
is changed. The result is FusionBench's ``{"adamerging": model, "surgery": model}``; the surgery
model has adapters for the objective tasks only, so evaluate it on those (the taskpool's tasks).

    fusion_bench method=surgery_objective method.objective_tasks=[scenes,shapes] modelpool=... taskpool=...
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from fusion_bench.method.surgery.clip_layer_wise_adamerging_surgery import CLIPLayerWiseAdaMergingSurgeryAlgorithm

from ..families.base import ModelFamily
from .adamerging import _ObjectiveTasksView, check_objective_tasks


class ObjectiveAdaMergingSurgery(CLIPLayerWiseAdaMergingSurgeryAlgorithm):
    objective_tasks: Optional[Sequence[str]] = None

    def run(self, modelpool, **kwargs):
        tasks = check_objective_tasks(self.objective_tasks, modelpool)
        check_taskpool_has_adapters(getattr(getattr(self, "_program", None), "taskpool", None), tasks)
        self._whole_pool = modelpool
        return super().run(_ObjectiveTasksView(modelpool, tasks), **kwargs)

    def construct_layer_wise_merged_model(self, modelpool):
        return super().construct_layer_wise_merged_model(self._whole_pool)  # every model is merged


def check_taskpool_has_adapters(taskpool, tasks: Sequence[str]) -> None:
    """Before any adaptation: the surgery model scores only the tasks it has adapters for, so a
    taskpool that evaluates another task would fail at the very end (an AttributeError inside
    FusionBench's classifier)."""
    evaluated = ModelFamily.taskpool_tasks(taskpool) if taskpool is not None else None
    missing = [t for t in evaluated or [] if t not in tasks]
    if missing:
        raise ValueError(
            f"method=surgery_objective: the taskpool evaluates {missing}, for which the surgery model would have no "
            f"adapter (method.objective_tasks={list(tasks)}); add them to method.objective_tasks or evaluate only those tasks"
        )


def objective_surgery(objective_tasks: Optional[Sequence[str]] = None, **config: Any):
    """Hydra ``_target_``: FusionBench's layer-wise AdaMerging + Surgery with its config, its test-time
    data restricted to ``objective_tasks`` (null: every pool task, FusionBench's behaviour)."""
    algorithm = ObjectiveAdaMergingSurgery(OmegaConf.create({"name": "clip_layer_wise_adamerging_surgery", **config}))
    algorithm.objective_tasks = None if objective_tasks is None else list(objective_tasks)
    return algorithm
