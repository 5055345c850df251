"""FusionBench model pool and task pool over the offline mini GLUE pool (built on first instantiation).

The model pool is FusionBench's own ``GPT2ForSequenceClassificationPool`` (the class of its
``gpt-2_glue`` config) with the same entry layout: ``transformers.GPT2Model.from_pretrained`` configs
for the backbones, each task's directory holding its whole ``GPT2ForSequenceClassification`` (so
``load_classifier`` finds its head), FusionBench's ``load_gpt2_tokenizer``, and tokenized GLUE-layout
datasets. The task pool is FusionBench's ``GPT2TextClassificationTaskPool``. Pool selection works as
for mini-TA20: ``tasks``, ``first_n`` or ``num_irrelevant``.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from omegaconf import DictConfig

from fusion_bench.modelpool.huggingface_gpt2_classification import GPT2ForSequenceClassificationPool
from fusion_bench.taskpool import GPT2TextClassificationTaskPool

from ..mini.pools import TaskSelection, _MiniConfigMixin, _plain, select_tasks
from ..mini_llm.manifest import LLMManifest as TextPoolManifest
from .build import ensure_glue_built

BACKBONE_LOADER = "transformers.GPT2Model.from_pretrained"
TOKENIZER_LOADER = "fusion_bench.modelpool.huggingface_gpt2_classification.load_gpt2_tokenizer"


def _manifest(variant: str, seed: int, cache_dir) -> TextPoolManifest:
    return TextPoolManifest.load(ensure_glue_built(variant, int(seed), cache_dir))


def _datasets(manifest: TextPoolManifest, names: List[str], split: str) -> DictConfig:
    return DictConfig({t: {"_target_": "datasets.load_from_disk", "dataset_path": manifest.datasets[t][split]} for t in names})


def _tokenizer(manifest: TextPoolManifest) -> DictConfig:
    return DictConfig({"_target_": TOKENIZER_LOADER, "pretrained_model_name_or_path": manifest.tokenizer_dir})


class MiniGPT2GluePool(_MiniConfigMixin, GPT2ForSequenceClassificationPool):
    """``GPT2ForSequenceClassificationPool`` over the mini GLUE pool: ``_pretrained_`` + one classifier per task."""

    def __init__(self, variant: str = "ta8", seed: int = 0, *, tasks: TaskSelection = None, first_n: Optional[int] = None,
                 num_irrelevant: Optional[int] = None, cache_dir: Optional[str] = None, **kwargs):
        tasks = _plain(tasks)
        manifest = _manifest(variant, seed, cache_dir)
        names = select_tasks(manifest, tasks, first_n, num_irrelevant, default="all")
        entry = lambda path: {"_target_": BACKBONE_LOADER, "pretrained_model_name_or_path": path}  # noqa: E731
        models = {"_pretrained_": entry(manifest.base_dir), **{t: entry(manifest.models[t]) for t in names}}
        super().__init__(tokenizer=_tokenizer(manifest), models=DictConfig(models), train_datasets=_datasets(manifest, names, "train"),
                         test_datasets=_datasets(manifest, names, "test"), **kwargs)
        self.manifest = manifest
        self._mini_args = dict(variant=variant, seed=int(seed), tasks=tasks, first_n=first_n, num_irrelevant=num_irrelevant,
                               cache_dir=cache_dir, **_plain(kwargs))


class MiniGlueTaskPool(_MiniConfigMixin, GPT2TextClassificationTaskPool):
    """FusionBench's GPT-2 text-classification taskpool on the mini GLUE test splits (default: the eval tasks)."""

    def __init__(self, variant: str = "ta8", seed: int = 0, *, tasks: TaskSelection = "eval", first_n: Optional[int] = None,
                 cache_dir: Optional[str] = None, batch_size: int = 64, **kwargs):
        tasks = _plain(tasks)
        if first_n is not None and tasks in ("eval", "all"):
            tasks = None
        manifest = _manifest(variant, seed, cache_dir)
        names = select_tasks(manifest, tasks, first_n, default="eval")
        super().__init__(test_datasets=_datasets(manifest, names, "test"), tokenizer=_tokenizer(manifest),
                         dataloader_kwargs=DictConfig({"batch_size": batch_size, "num_workers": 0}), fast_dev_run=False, **kwargs)
        self.manifest = manifest
        self._mini_args: Dict = dict(variant=variant, seed=int(seed), tasks=tasks, first_n=first_n, cache_dir=cache_dir,
                                     batch_size=batch_size, **_plain(kwargs))
