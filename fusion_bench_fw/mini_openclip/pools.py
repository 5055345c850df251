"""FusionBench's OpenCLIP model pool and task pool over the mini OpenCLIP pool.

As for the mini CLIP pool, the constructors only make sure the pool is built and hand the parents
ordinary entries in the real pools' form (``{model_name, pickle_path}`` models, ``head_<task>.pt``
paths, ``datasets.load_from_disk`` configs); loading, heads and evaluation are FusionBench's. The
model pool is :class:`~fusion_bench_fw.openclip_pool.OpenCLIPTaskVectorPool`, so FusionBench's own
baselines can load the pickles too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import DictConfig

from ..mini.pools import _MiniConfigMixin, _plain, select_tasks
from ..openclip_pool import OpenCLIPTaskVectorPool
from .build import OpenCLIPManifest, ensure_openclip_built, register_open_clip_config

from fusion_bench.taskpool import OpenCLIPVisionModelTaskPool  # noqa: E402  (after openclip_pool: Python 3.11 workaround)


def _prepare(variant: str, seed: int, cache_dir):
    build_dir = ensure_openclip_built(variant, int(seed), cache_dir)
    manifest = OpenCLIPManifest.load(build_dir)
    register_open_clip_config(build_dir, manifest)
    return build_dir, manifest, build_dir / manifest.checkpoints_root / manifest.model_name


def _datasets(build_dir: Path, manifest: OpenCLIPManifest, names: List[str], split: str) -> DictConfig:
    return DictConfig({t: {"_target_": "datasets.load_from_disk", "dataset_path": str(build_dir / manifest.datasets_dir / t / split)} for t in names})


def _heads(root: Path, names: List[str]) -> DictConfig:
    return DictConfig({t: str(root / f"head_{t}.pt") for t in names})


class MiniOpenCLIPVisionModelPool(_MiniConfigMixin, OpenCLIPTaskVectorPool):
    """``_pretrained_`` (zeroshot.pt) + one fine-tuned ImageEncoder per task, with their heads."""

    def __init__(self, variant: str = "ta8", seed: int = 0, *, tasks=None, cache_dir: Optional[str] = None,
                 with_train_datasets: bool = True, with_test_datasets: bool = True, **kwargs):
        tasks = _plain(tasks)
        build_dir, manifest, root = _prepare(variant, seed, cache_dir)
        names = select_tasks(manifest, tasks, default="all")
        models = {"_pretrained_": {"model_name": manifest.model_name, "pickle_path": str(root / "zeroshot.pt")},
                  **{t: {"model_name": manifest.model_name, "pickle_path": str(root / t / "finetuned.pt")} for t in names}}
        super().__init__(
            DictConfig(models),
            classification_heads=_heads(root, names),
            train_datasets=_datasets(build_dir, manifest, names, "train") if with_train_datasets else None,
            test_datasets=_datasets(build_dir, manifest, names, "test") if with_test_datasets else None,
            **kwargs,
        )
        self.manifest = manifest
        self._mini_args = dict(variant=variant, seed=int(seed), tasks=tasks, cache_dir=cache_dir,
                               with_train_datasets=with_train_datasets, with_test_datasets=with_test_datasets, **_plain(kwargs))


class MiniOpenCLIPVisionModelTaskPool(_MiniConfigMixin, OpenCLIPVisionModelTaskPool):
    """FusionBench's ``OpenCLIPVisionModelTaskPool`` over the mini pool's test splits (default: the eval tasks)."""

    def __init__(self, variant: str = "ta8", seed: int = 0, *, tasks="eval", cache_dir: Optional[str] = None,
                 dataloader_kwargs: Optional[Dict] = None, **kwargs):
        tasks = _plain(tasks)
        build_dir, manifest, root = _prepare(variant, seed, cache_dir)
        names = select_tasks(manifest, tasks, default="eval")
        loader = {"batch_size": 128, "num_workers": 0, **(_plain(dataloader_kwargs) or {})}
        super().__init__(test_datasets=_datasets(build_dir, manifest, names, "test"), classification_heads=_heads(root, names),
                         dataloader_kwargs=DictConfig(loader), model_name=manifest.model_name, **kwargs)
        self.manifest = manifest
        self._mini_args = dict(variant=variant, seed=int(seed), tasks=tasks, cache_dir=cache_dir, dataloader_kwargs=loader, **_plain(kwargs))
