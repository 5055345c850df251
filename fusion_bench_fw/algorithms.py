"""FWHard and FWSoft: thin FusionBench adapters around the Frank-Wolfe engine.

They consume a CLIP vision model pool, build the objective from the pool's datasets and
FusionBench's zero-shot heads, stream checkpoints to the engine and return the merged model as the
pool's own model type, so FusionBench's taskpool evaluates it and ``merged_model_save_path`` saves it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from fusion_bench import BaseAlgorithm, auto_register_config
from fusion_bench.dataset import CLIPDataset
from fusion_bench.mixins import SimpleProfilerMixin
from fusion_bench.mixins.clip_classification import CLIPClassificationMixin
from fusion_bench.utils import cache_utils

from .checkpoints import PoolCheckpoints
from .frank_wolfe import GRANULARITIES, HARD_VARIANTS, INNER_INITS, SCORES, STEP_RULES, FrankWolfeHard, FrankWolfeSoft, SolverState, make_step_rule
from .frank_wolfe.params import ParamDict
from .merge_functions import MERGE_FUNCTIONS, ties_merge_fn
from .resume import RunCheckpoint, fingerprint
from .objective import LOSSES, ClassificationObjective, make_task_batches, sample_indices
from .trajectory import TrajectoryWriter, format_merge, scalar_metrics

log = logging.getLogger(__name__)

PRETRAINED = "_pretrained_"
INIT_LABEL = "_init_"
TASKPOOL_TASKS = "taskpool"  # objective_tasks value: the tasks the program's taskpool evaluates


def _allowed(option: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"invalid {option}={value!r}; allowed values: {', '.join(map(str, allowed))}")


@auto_register_config  # every class in the chain must be decorated, or its arguments are dropped
class FrankWolfeMergingBase(CLIPClassificationMixin, SimpleProfilerMixin, BaseAlgorithm):
    """Shared set-up: objective, checkpoint stream, initial point, trajectory output."""

    def __init__(
        self,
        max_iters: int,
        gap_tol: float = 0.0,
        granularity: str = "task",
        lmo_score: str = "inner_product",
        loss: str = "cross_entropy",
        objective_tasks: Union[str, List[str], None] = "taskpool",
        samples_per_task: int = 100,
        batch_size: int = 32,
        seed: int = 0,
        init: str = "pretrained",
        init_scaling_factor: float = 0.3,
        pretrained_as_vertex: bool = True,
        trajectory_path: Optional[str] = None,
        stream_safetensors: bool = True,
        validate_checkpoints: bool = True,
        checkpoint_dir: Optional[str] = None,
        probe_step: float = 0.05,
        lmo_block_group: int = 16,
        min_rel_decrease: float = 1e-4,
        max_relative_distance: Optional[float] = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if float(min_rel_decrease) < 0:
            raise ValueError(f"min_rel_decrease must be >= 0 (0 keeps iterating while anything improves), got {min_rel_decrease}")
        if max_relative_distance is not None and float(max_relative_distance) <= 0:
            raise ValueError(f"max_relative_distance must be > 0, or null to admit every checkpoint, got {max_relative_distance}")
        if int(lmo_block_group) < 1:
            raise ValueError(f"lmo_block_group must be >= 1 (checkpoints scored together per parameter), got {lmo_block_group}")
        if not 0 <= float(probe_step) < 1:
            raise ValueError(f"probe_step must be in [0, 1) (0 disables the descent probe), got {probe_step}")
        if int(max_iters) < 1:
            raise ValueError(f"max_iters must be >= 1, got {max_iters}")
        if float(gap_tol) < 0:
            raise ValueError(f"gap_tol must be >= 0, got {gap_tol}")
        _allowed("granularity", granularity, GRANULARITIES)
        _allowed("lmo_score", lmo_score, SCORES)
        _allowed("loss", loss, LOSSES)
        if isinstance(objective_tasks, str) and objective_tasks != TASKPOOL_TASKS:
            raise ValueError(
                f"invalid objective_tasks={objective_tasks!r}: use '{TASKPOOL_TASKS}' (the tasks the "
                f"taskpool evaluates), null (every pool task with data) or a list of task names"
            )
        if int(samples_per_task) < 1:
            raise ValueError(f"samples_per_task must be >= 1, got {samples_per_task}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if init not in ("pretrained", "task_arithmetic") and not Path(str(init)).expanduser().exists():
            raise ValueError(
                f"invalid init={init!r}: use 'pretrained', 'task_arithmetic' or the path of a merged "
                f"checkpoint directory (save_pretrained format) that exists"
            )

    # ------------------------------------------------------------------------------------------
    def run(self, modelpool):
        self.modelpool = modelpool
        # FusionBench keeps zero-shot heads in a class attribute shared by all instances
        self.zeroshot_weights = {}
        tasks = self.resolve_objective_tasks(modelpool)
        candidates = list(modelpool.model_names)
        if not candidates:
            raise ValueError("the model pool has no fine-tuned models to merge")
        if not modelpool.has_pretrained:
            raise ValueError("FW-Merging needs the pretrained model: add a `_pretrained_` entry to modelpool.models")
        self.validate_pool_specific(candidates)

        with self.profile("load pretrained"):
            model = modelpool.load_pretrained_model()
            model.requires_grad_(False).eval()
            model = self.fabric.to_device(model)
            block_names = [name for name, _ in model.named_parameters()]
            theta0 = {name: p.detach().clone() for name, p in model.named_parameters()}
        dtype = next(iter(theta0.values())).dtype

        vertex_names = self.vertex_names = ([PRETRAINED] if self.pretrained_as_vertex else []) + candidates
        source = PoolCheckpoints(modelpool, vertex_names, block_names, dtype=dtype, prefer_safetensors=self.stream_safetensors)
        distances: Dict[str, float] = {}
        if self.validate_checkpoints or self.max_relative_distance is not None:
            with self.profile("validate checkpoints"):
                distances = dict(zip(vertex_names, self.validate_sharded(source, theta0).tolist()))
        self.screened = self.screen(distances)
        labels = [PRETRAINED] + candidates + ([INIT_LABEL] if self.init not in ("pretrained", "task_arithmetic") else [])
        # a resume state from another configuration is refused here, before any data work
        checkpoint = self.run_checkpoint(modelpool, vertex_names, theta0)
        state = checkpoint.load(device=next(iter(theta0.values())).device) if checkpoint is not None else None
        with self.profile("build objective"):
            objective = self.build_objective(modelpool, model, block_names, tasks)
        if state is not None:
            log.info("resuming from %s after iteration %d", checkpoint.directory, state.iteration)
        else:
            with self.profile("initial point"):
                theta, weights = self.initial_point(modelpool, theta0, candidates, labels, block_names)
            state = SolverState(theta=theta, weights=weights, weights_exact=True)
        vertex_columns = [labels.index(name) for name in vertex_names]

        writer = TrajectoryWriter(self.trajectory_file(), self.config_for_record(tasks, vertex_names))
        progress = tqdm(total=self.max_iters, initial=state.iteration, desc=f"{type(self).__name__}", disable=not self.fabric.is_global_zero)

        def on_iteration(record: Dict[str, Any], current: SolverState) -> None:
            progress.update(1)
            progress.set_postfix(gap=f"{record['fw_gap']:.3g}", loss=f"{record['loss_after']:.4f}")
            self.fabric.log_dict(scalar_metrics(record), step=record["iteration"])
            if self.fabric.is_global_zero:
                writer.write(current.trajectory)
                if checkpoint is not None:
                    checkpoint.save(current)

        solver = self.build_solver(objective, source, block_names, labels, vertex_columns, theta0, on_iteration)
        with self.profile("frank-wolfe"):
            solver.run(state)
        progress.close()

        summary = {
            "stop_reason": state.stop_reason,
            "iterations": state.iteration,
            "final_loss": state.trajectory[-1]["loss_after"] if state.trajectory else None,
            "weights": solver.summarize_weights(state.weights, torch.tensor([theta0[n].numel() for n in block_names], dtype=torch.float64)),
            "weights_exact": state.weights_exact,
            "stop": state.stop.value if state.stop is not None else None,
            "gap_set": solver.gap_set(),
            "gap_is_certificate": state.in_hull(),
            "screened": {name: round(distances[name], 4) for name in self.screened},
            "relative_distances": {name: round(d, 4) for name, d in distances.items()},
            "checkpoint_loads": source.loads,
            "peak_streamed_checkpoints": source.peak_alive,
            "forward_passes": objective.forward_passes,
            "backward_passes": objective.backward_passes,
        }
        self.fw_summary = summary
        self.fw_state = state
        if self.fabric.is_global_zero:
            writer.write(state.trajectory, summary)
            log.info("FW-Merging result (%s): %s", state.stop_reason, format_merge(summary["weights"]))
            if writer.path is not None:
                log.info("FW trajectory written to %s", writer.path)
        self.print_profile_summary()

        with torch.no_grad():
            for name, parameter in model.named_parameters():
                parameter.copy_(state.theta[name])
        return model

    # --- pieces -------------------------------------------------------------------------------
    def resolve_objective_tasks(self, modelpool) -> List[str]:
        """The objective's tasks: an explicit list, the taskpool's tasks (the paper's setting: 100
        train samples of each evaluated task), or every pool task with data."""
        split = "train" if self.loss == "cross_entropy" else "test"
        available = list(modelpool.train_dataset_names if split == "train" else modelpool.test_dataset_names)
        requested = self.objective_tasks
        from_taskpool = requested == TASKPOOL_TASKS
        if from_taskpool:
            requested = self.taskpool_task_names()
            if requested is None:
                log.info("objective_tasks=%s but no taskpool is configured: using every pool task with a %s split", TASKPOOL_TASKS, split)
        if requested is None or len(requested) == 0:
            if not available:
                raise ValueError(
                    f"loss={self.loss!r} needs {split} datasets but the model pool defines none; "
                    f"add `{split}_datasets` to the modelpool config or set method.objective_tasks"
                )
            return available
        tasks = list(requested)
        missing = [t for t in tasks if t not in available]
        if missing:
            named = f"objective_tasks={TASKPOOL_TASKS!r}: the taskpool's task(s)" if from_taskpool else "objective task(s)"
            raise ValueError(
                f"{named} {missing} have no {split} dataset in the model pool (loss={self.loss!r} reads the "
                f"{split} split); available: {available}. Set method.objective_tasks to a list of available "
                f"tasks, or null for all."
            )
        return tasks

    def taskpool_task_names(self) -> Optional[List[str]]:
        """Task names of the taskpool the FusionBench program evaluates with (it is instantiated
        before the method runs and reachable through `_program`), or None outside a program."""
        taskpool = getattr(getattr(self, "_program", None), "taskpool", None)
        datasets = getattr(taskpool, "_test_datasets", None)
        return [str(name) for name in datasets.keys()] if datasets else None

    def validate_pool_specific(self, candidates: List[str]) -> None:
        """Hook for subclasses: option checks that need the pool size."""

    def build_objective(self, modelpool, model, block_names, tasks) -> ClassificationObjective:
        if self.fabric.is_global_zero:
            log.info("FW objective: %s on %d samples per task over tasks %s", self.loss, self.samples_per_task, tasks)
        # FusionBench caches zero-shot heads on disk keyed by (task, model name) only; keep this run's
        # heads in the run's own directory so two pools with the same model names never mix.
        if self.log_dir is not None:
            cache_utils.set_default_cache_dir(Path(self.log_dir) / "cache")
        self.setup_zero_shot_classification_head(task_names=tasks)
        data = []
        for offset, task in enumerate(tasks):
            raw = modelpool.load_train_dataset(task) if self.loss == "cross_entropy" else modelpool.load_test_dataset(task)
            if self.samples_per_task > len(raw):
                log.warning("task %s has only %d samples (< samples_per_task=%d): using all of them", task, len(raw), self.samples_per_task)
            indices = sample_indices(len(raw), self.samples_per_task, seed=self.seed + offset)
            dataset = CLIPDataset(raw, self.clip_processor)
            data.append(
                make_task_batches(
                    task, dataset, indices, self.batch_size, with_labels=self.loss == "cross_entropy",
                    to_device=self.fabric.to_device, rank=self.fabric.global_rank, world_size=self.fabric.world_size,
                )
            )
        return ClassificationObjective(
            model, block_names, data, self.compute_logits, loss=self.loss, backward=self.fabric.backward, all_reduce=self.all_reduce_sum()
        )

    def validate_sharded(self, source: PoolCheckpoints, theta0: ParamDict) -> torch.Tensor:
        """Each process validates its share of the checkpoints; all of them stop if any share is
        bad (a lone failing process would leave the others waiting in the next collective).
        Returns every checkpoint's relative distance from the pretrained model (see ``screen``)."""
        error: Optional[ValueError] = None
        distances = torch.zeros(len(source.names), dtype=torch.float64)
        try:
            distances = source.validate(theta0, shard=(self.fabric.global_rank, self.fabric.world_size))
        except ValueError as caught:
            error = caught
        reduce = self.all_reduce_sum() or (lambda tensor: tensor)
        combined = reduce(torch.cat([torch.tensor([0.0 if error is None else 1.0], dtype=torch.float64), distances]))
        if error is not None:
            raise error
        if combined[0].item() > 0:
            raise ValueError("checkpoint validation failed in another process; its error message names the model")
        return combined[1:]

    def screen(self, distances: Dict[str, float]) -> List[str]:
        """Checkpoints too far from the pretrained model to be fine-tunes of it, never offered to the LMO.

        A fine-tune stays close to its base (||theta_i - theta_0|| / ||theta_0|| is a few percent
        to tens of percent); a checkpoint of another initialization (random weights, another
        pretraining) sits at ~1.4. Its huge linear term can win the LMO, and a small step toward it
        can even lower the objective the way weight decay does, while it carries nothing of
        theta_0's features; the descent probe cannot tell that apart, the distance can."""
        if self.max_relative_distance is None:
            return []
        limit = float(self.max_relative_distance)
        screened = [name for name, distance in distances.items() if distance > limit]
        if screened and len(screened) == len(distances):
            raise ValueError(
                f"every checkpoint is farther than max_relative_distance={limit:g} from the pretrained model "
                f"({', '.join(f'{n}: {distances[n]:.3f}' for n in screened)}): check that the pool's _pretrained_ "
                f"entry is the base these models were fine-tuned from, or raise method.max_relative_distance"
            )
        for name in screened:
            log.warning(
                "model %r is screened out: its distance from the pretrained model is %.3f x the pretrained "
                "model's norm (> max_relative_distance=%g), so it is not a fine-tune of it. Set "
                "method.max_relative_distance=null (or higher) to offer it to the LMO anyway.", name, distances[name], limit,
            )
        return screened

    def all_reduce_sum(self):
        """Sum over Fabric's processes (None in a single process); tensors travel via the Fabric
        device, as NCCL only reduces GPU tensors, and come back where they were."""
        if self.fabric.world_size == 1:
            return None

        def reduce(tensor: torch.Tensor) -> torch.Tensor:
            return self.fabric.all_reduce(self.fabric.to_device(tensor), reduce_op="sum").to(tensor.device)

        return reduce

    def solver_kwargs(self) -> Dict[str, Any]:
        """Solver arguments shared by both methods: data parallelism, the descent probe, LMO grouping."""
        return {
            "shard": (self.fabric.global_rank, self.fabric.world_size),
            "all_reduce": self.all_reduce_sum(),
            "probe_step": float(self.probe_step),
            "lmo_block_group": int(self.lmo_block_group),
            "min_rel_decrease": float(self.min_rel_decrease),
            "screened": [self.vertex_names.index(name) for name in self.screened],
        }

    def initial_point(self, modelpool, theta0: ParamDict, candidates, labels, block_names):
        weights = torch.zeros(len(block_names), len(labels), dtype=torch.float64)
        if self.init == "pretrained":
            weights[:, 0] = 1.0
            return {k: v.clone() for k, v in theta0.items()}, weights
        if self.init == "task_arithmetic":
            # theta0 + a * sum_i (theta_i - theta0), streamed; affine weights (1 - n a, a, ..., a)
            alpha = float(self.init_scaling_factor)
            theta = {k: v.clone() for k, v in theta0.items()}
            source = PoolCheckpoints(modelpool, candidates, block_names, dtype=next(iter(theta0.values())).dtype, prefer_safetensors=self.stream_safetensors)
            for _, vertex in source.stream():
                for name in block_names:
                    theta[name].add_(vertex[name].to(theta[name].device) - theta0[name], alpha=alpha)
            weights[:, 0] = 1.0 - alpha * len(candidates)
            weights[:, 1 : 1 + len(candidates)] = alpha
            return theta, weights
        # a merged checkpoint on disk: its own weight column (INIT_LABEL), since its mixture is unknown
        from transformers import CLIPVisionModel

        init_model = CLIPVisionModel.from_pretrained(str(Path(str(self.init)).expanduser()))
        params = dict(init_model.named_parameters())
        missing = [b for b in block_names if b not in params or params[b].shape != theta0[b].shape]
        if missing:
            raise ValueError(f"init checkpoint {self.init!r} does not match the pretrained architecture (parameter {missing[0]!r})")
        theta = {b: params[b].detach().to(device=theta0[b].device, dtype=theta0[b].dtype).clone() for b in block_names}
        weights[:, labels.index(INIT_LABEL)] = 1.0
        return theta, weights

    def run_checkpoint(self, modelpool, vertex_names, theta0) -> Optional[RunCheckpoint]:
        """Per-iteration resume state, if ``checkpoint_dir`` is set (see resume.py)."""
        if not self.checkpoint_dir:
            return None
        config = self.config_for_record([], vertex_names)
        for key in ("max_iters", "gap_tol", "trajectory_path", "checkpoint_dir", "validate_checkpoints", "stream_safetensors", "_usage_", "_version_"):
            config.pop(key, None)
        entries = {name: str(modelpool._models.get(name)) if hasattr(modelpool, "_models") else name for name in vertex_names}
        shapes = {name: list(t.shape) for name, t in theta0.items()}
        return RunCheckpoint(Path(str(self.checkpoint_dir)), fingerprint({"config": config, "pool": entries, "shapes": shapes}))

    def trajectory_file(self) -> Optional[Path]:
        if not self.fabric.is_global_zero:
            return None
        if self.trajectory_path:
            return Path(str(self.trajectory_path)).expanduser()
        log_dir = self.log_dir
        if log_dir is None:
            program = getattr(self, "_program", None)
            try:
                log_dir = program.config.path.log_dir if program is not None else None
            except Exception:  # a program without the usual `path` config
                log_dir = None
        return Path(log_dir) / "fw_trajectory.json" if log_dir is not None else None

    def config_for_record(self, tasks, vertex_names) -> Dict[str, Any]:
        config = OmegaConf.to_container(self.config, resolve=True) if isinstance(self.config, DictConfig) else dict(self.config)
        config.update(algorithm=type(self).__name__, objective_tasks_resolved=list(tasks), vertices=list(vertex_names))
        return config


