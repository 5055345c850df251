"""AdaMerging whose entropy objective sees only the objective tasks, while every model is merged.

The paper trains every data-informed baseline "only on the same tasks as FW-Merging" (§4.1).
FusionBench's CLIP AdaMerging (task- and layer-wise) sums the entropy of every pool model's task,
so on a pool of 20 with 4 objective tasks it uses 5x the unlabeled data FW sees. Its adaptation
loop reads the task list from ``self.modelpool.model_names``; during the adaptation only, we show it
a view of the pool whose ``model_names`` are the objective tasks. Model loading (before) and the
merge (after) still see the whole pool. No FusionBench code is changed. ``samples_per_task`` also
limits the view's test sets to that many images per task (a fixed seeded draw), for comparisons at
equal data (the data-efficiency benchmark); null keeps the whole test splits, FusionBench's setting.

    fusion_bench method=adamerging_objective method.objective_tasks=[scenes,shapes] \
        method.name=clip_task_wise_adamerging modelpool=... taskpool=...
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset

from fusion_bench.method.adamerging.clip_layer_wise_adamerging import CLIPLayerWiseAdaMergingAlgorithm
from fusion_bench.method.adamerging.clip_task_wise_adamerging import CLIPTaskWiseAdaMergingAlgorithm

VARIANTS = {
    "clip_layer_wise_adamerging": CLIPLayerWiseAdaMergingAlgorithm,
    "clip_task_wise_adamerging": CLIPTaskWiseAdaMergingAlgorithm,
}


class _ObjectiveTasksView:
    """The pool as the adaptation loop sees it: only the objective tasks' names (and at most
    ``samples_per_task`` test images of each); all else delegated."""

    def __init__(self, pool: Any, tasks: Sequence[str], samples_per_task: Optional[int] = None):
        self._pool = pool
        self._tasks = list(tasks)
        self._samples_per_task = samples_per_task

    @property
    def model_names(self):
        return list(self._tasks)

    def load_test_dataset(self, name: str, *args, **kwargs):
        dataset = self._pool.load_test_dataset(name, *args, **kwargs)
        if self._samples_per_task is None or self._samples_per_task >= len(dataset):
            return dataset
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
        return Subset(dataset, order[: self._samples_per_task].tolist())

    def __getattr__(self, name: str):
        return getattr(self._pool, name)


class _ObjectiveTasksOnly:
    """Mixin for FusionBench's CLIP AdaMerging classes (placed before them in the bases)."""

    objective_tasks: Optional[Sequence[str]] = None
    samples_per_task: Optional[int] = None

    def run(self, modelpool, **kwargs):
        self.entropy_tasks = check_objective_tasks(self.objective_tasks, modelpool)
        return super().run(modelpool, **kwargs)

    def test_time_adaptation(self, module):
        whole = self.modelpool
        self.modelpool = _ObjectiveTasksView(whole, self.entropy_tasks, self.samples_per_task)  # heads + loop: objective tasks
        try:
            return super().test_time_adaptation(module)
        finally:
            self.modelpool = whole


class ObjectiveLayerWiseAdaMerging(_ObjectiveTasksOnly, CLIPLayerWiseAdaMergingAlgorithm):
    pass


class ObjectiveTaskWiseAdaMerging(_ObjectiveTasksOnly, CLIPTaskWiseAdaMergingAlgorithm):
    pass


_RESTRICTED = {
    "clip_layer_wise_adamerging": ObjectiveLayerWiseAdaMerging,
    "clip_task_wise_adamerging": ObjectiveTaskWiseAdaMerging,
}


def check_objective_tasks(tasks: Optional[Sequence[str]], modelpool) -> list:
    """The tasks whose test images feed the entropy (all of the pool's when ``tasks`` is null)."""
    names = list(modelpool.model_names)
    if tasks is None:
        return names
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in names]
    if not tasks or unknown:
        raise ValueError(
            f"method.objective_tasks={tasks}: {'empty' if not tasks else f'not models of the pool: {unknown}'}; "
            f"choose among the pool's models {names}, or set it to null for every task (FusionBench's default)"
        )
    have_data = set(modelpool.test_dataset_names) if hasattr(modelpool, "test_dataset_names") else set(tasks)
    missing = [t for t in tasks if t not in have_data]
    if missing:
        raise ValueError(f"method.objective_tasks: the pool has no test_datasets entry for {missing}; AdaMerging adapts on their unlabeled test images")
    return tasks


def objective_adamerging(name: str = "clip_layer_wise_adamerging", objective_tasks: Optional[Sequence[str]] = None, samples_per_task: Optional[int] = None, **config: Any):
    """Hydra ``_target_``: FusionBench's AdaMerging class ``name`` with its config, restricted to
    ``objective_tasks`` (and ``samples_per_task`` test images of each)."""
    if samples_per_task is not None and int(samples_per_task) < 1:
        raise ValueError(f"method.samples_per_task={samples_per_task}: use a positive number of test images per task, or null for the whole test splits")
    if name not in _RESTRICTED:
        raise ValueError(f"method.name={name!r}: choose one of {sorted(_RESTRICTED)}")
    algorithm_config: DictConfig = OmegaConf.create({"name": name, **config})
    algorithm = _RESTRICTED[name](algorithm_config)
    algorithm.objective_tasks = None if objective_tasks is None else list(objective_tasks)
    algorithm.samples_per_task = None if samples_per_task is None else int(samples_per_task)
    return algorithm
