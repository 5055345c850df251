"""The paper's fair AdaMerging: entropy on the objective tasks only, every model merged."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from fusion_bench_fw.baselines.adamerging import ObjectiveTaskWiseAdaMerging, objective_adamerging

from fusion_bench_fw.mini.card_adamerging import SETTINGS as CARD_SETTINGS

SETTINGS = {**CARD_SETTINGS, "lr": 1e-2, "batch_size": 8, "max_steps": 2, "cache_dir": "outputs"}


class _SeenTasks(ObjectiveTaskWiseAdaMerging):
    """Records the task of every entropy term the adaptation loop computes."""

    seen: list
    batch_sizes: list

    def compute_logits(self, module, batch, task):
        self.seen.append(task)
        self.batch_sizes.append(len(batch[0]))  # batch = (images, labels)
        return super().compute_logits(module, batch, task)


def _run(micro_pool, tasks, tmp_path, samples_per_task=None):
    from omegaconf import OmegaConf

    algorithm = _SeenTasks(OmegaConf.create({"name": "clip_task_wise_adamerging", **SETTINGS, "cache_dir": str(tmp_path)}))
    algorithm.objective_tasks, algorithm.seen, algorithm.batch_sizes = tasks, [], []
    algorithm.samples_per_task = samples_per_task
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


def test_samples_per_task_limits_the_test_images_the_entropy_sees(micro_pool, tmp_path):
    task = micro_pool.eval_tasks[0]
    algorithm, pool, _ = _run(micro_pool, [task], tmp_path, samples_per_task=3)
    assert len(pool.load_test_dataset(task)) > SETTINGS["batch_size"] > 3
    assert algorithm.batch_sizes == [3] * SETTINGS["max_steps"]  # every batch is the whole 3-image subset
    unlimited, _, _ = _run(micro_pool, [task], tmp_path)
    assert unlimited.batch_sizes == [SETTINGS["batch_size"]] * SETTINGS["max_steps"]
    with pytest.raises(ValueError, match="method.samples_per_task=0"):
        objective_adamerging("clip_task_wise_adamerging", [task], samples_per_task=0, **SETTINGS)


def test_null_objective_tasks_is_fusion_bench_default(micro_pool, tmp_path):
    algorithm, pool, _ = _run(micro_pool, None, tmp_path)
    assert algorithm.seen == list(pool.model_names) * SETTINGS["max_steps"]


def test_unknown_objective_task_is_refused_before_loading(micro_pool, tmp_path):
    algorithm = objective_adamerging("clip_task_wise_adamerging", ["sun397"], **SETTINGS)
    with pytest.raises(ValueError, match=r"objective_tasks=\['sun397'\].*not models of the pool"):
        algorithm.run(micro_pool.make_modelpool())
    with pytest.raises(ValueError, match="method.name='adamerging'"):
        objective_adamerging("adamerging", None, **SETTINGS)


def test_the_cards_adamerging_starts_from_task_arithmetic_over_every_model(mini_micro_dir, mini_micro_card, tmp_path):
    """One step of FusionBench's layer-wise AdaMerging (every weight starts at 0.3) scores, with the
    card's heads, what the card's task arithmetic over all models at 0.3 scores, in both entropy
    settings: every model is merged even when the entropy sees only the eval tasks. Added to (a copy
    of) the build, the figures are judged in card.json and shown in card.md."""
    import json
    import shutil

    from fusion_bench_fw.mini.card_adamerging import add_to_card

    build = shutil.copytree(mini_micro_dir, tmp_path / "build")
    card = add_to_card(build, steps=1, command="fusion_bench_fw card-adamerging --pool micro --steps 1")
    figures = card["adamerging"]
    assert figures["seed"] == 0  # the pool's seed
    everything = mini_micro_card["task_arithmetic"]["all"]["by_lambda"]["0.3"]["average"]
    relevant = mini_micro_card["task_arithmetic"]["relevant"]["by_lambda"]["0.3"]["average"]
    assert abs(everything - relevant) > 0.05  # the two merges are told apart
    assert figures["adamerging_objective"] == pytest.approx(everything, abs=0.02)
    assert figures["adamerging_all"] == pytest.approx(everything, abs=0.02)
    assert figures["command"].endswith("--steps 1")
    verdicts = {r["key"]: r for r in card["fidelity"]}
    gain = verdicts["adamerging_all_above_zero_shot"]
    assert gain["value"] == pytest.approx(figures["adamerging_all"] - card["eval_average"]["zero_shot"])
    assert gain["verdict"] == ("PASS" if gain["value"] > 0 else "MISS")
    assert json.loads((build / "card.json").read_text()) == card
    assert "1 steps" in (build / "card.md").read_text() and "not measured" not in (build / "card.md").read_text()
    assert "adamerging" not in json.loads((mini_micro_dir / "card.json").read_text())  # the cached build is untouched


def test_the_cards_adamerging_is_a_function_of_its_seed(mini_micro_manifest):
    """Its shuffled test loaders draw from torch's generator: one seed gives one merge, another seed
    another, and the caller's generator state is left as it was."""
    from fusion_bench_fw.mini.card_adamerging import layer_wise_adamerging

    state = torch.get_rng_state()
    runs = [layer_wise_adamerging(mini_micro_manifest, ["scenes"], 4, seed=s).state_dict() for s in (0, 0, 1)]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_regmean_plusplus_config_builds_where_fusion_bench_0_2_33_fails():
    from pathlib import Path

    from omegaconf import OmegaConf

    from fusion_bench.method.regmean_plusplus.clip_regmean_plusplus import RegMeanAlgorithmForCLIPPlusPlus
    from fusion_bench.utils import instantiate

    ours = OmegaConf.load(Path(__file__).resolve().parents[1] / "config/method/regmean_plusplus_clip.yaml")
    stock = OmegaConf.merge(ours, {"_target_": "fusion_bench.method.regmean_plusplus.clip_regmean_plusplus.RegMeanAlgorithmForCLIPPlusPlus"})
    with pytest.raises(AttributeError, match="inverse"):  # the upstream bug the workaround exists for
        instantiate(stock)
    algorithm = instantiate(OmegaConf.merge(ours, {"num_regmean_examples": 64}))
    assert isinstance(algorithm, RegMeanAlgorithmForCLIPPlusPlus)
    assert algorithm.num_regmean_examples == 64 and algorithm.dataloader_kwargs["batch_size"] == 32


