"""FusionBench model pool and task pool over the offline mini pool.

Both are thin subclasses of the stock CLIP classes: the constructor makes sure the pool is built,
registers the tasks' class names and prompts, and hands the parent ordinary local paths (models,
`datasets.load_from_disk` configs, processor dir). Everything downstream - model loading, zero-shot
heads, evaluation - is stock FusionBench. Building happens only on instantiation, never when Hydra
composes a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from transformers import CLIPConfig, CLIPVisionConfig

from fusion_bench.modelpool import CLIPVisionModelPool
from fusion_bench.taskpool import CLIPVisionModelTaskPool

from .cache import ensure_built
from .variants import BUILDER_VERSION
from .manifest import Manifest
from .registry import register_tasks

TaskSelection = Union[None, str, Sequence[str]]


def select_tasks(
    manifest: Manifest,
    tasks: TaskSelection = None,
    first_n: Optional[int] = None,
    num_irrelevant: Optional[int] = None,
    default: str = "all",
) -> List[str]:
    """Resolve the pool-selection parameters to a list of task names (at most one may be set).

    tasks: "all", "eval", or an explicit list of names; first_n: the first n tasks of the fixed
    order (which starts with the eval tasks); num_irrelevant: the eval tasks plus the first k others
    (the paper's Table 3 scaling pools).
    """
    given = [k for k, v in (("tasks", tasks), ("first_n", first_n), ("num_irrelevant", num_irrelevant)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of tasks / first_n / num_irrelevant, got {given}")
    order, eval_tasks = list(manifest.tasks), list(manifest.eval_tasks)
    if first_n is not None:
        if not 1 <= int(first_n) <= len(order):
            raise ValueError(f"first_n must be in [1, {len(order)}], got {first_n}")
        return order[: int(first_n)]
    if num_irrelevant is not None:
        others = [t for t in order if t not in eval_tasks]
        if not 0 <= int(num_irrelevant) <= len(others):
            raise ValueError(f"num_irrelevant must be in [0, {len(others)}], got {num_irrelevant}")
        return eval_tasks + others[: int(num_irrelevant)]
    if tasks is None:
        tasks = default
    if isinstance(tasks, str):
        if tasks == "all":
            return order
        if tasks == "eval":
            return eval_tasks
        tasks = [tasks]
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in order]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"bad task list {tasks}; this pool's tasks are {order}")
    return tasks


def _plain(value):
    """Hydra passes lists as ListConfig (with `_recursive_: false`); use plain Python values."""
    if isinstance(value, (ListConfig, DictConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _datasets(manifest: Manifest, names: List[str], split: str) -> DictConfig:
    return DictConfig(
        {t: {"_target_": "datasets.load_from_disk", "dataset_path": manifest.datasets[t][split]} for t in names}
    )


def _prepare(variant: str, seed: int, cache_dir, builder_version: Optional[int]) -> Manifest:
    version = BUILDER_VERSION if builder_version is None else int(builder_version)
    manifest = Manifest.load(ensure_built(variant, int(seed), cache_dir, version))
    register_tasks(manifest.classnames, manifest.templates)
    return manifest


class _MiniConfigMixin:
    """`.config` reports the constructor arguments (not the resolved paths), so that
    `instantiate(obj.config)` rebuilds an equivalent object."""

    _mini_args: Dict

    @property
    def config(self) -> DictConfig:
        cls = type(self)
        return OmegaConf.create({"_target_": f"{cls.__module__}.{cls.__qualname__}", **self._mini_args})


class MiniCLIPVisionModelPool(_MiniConfigMixin, CLIPVisionModelPool):
    """`CLIPVisionModelPool` over the mini pool: `_pretrained_` + one fine-tuned tower per task."""

    def __init__(
        self,
        variant: str = "ta20",
        seed: int = 0,
        *,
        tasks: TaskSelection = None,
        first_n: Optional[int] = None,
        num_irrelevant: Optional[int] = None,
        with_train_datasets: bool = True,
        with_test_datasets: bool = True,
        cache_dir: Optional[str] = None,
        builder_version: Optional[int] = None,
        extra_models: Optional[Dict[str, str]] = None,
        **kwargs,
    ):
        tasks = _plain(tasks)
        extra_models = _plain(extra_models) or {}
        manifest = _prepare(variant, seed, cache_dir, builder_version)
        names = select_tasks(manifest, tasks, first_n, num_irrelevant, default="all")
        models = {"_pretrained_": manifest.pretrained_dir, **{t: manifest.models[t] for t in names}}
        for name, path in extra_models.items():
            # outside checkpoints (e.g. the noisy model of the paper's Fig. 1c): no datasets of their own
            if name in models:
                raise ValueError(f"modelpool.extra_models: {name!r} is already a model of the pool; pick another name")
            directory = Path(str(path)).expanduser()
            if not directory.is_dir():
                raise ValueError(f"modelpool.extra_models.{name}: {path!r} is not a directory (a save_pretrained checkpoint)")
            models[name] = str(directory)
        super().__init__(
            DictConfig(models),
            train_datasets=_datasets(manifest, names, "train") if with_train_datasets else None,
            test_datasets=_datasets(manifest, names, "test") if with_test_datasets else None,
            processor=manifest.processor_dir,
            **kwargs,
        )
        self.manifest = manifest
        self._projection_dim = CLIPConfig.from_pretrained(manifest.pretrained_dir).projection_dim
        self._mini_args = dict(
            variant=variant, seed=int(seed), tasks=tasks, first_n=first_n, num_irrelevant=num_irrelevant,
            with_train_datasets=with_train_datasets, with_test_datasets=with_test_datasets,
            cache_dir=cache_dir, builder_version=builder_version, extra_models=extra_models or None, **_plain(kwargs),
        )

    def load_model(self, model_name_or_config, *args, **kwargs):
        """The stock loader, with the vision config's ``projection_dim`` set to the CLIP model's.

        The builds (v3, v4) save their vision towers with transformers' default ``projection_dim``
        (512) while the pool's CLIP projects to 32/64; FusionBench's Surgery sizes its feature
        adapters by the tower's value, so it failed on these pools. Only the config changes, never a
        weight; on real CLIP checkpoints the two values agree already."""
        model = super().load_model(model_name_or_config, *args, **kwargs)
        if isinstance(getattr(model, "config", None), CLIPVisionConfig):
            model.config.projection_dim = self._projection_dim
        return model


class MiniCLIPVisionModelTaskPool(_MiniConfigMixin, CLIPVisionModelTaskPool):
    """`CLIPVisionModelTaskPool` over the mini pool's test splits (default: the eval tasks)."""

    def __init__(
        self,
        variant: str = "ta20",
        seed: int = 0,
        *,
        tasks: TaskSelection = "eval",
        first_n: Optional[int] = None,
        cache_dir: Optional[str] = None,
        builder_version: Optional[int] = None,
        dataloader_kwargs: Optional[Dict] = None,
        **kwargs,
    ):
        tasks = _plain(tasks)
        if first_n is not None and tasks in ("eval", "all"):
            tasks = None  # first_n replaces a whole-group selection (the configs' eval / all)
        manifest = _prepare(variant, seed, cache_dir, builder_version)
        names = select_tasks(manifest, tasks, first_n, default="eval")
        loader = {"batch_size": 64, "num_workers": 0, **(_plain(dataloader_kwargs) or {})}
        super().__init__(
            test_datasets=_datasets(manifest, names, "test"),
            processor=manifest.processor_dir,
            clip_model=manifest.pretrained_dir,
            dataloader_kwargs=loader,
            **kwargs,
        )
        self.manifest = manifest
        self._mini_args = dict(
            variant=variant, seed=int(seed), tasks=tasks, first_n=first_n, cache_dir=cache_dir,
            builder_version=builder_version, dataloader_kwargs=loader, **_plain(kwargs),
        )