@auto_register_config
class FWHard(FrankWolfeMergingBase):
    """Hard Frank-Wolfe merging (paper Algorithm 1): one LMO vertex per iteration (per block if layer-wise)."""

    def __init__(
        self,
        max_iters: int = 10,
        granularity: str = "layer",
        step_rule: str = "line_search",
        step_size: float = 0.1,
        open_loop_scale: float = 1.0,
        open_loop_offset: Optional[int] = None,
        line_search_evals: int = 10,
        merge_fn: str = "convex",
        ties_threshold: float = 20,
        init: str = "pretrained",
        variant: str = "pairwise",
        **kwargs,
    ):
        super().__init__(max_iters=max_iters, granularity=granularity, init=init, **kwargs)
        _allowed("step_rule", step_rule, STEP_RULES)
        _allowed("merge_fn", merge_fn, MERGE_FUNCTIONS)
        _allowed("variant", variant, HARD_VARIANTS)
        if variant == "pairwise" and merge_fn != "convex":
            raise ValueError(f"variant=pairwise moves exact convex weights between models: use merge_fn=convex (got merge_fn={merge_fn})")
        if not 0 < float(step_size) <= 1:
            raise ValueError(f"step_size must be in (0, 1], got {step_size}")
        if float(open_loop_scale) <= 0:
            raise ValueError(f"open_loop_scale must be > 0, got {open_loop_scale}")
        if open_loop_offset is not None and int(open_loop_offset) < 0:
            raise ValueError(f"open_loop_offset must be >= 0, got {open_loop_offset}")
        if int(line_search_evals) < 3:
            raise ValueError(f"line_search_evals must be >= 3, got {line_search_evals}")
        if not 0 < float(ties_threshold) <= 100:
            raise ValueError(f"ties_threshold (percent of entries kept) must be in (0, 100], got {ties_threshold}")

    def build_solver(self, objective, source, block_names, labels, vertex_columns, theta0, on_iteration):
        # 2/(t+2) gives gamma = 1 at t = 0, which would discard a non-trivial initial merge
        offset = self.open_loop_offset if self.open_loop_offset is not None else (0 if self.init == "pretrained" else 2)
        rule = make_step_rule(self.step_rule, step_size=self.step_size, scale=self.open_loop_scale, offset=offset, evaluations=self.line_search_evals)
        merge = None if self.merge_fn == "convex" else ties_merge_fn(theta0, block_names, self.ties_threshold)
        return FrankWolfeHard(
            objective=objective, source=source, block_names=block_names, labels=labels, vertex_columns=vertex_columns,
            granularity=self.granularity, score=self.lmo_score, max_iters=self.max_iters, gap_tol=self.gap_tol,
            on_iteration=on_iteration, step_rule=rule, merge_fn=merge, variant=self.variant, **self.solver_kwargs(),
        )