def _method_config(name, *also_drop):
    """One of our method configs as plain options for the FusionBench class it wraps (no target, no task list)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    config = OmegaConf.load(Path(__file__).resolve().parents[1] / "config" / "method" / f"{name}.yaml")
    return {k: v for k, v in OmegaConf.to_container(config).items() if k not in ("_target_", "objective_tasks", *also_drop)}


def _assert_every_task_vector_moves_the_merge(pool, merged):
    """The merge moved from the pretrained model along every model's task vector (one tensor checked)."""
    base, key = pool.load_model("_pretrained_").state_dict(), "vision_model.encoder.layers.0.mlp.fc1.weight"
    moved = merged.state_dict()[key] - base[key]
    for name in pool.model_names:
        tau = pool.load_model(name).state_dict()[key] - base[key]
        assert float((moved * tau).sum()) > 0, name


class _SeenConcrete:
    """Concrete task arithmetic that records the task of every entropy term of its mask training."""

    @staticmethod
    def build(tasks, tmp_path):
        from omegaconf import OmegaConf

        from fusion_bench_fw.baselines.concrete import ObjectiveConcreteTaskArithmetic

        class Seen(ObjectiveConcreteTaskArithmetic):
            def compute_logits(self, module, images, task):
                self.seen.append(task)
                return super().compute_logits(module, images, task)

        config = _method_config("concrete_objective")
        algorithm = Seen(OmegaConf.create({"name": "clip_concrete_task_arithmetic", **config, "max_steps": 2, "batch_size": 8, "cache_dir": str(tmp_path)}))
        algorithm.objective_tasks, algorithm.seen = tasks, []
        from lightning.fabric.loggers import TensorBoardLogger

        # what the fusion_bench program hands it; it logs its hyperparameters (CSVLogger cannot)
        algorithm.fabric = L.Fabric(accelerator="cpu", devices=1, loggers=TensorBoardLogger(str(tmp_path), name="concrete"))
        return algorithm


