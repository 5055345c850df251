"""The FusionBench pool/taskpool classes over the mini pool, and the pool card's two conditions."""

from __future__ import annotations

import pytest
from omegaconf import ListConfig

from fusion_bench_fw.mini import Manifest, MiniCLIPVisionModelPool, MiniCLIPVisionModelTaskPool, select_tasks
from fusion_bench_fw.mini.card import MIN_GAP
from fusion_bench_fw.mini.registry import register_tasks
from fusion_bench_fw.mini.tasks import EVAL_TASKS, TASK_ORDER


def _ta20_like_manifest() -> Manifest:
    return Manifest(
        builder_version=0, variant="ta20", seed=0, tasks=list(TASK_ORDER), eval_tasks=list(EVAL_TASKS),
        pretrained_dir="", processor_dir="", models={}, datasets={}, classnames={}, templates={},
    )


def test_select_tasks_builds_the_scaling_pools():
    m = _ta20_like_manifest()
    assert select_tasks(m) == list(TASK_ORDER) and len(TASK_ORDER) == 20
    assert select_tasks(m, "eval") == list(EVAL_TASKS)
    assert select_tasks(m, num_irrelevant=0) == list(EVAL_TASKS)
    eight = select_tasks(m, num_irrelevant=8)
    assert eight[:4] == list(EVAL_TASKS) and len(eight) == 12 and not set(eight[4:]) & set(EVAL_TASKS)
    assert eight == select_tasks(m, first_n=12)  # the order starts with the eval tasks
    assert select_tasks(m, first_n=6) == list(TASK_ORDER[:6])
    assert select_tasks(m, ["digits", "colors"]) == ["digits", "colors"]
    assert select_tasks(m, "digits") == ["digits"]
    for bad in (
        dict(tasks=["digits"], first_n=2),
        dict(tasks=["nope"]),
        dict(tasks=["digits", "digits"]),
        dict(first_n=0),
        dict(first_n=21),
        dict(num_irrelevant=17),
    ):
        with pytest.raises(ValueError):
            select_tasks(m, **bad)


def test_registration_refuses_to_shadow_fusion_bench_datasets():
    with pytest.raises(ValueError, match="clashes"):
        register_tasks({"mnist": ["a", "b"]}, {"mnist": ["{c}"]})


@pytest.mark.slow
def test_modelpool_exposes_the_build_to_stock_fusion_bench(mini_cache_dir, mini_micro_manifest):
    from fusion_bench.tasks.clip_classification import CLIPTemplateFactory, get_classnames_and_templates
    from fusion_bench.utils import instantiate
    from transformers import CLIPVisionModel

    m = mini_micro_manifest
    for task in m.tasks:  # prove that constructing the pool registers the tasks
        CLIPTemplateFactory._dataset_mapping.pop(task, None)
    pool = MiniCLIPVisionModelPool("micro", cache_dir=str(mini_cache_dir))
    assert pool.model_names == m.tasks and pool.has_pretrained
    assert pool._models["_pretrained_"] == m.pretrained_dir and pool._processor == m.processor_dir
    assert pool.train_dataset_names == m.tasks and pool.test_dataset_names == m.tasks
    names, templates = get_classnames_and_templates("scenes")
    assert names == m.classnames["scenes"]
    assert [t("beach") for t in templates] == [s.format(c="beach") for s in m.templates["scenes"]]

    model = pool.load_model("textures")
    assert isinstance(model, CLIPVisionModel) and model.config._name_or_path == m.models["textures"]
    test = pool.load_test_dataset("textures")
    assert len(test) > 0 and test.features["label"].names == m.classnames["textures"]

    # Hydra hands lists over as ListConfig; selection params work as in the CLI
    small = MiniCLIPVisionModelPool("micro", cache_dir=str(mini_cache_dir), num_irrelevant=1)
    assert small.model_names == m.eval_tasks + [m.tasks[len(m.eval_tasks)]]
    listed = MiniCLIPVisionModelPool("micro", cache_dir=str(mini_cache_dir), tasks=ListConfig(["colors", "scenes"]))
    assert listed.model_names == ["colors", "scenes"]
    # .config reproduces the pool
    again = instantiate(listed.config)
    assert type(again) is MiniCLIPVisionModelPool and again.model_names == ["colors", "scenes"]