@auto_register_config
class FWSoft(FrankWolfeMergingBase):
    """Soft Frank-Wolfe merging (paper §3.3): top-k LMO vertices mixed with simplex-constrained coefficients."""

    def __init__(
        self,
        max_iters: int = 15,
        granularity: str = "task",
        topk: int = 1,
        per_task_selection: bool = True,
        coefficients: str = "layer",
        inner_steps: int = 20,
        inner_lr: float = 0.05,
        inner_optimizer: str = "adam",
        include_current: bool = True,
        inner_init: str = "uniform",
        init: str = "pretrained",
        **kwargs,
    ):
        super().__init__(max_iters=max_iters, granularity=granularity, init=init, **kwargs)
        _allowed("inner_init", inner_init, INNER_INITS)
        if inner_init != "uniform" and not include_current:
            raise ValueError(f"inner_init={inner_init} needs include_current=true; use inner_init=uniform with include_current=false")
        if int(topk) < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        _allowed("coefficients", coefficients, ("layer", "model"))
        _allowed("inner_optimizer", inner_optimizer, ("adam", "sgd"))
        if int(inner_steps) < 1:
            raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
        if float(inner_lr) <= 0:
            raise ValueError(f"inner_lr must be > 0, got {inner_lr}")

    def validate_pool_specific(self, candidates):
        n = len(candidates) + (1 if self.pretrained_as_vertex else 0)
        if self.topk > n:
            raise ValueError(f"topk={self.topk} is larger than the number of LMO candidates ({n}); use topk <= {n}")

    def build_solver(self, objective, source, block_names, labels, vertex_columns, theta0, on_iteration):
        return FrankWolfeSoft(
            objective=objective, source=source, block_names=block_names, labels=labels, vertex_columns=vertex_columns,
            granularity=self.granularity, score=self.lmo_score, max_iters=self.max_iters, gap_tol=self.gap_tol,
            on_iteration=on_iteration, topk=self.topk, per_task_selection=self.per_task_selection,
            coefficients=self.coefficients, inner_steps=self.inner_steps, inner_lr=self.inner_lr,
            inner_optimizer=self.inner_optimizer, include_current=self.include_current, inner_init=self.inner_init, **self.solver_kwargs(),
        )