def test_fair_concrete_sees_only_the_objective_tasks_and_merges_every_model(micro_pool, tmp_path):
    task = micro_pool.eval_tasks[0]
    algorithm = _SeenConcrete.build([task], tmp_path)
    pool = micro_pool.make_modelpool()
    merged = algorithm.run(pool)
    assert algorithm.seen == [task] * 2  # one entropy term per step, of the objective task only
    assert algorithm.modelpool is pool
    _assert_every_task_vector_moves_the_merge(pool, merged)  # every task vector enters the masked sum
    everything = _SeenConcrete.build(None, tmp_path / "all")
    everything.run(micro_pool.make_modelpool())
    assert sorted(set(everything.seen)) == sorted(pool.model_names)  # null: FusionBench's default, every task


def _surgery(tasks, micro_cache_dir, tmp_path):
    """The fair AdaMerging + Surgery on the micro pool (2 + 2 steps), recording which tasks' test images it reads."""
    from omegaconf import OmegaConf

    from fusion_bench_fw.baselines.surgery import ObjectiveAdaMergingSurgery
    from fusion_bench_fw.mini.pools import MiniCLIPVisionModelPool
    from lightning.fabric.loggers import TensorBoardLogger

    class Seen(ObjectiveAdaMergingSurgery):
        def get_shuffled_test_loader_iter(self, task, *args, **kwargs):
            self.seen.append(task)
            return super().get_shuffled_test_loader_iter(task, *args, **kwargs)

    config = _method_config("surgery_objective", "fast_dev_run")
    config.update(max_steps=2, surgery_steps=2, eval_iterations=100, batch_size=8, cache_dir=str(tmp_path), fast_dev_run=False)
    algorithm = Seen(OmegaConf.create({"name": "clip_layer_wise_adamerging_surgery", **config}))
    algorithm.objective_tasks, algorithm.seen = tasks, []
    algorithm.fabric = L.Fabric(accelerator="cpu", devices=1, loggers=TensorBoardLogger(str(tmp_path), name="surgery"))
    pool = MiniCLIPVisionModelPool("micro", cache_dir=str(micro_cache_dir))
    return algorithm, pool, algorithm.run(pool)


def test_fair_surgery_reads_only_the_objective_tasks_and_merges_every_model(micro_pool, micro_cache_dir, tmp_path):
    task = micro_pool.eval_tasks[0]
    algorithm, pool, result = _surgery([task], micro_cache_dir, tmp_path)
    # 2 AdaMerging steps + 2 surgery steps, each reading one batch of the objective task only
    assert algorithm.seen and set(algorithm.seen) == {task}
    surgery, merged = result["surgery"], result["adamerging"]
    assert surgery.test_datasets == [task]
    # the adapters are sized by the CLIP projection (32 on micro), not transformers' default 512
    width = pool.load_clip_model("_pretrained_").visual_projection.out_features
    assert surgery.projection_dim == width == merged.config.projection_dim != 512
    _assert_every_task_vector_moves_the_merge(pool, merged)
    # null: FusionBench's behaviour, every pool task
    everything, _, result = _surgery(None, micro_cache_dir, tmp_path / "all")
    assert set(everything.seen) == set(pool.model_names) and result["surgery"].test_datasets == list(pool.model_names)


def test_mini_pool_models_carry_the_clip_projection_width(micro_pool, micro_cache_dir):
    from fusion_bench_fw.mini.pools import MiniCLIPVisionModelPool

    pool = MiniCLIPVisionModelPool("micro", cache_dir=str(micro_cache_dir))
    width = pool.load_clip_model("_pretrained_").config.projection_dim
    stock = micro_pool.make_modelpool()  # FusionBench's own pool over the same files: the saved default
    assert stock.load_model(pool.model_names[0]).config.projection_dim == 512 != width
    for name in ["_pretrained_", *pool.model_names]:
        assert pool.load_model(name).config.projection_dim == width, name


def test_fair_surgery_refuses_a_taskpool_task_without_an_adapter(micro_pool, micro_cache_dir):
    from fusion_bench_fw.baselines.surgery import check_taskpool_has_adapters
    from fusion_bench_fw.mini.pools import MiniCLIPVisionModelTaskPool

    taskpool = MiniCLIPVisionModelTaskPool("micro", cache_dir=str(micro_cache_dir))  # evaluates the eval tasks
    tasks = micro_pool.eval_tasks
    check_taskpool_has_adapters(taskpool, tasks)
    check_taskpool_has_adapters(None, tasks[:1])  # outside a FusionBench program: nothing to check
    with pytest.raises(ValueError, match=rf"evaluates \['{tasks[1]}'\].*no adapter.*objective_tasks"):
        check_taskpool_has_adapters(taskpool, tasks[:1])