@pytest.mark.slow
def test_extra_models_join_the_pool_without_datasets(mini_cache_dir, mini_micro_manifest, tmp_path):
    """`modelpool.extra_models` adds outside checkpoints (the noisy-model benchmark's way in)."""
    from fusion_bench.utils import instantiate
    from transformers import CLIPVisionConfig, CLIPVisionModel

    m = mini_micro_manifest
    config = CLIPVisionConfig.from_pretrained(m.models["scenes"])
    CLIPVisionModel(config).save_pretrained(tmp_path / "outsider")
    pool = MiniCLIPVisionModelPool("micro", cache_dir=str(mini_cache_dir), tasks=["scenes"], extra_models={"outsider": str(tmp_path / "outsider")})
    assert pool.model_names == ["scenes", "outsider"]
    assert pool.train_dataset_names == ["scenes"]  # the outsider brings no data
    assert pool.load_model("outsider").config._name_or_path == str(tmp_path / "outsider")
    assert instantiate(pool.config).model_names == ["scenes", "outsider"]
    with pytest.raises(ValueError, match="extra_models.ghost: .* is not a directory"):
        MiniCLIPVisionModelPool("micro", cache_dir=str(mini_cache_dir), extra_models={"ghost": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="'scenes' is already a model of the pool"):
        MiniCLIPVisionModelPool("micro", cache_dir=str(mini_cache_dir), extra_models={"scenes": str(tmp_path / "outsider")})


@pytest.mark.slow
def test_taskpool_first_n_replaces_the_configs_whole_group_selection(mini_cache_dir, mini_micro_manifest):
    """taskpool=..._all plus taskpool.first_n=3 (the relevant-addition curve) means the first 3 tasks."""
    m = mini_micro_manifest
    for group in ("all", "eval"):
        taskpool = MiniCLIPVisionModelTaskPool("micro", cache_dir=str(mini_cache_dir), tasks=group, first_n=3)
        assert list(taskpool._test_datasets) == m.tasks[:3]


def _evaluate(taskpool, model) -> dict:
    report = taskpool.evaluate(model)
    return {t: report[t]["accuracy"] for t in taskpool._test_datasets}


@pytest.mark.slow
def test_taskpool_reproduces_the_card_and_condition_a(mini_cache_dir, mini_micro_manifest, mini_micro_card):
    m, card = mini_micro_manifest, mini_micro_card
    pool = MiniCLIPVisionModelPool("micro", cache_dir=str(mini_cache_dir))
    taskpool = MiniCLIPVisionModelTaskPool("micro", cache_dir=str(mini_cache_dir))
    assert list(taskpool._test_datasets) == m.eval_tasks
    tol = 1.5 / len(pool.load_test_dataset(m.eval_tasks[0]))  # one test image, plus float slack

    zero_shot = _evaluate(taskpool, pool.load_model("_pretrained_"))
    finetuned = {t: _evaluate(taskpool, pool.load_model(t))[t] for t in m.eval_tasks}
    for t in m.eval_tasks:
        assert zero_shot[t] == pytest.approx(card["tasks"][t]["zero_shot"], abs=tol)
        assert finetuned[t] == pytest.approx(card["tasks"][t]["finetuned"], abs=tol)
    chance = sum(1 / len(m.classnames[t]) for t in m.eval_tasks) / len(m.eval_tasks)
    assert sum(zero_shot.values()) / len(zero_shot) > 1.5 * chance  # the pretrained CLIP learnt something
    gap = sum(finetuned.values()) / len(finetuned) - sum(zero_shot.values()) / len(zero_shot)
    assert gap >= MIN_GAP  # condition (a), measured through stock FusionBench evaluation
    assert card["conditions"]["a_holds"] and card["conditions"]["a_finetune_gap"] == pytest.approx(gap, abs=tol)

    all_tasks = MiniCLIPVisionModelTaskPool("micro", cache_dir=str(mini_cache_dir), tasks="all")
    assert list(all_tasks._test_datasets) == m.tasks


@pytest.mark.slow
def test_condition_b_with_fusion_bench_task_arithmetic(mini_cache_dir, mini_micro_manifest, mini_micro_card):
    """Merging every micro model by task arithmetic scores below merging only the eval-task models."""
    from fusion_bench.method import TaskArithmeticAlgorithm

    m, card = mini_micro_manifest, mini_micro_card
    taskpool = MiniCLIPVisionModelTaskPool("micro", cache_dir=str(mini_cache_dir))
    tol = 1.5 / len(MiniCLIPVisionModelPool("micro", cache_dir=str(mini_cache_dir)).load_test_dataset(m.eval_tasks[0]))
    averages = {}
    for label, selection in (("relevant", "eval"), ("all", None)):
        pool = MiniCLIPVisionModelPool("micro", cache_dir=str(mini_cache_dir), tasks=selection)
        merged = TaskArithmeticAlgorithm(scaling_factor=0.3).run(pool)
        acc = _evaluate(taskpool, merged)
        averages[label] = sum(acc.values()) / len(acc)
        assert averages[label] == pytest.approx(card["task_arithmetic"][label]["at_default"], abs=tol)
    assert averages["all"] < averages["relevant"]
    assert card["conditions"]["b_holds_at_default"]
