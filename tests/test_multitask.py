"""The multi-task fine-tuning reference on the micro pool."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def train_accuracy(family, model, tasks, count):
    correct = family.batch_correct(model)
    params = dict(model.named_parameters())
    scores = []
    with torch.no_grad():
        for k, task in enumerate(tasks):
            data = family.task_batches(task, "cross_entropy", count, k, 64)
            scores.append(sum(correct(params, task, b) for b in data.batches) / data.num_samples)
    return sum(scores) / len(scores)


def test_joint_fine_tuning_fits_the_objective_tasks_samples(micro_pool):
    from lightning.fabric import Fabric

    from fusion_bench_fw.baselines.multitask import MultiTaskFineTune
    from fusion_bench_fw.families.clip_vision import CLIPVisionFamily

    pool, tasks = micro_pool.make_modelpool(), micro_pool.eval_tasks
    family = CLIPVisionFamily(pool, Fabric(accelerator="cpu", devices=1))
    pretrained = family.load_base()
    family.prepare(pretrained, tasks)
    before = train_accuracy(family, pretrained, tasks, 32)

    tuned = MultiTaskFineTune(objective_tasks=tasks, samples_per_task=32, steps=40, batch_size=16, lr=2e-3).run(pool)
    after = train_accuracy(family, tuned, tasks, 32)  # the same 32 samples per task it trained on (seed 0 + k)
    assert after > before + 0.15, (before, after)
    assert type(tuned) is type(pretrained)


def test_invalid_options_name_the_option():
    from fusion_bench_fw.baselines.multitask import MultiTaskFineTune

    with pytest.raises(ValueError, match="samples_per_task"):
        MultiTaskFineTune(samples_per_task=0)
    with pytest.raises(ValueError, match="lr"):
        MultiTaskFineTune(lr=0)
    with pytest.raises(ValueError, match="objective_tasks='scenes'"):  # a list without brackets
        MultiTaskFineTune(objective_tasks="scenes")


def test_count_none_draws_the_whole_train_split(micro_pool):
    from lightning.fabric import Fabric

    from fusion_bench_fw.families.clip_vision import CLIPVisionFamily

    pool = micro_pool.make_modelpool()
    task = micro_pool.eval_tasks[0]
    family = CLIPVisionFamily(pool, Fabric(accelerator="cpu", devices=1))
    family.prepare(family.load_base(), [task])
    whole = family.task_batches(task, "cross_entropy", None, 0, 256)
    assert whole.num_samples == len(pool.load_train_dataset(task)) > 100
    assert sum(len(batch[1]) for batch in whole.batches) == whole.num_samples
