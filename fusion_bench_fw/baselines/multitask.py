"""Multi-task fine-tuning reference (the paper's "traditional MTL" rows): ``fusion_bench method=multitask_finetune``.

Not a merge: the pretrained model is fine-tuned jointly on the objective tasks' labelled train
samples, with the same loss FW-Merging's objective uses (the model family's cross-entropy, e.g.
CLIP's zero-shot heads), and handed to the taskpool like a merged model. ``samples_per_task: 100``
gives it exactly the samples FW-Merging sees (same draw, same seed); ``null`` the whole train split.
Any model family on the seam works. Batches cycle over the tasks (one task per step, in turn), so
every task gets the same number of steps whatever its split size.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Union

import torch

from fusion_bench import BaseAlgorithm, auto_register_config
from fusion_bench.mixins import LightningFabricMixin, SimpleProfilerMixin

from ..families import family_for
from ..frank_wolfe.options import check
from ..options import TASKPOOL_TASKS, check_objective_tasks
from ..task_selection import resolve_objective_tasks
from ..trajectory import run_cache_dir

log = logging.getLogger(__name__)


@auto_register_config
class MultiTaskFineTune(SimpleProfilerMixin, LightningFabricMixin, BaseAlgorithm):
    """AdamW on the merged parameters of the family (the vision tower for CLIP), heads fixed."""

    def __init__(
        self,
        objective_tasks: Union[str, List[str], None] = TASKPOOL_TASKS,
        samples_per_task: Optional[int] = 100,
        steps: int = 500,
        batch_size: int = 32,
        lr: float = 7e-4,
        weight_decay: float = 0.0,
        seed: int = 0,
        model_family: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.objective_tasks = check_objective_tasks(objective_tasks)
        check(samples_per_task is None or int(samples_per_task) >= 1, f"samples_per_task must be >= 1 or null (the whole train split), got {samples_per_task}")
        check(int(steps) >= 1 and int(batch_size) >= 1, f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
        check(float(lr) > 0, f"lr must be > 0, got {lr}")

    def run(self, modelpool):
        if self.fabric.world_size > 1:
            raise ValueError("method=multitask_finetune runs in one process: set fabric.devices=1")
        family = family_for(modelpool, self.model_family)(modelpool, self.fabric, cache_dir=run_cache_dir(self))
        tasks = resolve_objective_tasks(family, "cross_entropy", self.objective_tasks, self)
        with self.profile("load pretrained"):
            model = family.load_base()
            names = family.merged_parameters(model)
            params = {name: p.detach().clone().requires_grad_(True) for name, p in model.named_parameters() if name in names}
        with self.profile("training data"):
            family.prepare(model, tasks)
            data = [family.task_batches(t, "cross_entropy", self.samples_per_task, self.seed + k, self.batch_size) for k, t in enumerate(tasks)]
        log.info("multi-task fine-tuning on %s: %s train samples per task, %d steps", tasks, [d.num_samples for d in data], self.steps)
        loss_fn = family.batch_loss(model, "cross_entropy")
        optimizer = torch.optim.AdamW(params.values(), lr=self.lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        orders = [torch.randperm(len(d.batches), generator=generator).tolist() for d in data]
        with self.profile("fine-tuning"):
            for step in range(self.steps):
                k, visit = step % len(data), step // len(data)
                if visit and visit % len(data[k].batches) == 0:  # a new pass over this task's batches: reshuffle their order
                    orders[k] = torch.randperm(len(data[k].batches), generator=generator).tolist()
                batch = data[k].batches[orders[k][visit % len(data[k].batches)]]
                loss = loss_fn(params, data[k].task, batch) / len(batch[0])  # every family's batch is (inputs, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step % 100 == 0 or step == self.steps - 1:
                    log.info("step %d (%s): loss %.4f", step, data[k].task, float(loss))
        self.print_profile_summary()
        return family.merged_model(model, {name: value.detach() for name, value in params.items()})
