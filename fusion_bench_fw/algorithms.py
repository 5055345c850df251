"""FWHard and FWSoft: FusionBench algorithms around the Frank-Wolfe engine, for any model family.

A run: pick the pool's model family (``families/``), check every option and the pool before any
heavy work, validate and screen the checkpoints in one streaming pass, build the objective on fixed
samples, run the engine's solver with the checkpoints streamed one at a time, and hand back the
family's model, so FusionBench's taskpool evaluates it and ``merged_model_save_path`` saves it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from fusion_bench import BaseAlgorithm, auto_register_config
from fusion_bench.mixins import LightningFabricMixin, SimpleProfilerMixin

from .checkpoint_files import POOL_LOADER, STREAMING, resolve_pool, stored_dtype
from .checkpoints import PoolCheckpoints
from .cpu_allocator import keep_freed_memory
from .families import ModelFamily, family_for
from .frank_wolfe import FrankWolfeHard, FrankWolfeSoft, HardOptions, IterationRecord, SoftOptions, SolverState
from .frank_wolfe.params import ParamDict
from .merge_functions import ties_merge_fn
from .objective import SampleObjective
from .options import TASKPOOL_TASKS, RunOptions
from .resume import RunCheckpoint, fingerprint
from .screening import measure_distances, screen
from .task_selection import resolve_objective_tasks
from .trajectory import TrajectoryWriter, config_for_record, format_merge, run_cache_dir, run_log_dir, scalar_metrics

log = logging.getLogger(__name__)

PRETRAINED = "_pretrained_"
INIT_LABEL = "_init_"
# config keys that do not change the result: left out of the resume fingerprint
NOT_FINGERPRINTED = ("max_iters", "gap_tol", "trajectory_path", "trajectory_per_block", "checkpoint_dir", "validate_checkpoints", "stream_safetensors", "_usage_", "_version_")


@auto_register_config  # every class in the chain must be decorated, or its arguments are dropped
class FrankWolfeMergingBase(SimpleProfilerMixin, LightningFabricMixin, BaseAlgorithm):
    """Shared run: family, checkpoint stream, objective, initial point, solver, outputs."""

    def __init__(
        self,
        max_iters: int,
        gap_tol: float = 0.0,
        granularity: str = "task",
        lmo_score: str = "inner_product",
        loss: str = "cross_entropy",
        objective_tasks: Union[str, List[str], None] = TASKPOOL_TASKS,
        samples_per_task: int = 100,
        batch_size: int = 32,
        seed: int = 0,
        init: str = "pretrained",
        init_scaling_factor: float = 0.3,
        pretrained_as_vertex: bool = True,
        trajectory_path: Optional[str] = None,
        trajectory_per_block: bool = False,
        stream_safetensors: bool = True,
        validate_checkpoints: bool = True,
        checkpoint_dir: Optional[str] = None,
        probe_step: float = 0.05,
        lmo_block_group: int = 16,
        line_search_evals: int = 10,
        min_rel_decrease: float = 1e-4,
        max_relative_distance: Optional[float] = 0.5,
        model_family: Optional[str] = None,
        compute_dtype: Optional[str] = None,
        keep_freed_memory: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.run_options = RunOptions(
            loss=loss, objective_tasks=objective_tasks, samples_per_task=samples_per_task, batch_size=batch_size, seed=seed,
            init=init, init_scaling_factor=init_scaling_factor, pretrained_as_vertex=pretrained_as_vertex,
            trajectory_path=trajectory_path, trajectory_per_block=trajectory_per_block, stream_safetensors=stream_safetensors,
            validate_checkpoints=validate_checkpoints, checkpoint_dir=checkpoint_dir, max_relative_distance=max_relative_distance,
            model_family=model_family, compute_dtype=compute_dtype, keep_freed_memory=keep_freed_memory,
        )
        self.common_solver_options = dict(
            max_iters=max_iters, gap_tol=gap_tol, granularity=granularity, score=lmo_score, probe_step=probe_step,
            lmo_block_group=lmo_block_group, min_rel_decrease=min_rel_decrease, line_search_evals=line_search_evals,
        )
        self.family: Optional[ModelFamily] = None

    # ------------------------------------------------------------------------------------------
    def run(self, modelpool):
        options = self.run_options
        family_class = family_for(modelpool, options.model_family)
        if options.loss not in family_class.losses:
            raise ValueError(f"invalid loss={options.loss!r} for {family_class.name} pools; allowed values: {', '.join(family_class.losses)}")
        candidates = list(modelpool.model_names)
        if not candidates:
            raise ValueError("the model pool has no fine-tuned models to merge")
        if not modelpool.has_pretrained:
            raise ValueError("FW-Merging needs the pretrained model: add a `_pretrained_` entry to modelpool.models")
        self.check_candidates(len(candidates) + int(options.pretrained_as_vertex))
        if options.keep_freed_memory:
            keep_freed_memory()
        family = self.family = family_class(modelpool, self.fabric, cache_dir=run_cache_dir(self))
        # every checkpoint's files, found once (local dir, Hugging Face cache, shards): a model missing
        # offline fails here, before the pretrained model or any data is loaded
        self.checkpoint_files = resolve_pool(modelpool, [PRETRAINED] + candidates, options.stream_safetensors)
        family.check_entries_available()
        tasks = self.resolve_objective_tasks(family)

        with self.profile("load pretrained"):
            model = family.load_base()
            pool_dtype = next(model.parameters()).dtype
            block_names = family.merged_parameters(model)
            compute_dtype = self.merge_dtype(pool_dtype, block_names)
            if compute_dtype != pool_dtype:
                model = model.to(compute_dtype)
            parameters = dict(model.named_parameters())
            theta0 = {name: parameters[name].detach().clone() for name in block_names}
        dtype = next(iter(theta0.values())).dtype

        vertex_names = ([PRETRAINED] if options.pretrained_as_vertex else []) + candidates
        source = PoolCheckpoints(modelpool, vertex_names, block_names, dtype=dtype, prefer_safetensors=options.stream_safetensors, files=self.checkpoint_files,
                                 base=self.in_memory_base(theta0))
        counts = source.reader_counts()
        log.info("checkpoints read by: the streaming safetensors reader %d, the pool's load_model %d", counts[STREAMING], counts[POOL_LOADER])
        distances: Dict[str, float] = {}
        if options.validate_checkpoints or options.max_relative_distance is not None:
            with self.profile("validate checkpoints"):
                distances = measure_distances(source, theta0, (self.fabric.global_rank, self.fabric.world_size), self.all_reduce_sum())
        screened = screen(distances, options.max_relative_distance)
        labels = [PRETRAINED] + candidates + ([INIT_LABEL] if options.init_from_checkpoint is not None else [])
        # a resume state from another configuration is refused here, before any data work
        checkpoint = self.run_checkpoint(modelpool, vertex_names, theta0)
        state = checkpoint.load(device=next(iter(theta0.values())).device) if checkpoint is not None else None
        with self.profile("build objective"):
            objective = self.build_objective(family, model, block_names, tasks)
        if state is not None:
            log.info("resuming from %s after iteration %d", checkpoint.directory, state.iteration)
        else:
            with self.profile("initial point"):
                theta, weights = self.initial_point(family, model, modelpool, theta0, candidates, labels, block_names)
            state = SolverState(theta=theta, weights=weights, weights_exact=True)

        writer = TrajectoryWriter(self.trajectory_file(), self.config_for_record(tasks, vertex_names, family))
        progress = tqdm(total=self.solver_options.max_iters, initial=state.iteration, desc=type(self).__name__, disable=not self.fabric.is_global_zero)

        def on_iteration(record: IterationRecord, current: SolverState) -> None:
            progress.update(1)
            progress.set_postfix(gap=f"{record.fw_gap:.3g}", loss=f"{record.loss_after:.4f}")
            self.fabric.log_dict(scalar_metrics(record.to_json()), step=record.iteration)
            if self.fabric.is_global_zero:
                writer.write(current.trajectory)
                if checkpoint is not None:
                    checkpoint.save(current)

        solver = self.build_solver(
            theta0, objective=objective, source=source, block_names=block_names, labels=labels,
            vertex_columns=[labels.index(name) for name in vertex_names], on_iteration=on_iteration,
            shard=(self.fabric.global_rank, self.fabric.world_size), all_reduce=self.all_reduce_sum(),
            screened=[vertex_names.index(name) for name in screened], record_per_block=options.trajectory_per_block,
        )
        with self.profile("frank-wolfe"):
            solver.run(state)
        progress.close()
        self.fw_summary = self.summary(state, solver, source, objective, block_names, distances, screened, family)
        self.fw_state = state
        if self.fabric.is_global_zero:
            writer.write(state.trajectory, self.fw_summary)
            log.info("FW-Merging result (%s): %s", state.stop_reason, format_merge(self.fw_summary["weights"]))
            if writer.path is not None:
                log.info("FW trajectory written to %s", writer.path)
        self.print_profile_summary()
        return family.merged_model(model, state.theta).to(pool_dtype)  # the taskpool gets the pool's dtype back

    # --- pieces -------------------------------------------------------------------------------
    def check_candidates(self, count: int) -> None:
        """Hook for option checks that need the number of LMO candidates."""

    def merge_dtype(self, pool_dtype: torch.dtype, block_names: Sequence[str]) -> torch.dtype:
        """method.compute_dtype, else the dtype the pretrained checkpoint is stored in when that is
        narrower than what the pool loads (FusionBench's CLIP pools load bf16 checkpoints as float32:
        twice the memory of the files the user chose to store), else the pool's."""
        if self.run_options.compute_dtype is not None:  # e.g. bf16 math on a GPU for an fp32 pool
            return getattr(torch, self.run_options.compute_dtype)
        stored = stored_dtype(self.checkpoint_files[PRETRAINED], block_names)
        if stored is not None and stored.itemsize < pool_dtype.itemsize:
            log.info("the pretrained checkpoint is stored in %s and the pool loads it as %s: merging in %s "
                     "(method.compute_dtype=%s keeps the pool's dtype)", stored, pool_dtype, stored, str(pool_dtype).replace("torch.", ""))
            return stored
        return pool_dtype

    def in_memory_base(self, theta0: ParamDict):
        """theta_0 and the files it was loaded from, for LoRA vertices on the same base
        (``PoolCheckpoints.base``); None when the pretrained model is not a streamed safetensors model."""
        files = self.checkpoint_files.get(PRETRAINED)
        return (theta0, files) if files is not None and files.reader == STREAMING else None

    def resolve_objective_tasks(self, family: ModelFamily) -> List[str]:
        return resolve_objective_tasks(family, self.run_options.loss, self.run_options.objective_tasks, self)

    def build_objective(self, family: ModelFamily, model, block_names, tasks) -> SampleObjective:
        options = self.run_options
        if self.fabric.is_global_zero:
            log.info("FW objective (%s): %s on %d samples per task over tasks %s", family.name, options.loss, options.samples_per_task, tasks)
        family.prepare(model, tasks)
        data = [family.task_batches(task, options.loss, options.samples_per_task, options.seed + offset, options.batch_size) for offset, task in enumerate(tasks)]
        return SampleObjective(block_names, data, family.batch_loss(model, options.loss), backward=self.fabric.backward, all_reduce=self.all_reduce_sum(),
                               batch_losses=family.batch_losses(model, options.loss), pass_size=options.batch_size)

    def all_reduce_sum(self):
        """Sum over Fabric's processes (None in a single process); tensors travel via the Fabric
        device, as NCCL only reduces GPU tensors, and come back where they were."""
        if self.fabric.world_size == 1:
            return None

        def reduce(tensor: torch.Tensor) -> torch.Tensor:
            return self.fabric.all_reduce(self.fabric.to_device(tensor), reduce_op="sum").to(tensor.device)

        return reduce

    def initial_point(self, family: ModelFamily, model, modelpool, theta0: ParamDict, candidates, labels, block_names):
        options = self.run_options
        weights = torch.zeros(len(block_names), len(labels), dtype=torch.float64)
        if options.init == "pretrained":
            weights[:, 0] = 1.0
            return {k: v.clone() for k, v in theta0.items()}, weights
        if options.init == "task_arithmetic":
            # theta0 + a * sum_i (theta_i - theta0), streamed; affine weights (1 - n a, a, ..., a)
            alpha = float(options.init_scaling_factor)
            theta = {k: v.clone() for k, v in theta0.items()}
            source = PoolCheckpoints(modelpool, candidates, block_names, dtype=next(iter(theta0.values())).dtype, prefer_safetensors=options.stream_safetensors,
                                     files=self.checkpoint_files, base=self.in_memory_base(theta0))
            for _, vertex in source.stream():
                for name in block_names:
                    theta[name].add_(vertex[name].to(theta[name].device) - theta0[name], alpha=alpha)
            weights[:, 0] = 1.0 - alpha * len(candidates)
            weights[:, 1 : 1 + len(candidates)] = alpha
            return theta, weights
        # a merged checkpoint on disk: its own weight column (INIT_LABEL), since its mixture is unknown
        theta = family.read_merged_checkpoint(options.init_from_checkpoint, model, block_names)
        weights[:, labels.index(INIT_LABEL)] = 1.0
        return theta, weights

    def summary(self, state, solver, source, objective, block_names, distances, screened, family) -> Dict[str, Any]:
        sizes = torch.tensor([state.theta[n].numel() for n in block_names], dtype=torch.float64)
        return {
            "stop_reason": state.stop_reason,
            "iterations": state.iteration,
            "final_loss": state.trajectory[-1]["loss_after"] if state.trajectory else None,
            "weights": solver.summarize_weights(state.weights, sizes),
            "weights_exact": state.weights_exact,
            "stop": state.stop.value if state.stop is not None else None,
            "gap_set": solver.gap_set(),
            "gap_is_certificate": state.in_hull(),
            "screened": {name: round(distances[name], 4) for name in screened},
            "relative_distances": {name: round(d, 4) for name, d in distances.items()},
            "model_family": family.name,
            "compute_dtype": str(next(iter(state.theta.values())).dtype).replace("torch.", ""),
            "lmo_pass_order": solver.pass_order.value if solver.pass_order is not None else None,
            "readers": source.reader_counts(),
            "checkpoint_readers": {name: source.reader_of(name) for name in source.names},
            "checkpoint_loads": source.loads,
            "peak_streamed_checkpoints": source.peak_alive,
            "forward_passes": objective.forward_passes,
            "backward_passes": objective.backward_passes,
        }

    def run_checkpoint(self, modelpool, vertex_names, theta0) -> Optional[RunCheckpoint]:
        """Per-iteration resume state, if ``checkpoint_dir`` is set (see resume.py)."""
        if not self.run_options.checkpoint_dir:
            return None
        config = self.config_for_record([], vertex_names)
        for key in NOT_FINGERPRINTED:
            config.pop(key, None)
        entries = {name: str(modelpool._models.get(name)) if hasattr(modelpool, "_models") else name for name in vertex_names}
        shapes = {name: list(t.shape) for name, t in theta0.items()}
        return RunCheckpoint(Path(str(self.run_options.checkpoint_dir)), fingerprint({"config": config, "pool": entries, "shapes": shapes}))

    def trajectory_file(self) -> Optional[Path]:
        if not self.fabric.is_global_zero:
            return None
        if self.run_options.trajectory_path:
            return Path(str(self.run_options.trajectory_path)).expanduser()
        log_dir = run_log_dir(self)
        return log_dir / "fw_trajectory.json" if log_dir is not None else None

    def config_for_record(self, tasks, vertex_names, family: Optional[ModelFamily] = None) -> Dict[str, Any]:
        config = config_for_record(self, objective_tasks_resolved=list(tasks), vertices=list(vertex_names))
        if family is not None:
            config["model_family_resolved"] = family.name
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
        merge_fn: str = "convex",
        ties_threshold: float = 20,
        init: str = "pretrained",
        variant: str = "pairwise",
        lmo_candidates: str = "task_winners",
        **kwargs,
    ):
        super().__init__(max_iters=max_iters, granularity=granularity, init=init, **kwargs)
        # 2/(t+2) gives gamma = 1 at t = 0, which would discard a non-trivial initial merge
        offset = open_loop_offset if open_loop_offset is not None else (0 if init == "pretrained" else 2)
        self.solver_options = HardOptions(
            **self.common_solver_options, step_rule=step_rule, step_size=step_size, open_loop_scale=open_loop_scale,
            open_loop_offset=offset, variant=variant, merge_fn=merge_fn, ties_threshold=ties_threshold,
            lmo_candidates=lmo_candidates,
        )

    def build_solver(self, theta0: ParamDict, **wiring):
        options = self.solver_options
        merge = None if options.merge_fn == "convex" else ties_merge_fn(theta0, wiring["block_names"], options.ties_threshold)
        return FrankWolfeHard(options=options, merge_fn=merge, **wiring)


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
        inner_restart: bool = False,
        fw_step_search: str = "quadratic",
        init: str = "pretrained",
        **kwargs,
    ):
        super().__init__(max_iters=max_iters, granularity=granularity, init=init, **kwargs)
        self.solver_options = SoftOptions(
            **self.common_solver_options, topk=topk, per_task_selection=per_task_selection, coefficients=coefficients,
            inner_steps=inner_steps, inner_lr=inner_lr, inner_optimizer=inner_optimizer, include_current=include_current, inner_init=inner_init,
            inner_restart=inner_restart, fw_step_search=fw_step_search,
        )

    def check_candidates(self, count: int) -> None:
        self.solver_options.check_candidates(count)

    def build_solver(self, theta0: ParamDict, **wiring):
        options = self.solver_options
        return FrankWolfeSoft(options=options, **wiring)
