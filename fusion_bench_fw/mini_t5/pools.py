"""FusionBench model pool and task pool over the offline mini T5 GLUE pool (built on first instantiation).

The model pool is FusionBench's own ``Seq2SeqLMPool`` with the entry layout of its flan-T5 GLUE
configs: ``transformers.AutoModelForSeq2SeqLM.from_pretrained`` entries for the base model and the
full fine-tunes (``flan-t5-base_glue``), or FusionBench's ``load_lora_model`` entries (base model +
PEFT adapter, merged on load for the baselines; FW-Merging streams the adapter) with ``lora=true``
(``flan-t5-base_glue_lora16``). The task pool scores greedy generation by exact match
(``Seq2SeqExactMatchTaskPool``). Pool selection works as for mini-TA20: ``tasks``, ``first_n`` or
``num_irrelevant``.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from omegaconf import DictConfig

from fusion_bench.modelpool import Seq2SeqLMPool

from ..lora_adapters import SEQ2SEQ_PEFT_LOADER
from ..mini.pools import TaskSelection, _MiniConfigMixin, _plain, select_tasks
from ..mini_llm.manifest import LLMManifest as TextPoolManifest
from ..seq2seq_taskpool import Seq2SeqExactMatchTaskPool
from .build import ensure_t5_built

MODEL_LOADER = "transformers.AutoModelForSeq2SeqLM.from_pretrained"


def _manifest(variant: str, seed: int, cache_dir) -> TextPoolManifest:
    return TextPoolManifest.load(ensure_t5_built(variant, int(seed), cache_dir))


def _datasets(manifest: TextPoolManifest, names: List[str], split: str) -> DictConfig:
    return DictConfig({t: {"_target_": "datasets.load_from_disk", "dataset_path": manifest.datasets[t][split]} for t in names})


def _tokenizer(manifest: TextPoolManifest) -> DictConfig:
    return DictConfig({"_target_": "transformers.AutoTokenizer.from_pretrained", "pretrained_model_name_or_path": manifest.tokenizer_dir})


def model_entry(manifest: TextPoolManifest, task: str, lora: bool) -> Dict:
    if lora:
        return {"_target_": SEQ2SEQ_PEFT_LOADER, "base_model_path": manifest.base_dir, "peft_model_path": manifest.adapters[task],
                "is_trainable": False}
    return {"_target_": MODEL_LOADER, "pretrained_model_name_or_path": manifest.models[task]}


class MiniT5GluePool(_MiniConfigMixin, Seq2SeqLMPool):
    """``Seq2SeqLMPool`` over the mini T5 GLUE pool: ``_pretrained_`` + one fine-tune per task (full, or LoRA with ``lora``)."""

    def __init__(self, variant: str = "ta8", seed: int = 0, *, lora: bool = False, tasks: TaskSelection = None,
                 first_n: Optional[int] = None, num_irrelevant: Optional[int] = None, cache_dir: Optional[str] = None, **kwargs):
        tasks = _plain(tasks)
        manifest = _manifest(variant, seed, cache_dir)
        names = select_tasks(manifest, tasks, first_n, num_irrelevant, default="all")
        models = {"_pretrained_": {"_target_": MODEL_LOADER, "pretrained_model_name_or_path": manifest.base_dir},
                  **{t: model_entry(manifest, t, bool(lora)) for t in names}}
        super().__init__(DictConfig(models), tokenizer=_tokenizer(manifest), train_datasets=_datasets(manifest, names, "train"),
                         test_datasets=_datasets(manifest, names, "test"), **kwargs)
        self.manifest = manifest
        self._mini_args = dict(variant=variant, seed=int(seed), lora=bool(lora), tasks=tasks, first_n=first_n,
                               num_irrelevant=num_irrelevant, cache_dir=cache_dir, **_plain(kwargs))


class MiniT5GlueTaskPool(_MiniConfigMixin, Seq2SeqExactMatchTaskPool):
    """Greedy exact match on the mini T5 GLUE test splits (default: the eval tasks)."""

    def __init__(self, variant: str = "ta8", seed: int = 0, *, tasks: TaskSelection = "eval", first_n: Optional[int] = None,
                 cache_dir: Optional[str] = None, batch_size: int = 100, max_new_tokens: int = 8, **kwargs):
        tasks = _plain(tasks)
        if first_n is not None and tasks in ("eval", "all"):
            tasks = None
        manifest = _manifest(variant, seed, cache_dir)
        names = select_tasks(manifest, tasks, first_n, default="eval")
        super().__init__(test_datasets=_datasets(manifest, names, "test"), tokenizer=_tokenizer(manifest), batch_size=batch_size,
                         max_new_tokens=max_new_tokens, **kwargs)
        self.manifest = manifest
        self._mini_args: Dict = dict(variant=variant, seed=int(seed), tasks=tasks, first_n=first_n, cache_dir=cache_dir,
                                     batch_size=batch_size, max_new_tokens=max_new_tokens, **_plain(kwargs))
