"""DF-Merge (arXiv 2504.18992) as a FusionBench algorithm: ``fusion_bench method=df_merge ...``.

One coefficient ``lam_i`` per fine-tuned model, chosen by Bayesian optimisation (a Gaussian
process with UCB or EI, ``bayesian-optimization``: the library the method's authors used) to
maximise the mean validation accuracy over the objective tasks. Each candidate is merged as
``theta0 + sum_i F_i lam_i tau_i / sum_i F_i`` with the diagonal Fisher ``F_i`` of
``theta0 + lam_i tau_i`` on a few validation samples per task, streamed one checkpoint at a time
(``fisher_weighted.py``): memory stays flat in the number of models, as FW-Merging's does.

Data: ``samples_per_task`` labelled samples of each objective task from its **train** split (the
same draw as FW-Merging's objective with the same seed), never the test split the taskpool scores;
the Fisher uses the first ``fisher_samples_per_task`` of them. Every BO step is recorded in
``df_merge_trajectory.json`` (coefficients, validation accuracy per task, time).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from fusion_bench import BaseAlgorithm, auto_register_config
from fusion_bench.mixins import LightningFabricMixin, SimpleProfilerMixin

from ..algorithms import PRETRAINED
from ..checkpoint_files import resolve_pool
from ..checkpoints import PoolCheckpoints
from ..families import family_for
from ..frank_wolfe.options import check
from ..options import COMPUTE_DTYPES, TASKPOOL_TASKS, check_objective_tasks
from ..task_selection import resolve_objective_tasks
from ..trajectory import TrajectoryWriter, config_for_record, format_merge, run_cache_dir, run_log_dir
from .fisher_weighted import diagonal_fisher, fisher_merge_streamed

log = logging.getLogger(__name__)

ACQUISITIONS = ("ucb", "ei")


@dataclass(frozen=True)
class DFMergeOptions:
    init_points: int = 10  # random coefficient vectors before the GP guides the search (paper: 10)
    n_iter: int = 50  # GP-guided steps (paper: 50)
    acquisition: str = "ucb"
    kappa: float = 2.576  # UCB exploration
    xi: float = 0.01  # EI exploration
    coefficient_min: float = 0.0
    coefficient_max: float = 1.0
    samples_per_task: int = 100  # validation samples per objective task (train split)
    fisher_samples_per_task: int = 30  # of those, the ones the Fisher is computed on
    fisher_batch_size: int = 8  # samples whose per-sample gradients are taken together (the Fisher is exact at any size)
    fisher_floor: float = 1e-12
    batch_size: int = 32  # for the validation accuracy
    seed: int = 0

    def __post_init__(self):
        check(int(self.init_points) >= 1, f"init_points must be >= 1 (random starting points of the search), got {self.init_points}")
        check(int(self.n_iter) >= 0, f"n_iter must be >= 0, got {self.n_iter}")
        check(self.acquisition in ACQUISITIONS, f"invalid acquisition={self.acquisition!r}; allowed values: {', '.join(ACQUISITIONS)}")
        check(float(self.coefficient_min) < float(self.coefficient_max), f"coefficient_min ({self.coefficient_min}) must be below coefficient_max ({self.coefficient_max})")
        check(int(self.samples_per_task) >= 1, f"samples_per_task must be >= 1, got {self.samples_per_task}")
        check(
            1 <= int(self.fisher_samples_per_task) <= int(self.samples_per_task),
            f"fisher_samples_per_task must be between 1 and samples_per_task ({self.samples_per_task}), got {self.fisher_samples_per_task}",
        )
        check(int(self.fisher_batch_size) >= 1 and int(self.batch_size) >= 1, f"fisher_batch_size and batch_size must be >= 1, got {self.fisher_batch_size}, {self.batch_size}")
        check(float(self.fisher_floor) >= 0, f"fisher_floor must be >= 0, got {self.fisher_floor}")


@auto_register_config
class DFMerge(SimpleProfilerMixin, LightningFabricMixin, BaseAlgorithm):
    """Dynamic Fisher-weighted merging: BO over per-model coefficients, a streamed Fisher merge per candidate."""

    def __init__(
        self,
        init_points: int = 10,
        n_iter: int = 50,
        acquisition: str = "ucb",
        kappa: float = 2.576,
        xi: float = 0.01,
        coefficient_min: float = 0.0,
        coefficient_max: float = 1.0,
        objective_tasks: Union[str, List[str], None] = TASKPOOL_TASKS,
        samples_per_task: int = 100,
        fisher_samples_per_task: int = 30,
        fisher_batch_size: int = 8,
        fisher_floor: float = 1e-12,
        batch_size: int = 32,
        seed: int = 0,
        model_family: Optional[str] = None,
        compute_dtype: Optional[str] = None,
        stream_safetensors: bool = True,
        trajectory_path: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.options = DFMergeOptions(
            init_points=init_points, n_iter=n_iter, acquisition=acquisition, kappa=kappa, xi=xi, coefficient_min=coefficient_min,
            coefficient_max=coefficient_max, samples_per_task=samples_per_task, fisher_samples_per_task=fisher_samples_per_task,
            fisher_batch_size=fisher_batch_size, fisher_floor=fisher_floor, batch_size=batch_size, seed=seed,
        )
        check(compute_dtype is None or compute_dtype in COMPUTE_DTYPES, f"invalid compute_dtype={compute_dtype!r}: use null or one of {', '.join(COMPUTE_DTYPES)}")
        self.objective_tasks = check_objective_tasks(objective_tasks)

    def run(self, modelpool):
        options = self.options
        if self.fabric.world_size > 1:
            raise ValueError("method=df_merge runs in one process: set fabric.devices=1 (its Bayesian optimisation is sequential)")
        family_class = family_for(modelpool, self.model_family)
        candidates = list(modelpool.model_names)
        if not candidates or not modelpool.has_pretrained:
            raise ValueError("DF-Merge needs the pretrained model (a `_pretrained_` entry) and at least one fine-tuned model in modelpool.models")
        family = family_class(modelpool, self.fabric, cache_dir=run_cache_dir(self))
        files = resolve_pool(modelpool, [PRETRAINED] + candidates, self.stream_safetensors)  # missing offline: fails here
        family.check_entries_available()
        tasks = resolve_objective_tasks(family, "cross_entropy", self.objective_tasks, self)

        with self.profile("load pretrained"):
            model = family.load_base()
            pool_dtype = next(model.parameters()).dtype
            if self.compute_dtype is not None:
                model = model.to(getattr(torch, self.compute_dtype))
            block_names = family.merged_parameters(model)
            parameters = dict(model.named_parameters())
            theta0 = {name: parameters[name].detach().clone() for name in block_names}
        with self.profile("validation data"):
            family.prepare(model, tasks)
            validation = [family.task_batches(t, "cross_entropy", options.samples_per_task, options.seed + k, options.batch_size) for k, t in enumerate(tasks)]
            fisher_data = [family.task_batches(t, "cross_entropy", options.fisher_samples_per_task, options.seed + k, options.fisher_batch_size) for k, t in enumerate(tasks)]
        log.info("DF-Merge over %d models; validation: %d train samples per task of %s (Fisher on %d of them)", len(candidates), options.samples_per_task, tasks, options.fisher_samples_per_task)

        source = PoolCheckpoints(modelpool, candidates, block_names, dtype=next(iter(theta0.values())).dtype, prefer_safetensors=self.stream_safetensors, files=files)
        batch_loss = family.batch_loss(model, "cross_entropy")
        batch_correct = family.batch_correct(model)
        fisher_tasks = [(d.task, d.batches, d.num_samples) for d in fisher_data]

        def merge(coefficients: Sequence[float]):
            return fisher_merge_streamed(theta0, source.stream(), coefficients, lambda point: diagonal_fisher(point, batch_loss, fisher_tasks), options.fisher_floor)

        def score(theta) -> Dict[str, float]:
            with torch.no_grad():
                return {d.task: sum(batch_correct(theta, d.task, batch) for batch in d.batches) / d.num_samples for d in validation}

        writer = TrajectoryWriter(self.trajectory_file(), config_for_record(self, objective_tasks_resolved=list(tasks), models=list(candidates)), plot=False)
        with self.profile("bayesian optimisation"):
            steps, best_theta = self.search(candidates, merge, score, writer)
        best = max(steps, key=lambda s: s["validation_accuracy"])
        self.df_summary = {
            "best_step": best["step"],
            "best_validation_accuracy": best["validation_accuracy"],
            "coefficients": best["coefficients"],
            "model_family": family.name,
            "readers": source.reader_counts(),
            "checkpoint_loads": source.loads,
            "peak_streamed_checkpoints": source.peak_alive,
        }
        writer.write(steps, self.df_summary)
        log.info("DF-Merge result (step %d, validation accuracy %.4f): %s", best["step"], best["validation_accuracy"], format_merge(best["coefficients"]))
        self.print_profile_summary()
        return family.merged_model(model, best_theta).to(pool_dtype)

    def search(self, candidates: List[str], merge, score, writer: TrajectoryWriter) -> Tuple[List[Dict[str, Any]], Dict[str, torch.Tensor]]:
        """``init_points`` random coefficient vectors, then ``n_iter`` GP-suggested ones; keeps the best merge."""
        from bayes_opt import BayesianOptimization, acquisition

        options = self.options
        keys = [f"lam_{index:04d}" for index in range(len(candidates))]  # the optimiser orders keys by name
        function = acquisition.UpperConfidenceBound(kappa=options.kappa) if options.acquisition == "ucb" else acquisition.ExpectedImprovement(xi=options.xi)
        optimizer = BayesianOptimization(
            f=None, pbounds={key: (options.coefficient_min, options.coefficient_max) for key in keys}, acquisition_function=function,
            random_state=options.seed, verbose=0, allow_duplicate_points=True,
        )
        proposals = [("init", point) for point in optimizer.random_sample(options.init_points)]
        steps: List[Dict[str, Any]] = []
        best_theta, best_value = None, -1.0
        for step in range(options.init_points + options.n_iter):
            phase, point = proposals[step] if step < len(proposals) else ("bo", optimizer.suggest())
            start = time.perf_counter()
            coefficients = [float(point[key]) for key in keys]
            theta = merge(coefficients)
            per_task = score(theta)
            value = sum(per_task.values()) / len(per_task)
            optimizer.register(params=point, target=value)
            if value > best_value:
                best_theta, best_value = theta, value
            del theta
            steps.append({
                "step": step, "phase": phase, "validation_accuracy": value, "per_task": per_task,
                "coefficients": dict(zip(candidates, coefficients)), "time_s": time.perf_counter() - start,
            })
            log.info("DF-Merge step %d (%s): validation accuracy %.4f", step, phase, value)
            writer.write(steps)
        return steps, best_theta

    def trajectory_file(self) -> Optional[Path]:
        if self.trajectory_path:
            return Path(str(self.trajectory_path)).expanduser()
        log_dir = run_log_dir(self)
        return log_dir / "df_merge_trajectory.json" if log_dir is not None else None
