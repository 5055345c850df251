"""FusionBench model pool and task pool over the offline mini LLM pool (built on first instantiation).

The model pool is FusionBench's own ``CausalLMPool`` with ordinary local entries: full fine-tunes
as model directories, LoRA fine-tunes as FusionBench's ``load_peft_causal_lm`` configs (merged on
load, so every stock baseline sees a whole model; FW-Merging streams the adapter instead). Pool
selection works as for mini-TA20: ``tasks``, ``first_n`` or ``num_irrelevant``.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from omegaconf import DictConfig

from fusion_bench.modelpool import CausalLMPool

from ..lm_taskpool import CausalLMExactMatchTaskPool
from ..lora_adapters import PEFT_LOADER_SUFFIX
from ..mini.pools import TaskSelection, _MiniConfigMixin, _plain, select_tasks
from .build import ensure_llm_built
from .manifest import LLMManifest

PEFT_LOADER = "fusion_bench.modelpool.causal_lm." + PEFT_LOADER_SUFFIX


def _manifest(variant: str, seed: int, cache_dir) -> LLMManifest:
    return LLMManifest.load(ensure_llm_built(variant, int(seed), cache_dir))


def _datasets(manifest: LLMManifest, names: List[str], split: str) -> DictConfig:
    return DictConfig({t: {"_target_": "datasets.load_from_disk", "dataset_path": manifest.datasets[t][split]} for t in names})


def model_entry(manifest: LLMManifest, task: str):
    if task in manifest.adapters:
        return {"_target_": PEFT_LOADER, "base_model_path": manifest.base_dir, "peft_model_path": manifest.adapters[task],
                "torch_dtype": "float32", "is_trainable": False, "merge_and_unload": True}
    return manifest.models[task]


class MiniCausalLMPool(_MiniConfigMixin, CausalLMPool):
    """``CausalLMPool`` over the mini LLM pool: ``_pretrained_`` + one fine-tune (full or LoRA) per task."""

    def __init__(self, variant: str = "ta16", seed: int = 0, *, tasks: TaskSelection = None, first_n: Optional[int] = None,
                 num_irrelevant: Optional[int] = None, cache_dir: Optional[str] = None, **kwargs):
        tasks = _plain(tasks)
        manifest = _manifest(variant, seed, cache_dir)
        names = select_tasks(manifest, tasks, first_n, num_irrelevant, default="all")
        models = {"_pretrained_": manifest.base_dir, **{t: model_entry(manifest, t) for t in names}}
        super().__init__(DictConfig(models), tokenizer=manifest.tokenizer_dir, model_kwargs=DictConfig({"torch_dtype": "float32"}),
                         train_datasets=_datasets(manifest, names, "train"), test_datasets=_datasets(manifest, names, "test"), **kwargs)
        self.manifest = manifest
        self._mini_args = dict(variant=variant, seed=int(seed), tasks=tasks, first_n=first_n, num_irrelevant=num_irrelevant,
                               cache_dir=cache_dir, **_plain(kwargs))


class MiniLLMTaskPool(_MiniConfigMixin, CausalLMExactMatchTaskPool):
    """Exact match of greedy generation on the mini LLM pool's test splits (default: the eval tasks)."""

    def __init__(self, variant: str = "ta16", seed: int = 0, *, tasks: TaskSelection = "eval", first_n: Optional[int] = None,
                 cache_dir: Optional[str] = None, batch_size: int = 64, max_new_tokens: int = 16, **kwargs):
        tasks = _plain(tasks)
        if first_n is not None and tasks in ("eval", "all"):
            tasks = None
        manifest = _manifest(variant, seed, cache_dir)
        names = select_tasks(manifest, tasks, first_n, default="eval")
        super().__init__(test_datasets=_datasets(manifest, names, "test"), tokenizer=manifest.tokenizer_dir, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, **kwargs)
        self.manifest = manifest
        self._mini_args: Dict = dict(variant=variant, seed=int(seed), tasks=tasks, first_n=first_n, cache_dir=cache_dir,
                                     batch_size=batch_size, max_new_tokens=max_new_tokens, **_plain(kwargs))
