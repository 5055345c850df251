"""Size and schedule of each mini T5 GLUE pool variant; the builder version names the cache.

The tasks and their data are mini GLUE's (``mini_glue.tasks``), written as text-to-text rows. Bump
``BUILDER_VERSION`` whenever a change here or in the builder changes the produced files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

from ..mini_glue.tasks import EVAL_TASKS, TASK_ORDER

BUILDER_VERSION = 1


@dataclass(frozen=True)
class T5Variant:
    name: str
    tasks: Tuple[str, ...]  # the pool's fixed order, eval tasks first
    eval_tasks: Tuple[str, ...]
    n_train: int
    n_test: int
    # the model (a real Hugging Face T5, Flan-T5's gated-GELU v1.1 layout) and its tokenizer
    vocab_size: int
    max_length: int  # input rows padded to this many tokens, as FusionBench's flan-T5 GLUE rows are
    max_target_length: int
    width: int
    ff_width: int
    layers: int  # encoder and decoder each
    heads: int
    # pretraining: span corruption on the generic mix
    pretrain_lines: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    # per-task fine-tuning: every weight (full) or rank-r LoRA factors on attention q and v (lora)
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    lora_rank: int
    lora_alpha: int
    lora_lr: float
    ta_grid: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)

    def to_dict(self) -> Dict:
        return asdict(self)


VARIANTS: Dict[str, T5Variant] = {
    "ta8": T5Variant(
        name="ta8", tasks=tuple(TASK_ORDER), eval_tasks=tuple(EVAL_TASKS), n_train=1000, n_test=400,
        vocab_size=700, max_length=56, max_target_length=8, width=128, ff_width=256, layers=3, heads=4,
        pretrain_lines=20000, pretrain_steps=1500, pretrain_batch=64, pretrain_lr=1e-3,
        finetune_steps=300, finetune_batch=32, finetune_lr=5e-4, lora_rank=16, lora_alpha=32, lora_lr=3e-3,
    ),
    "micro": T5Variant(
        name="micro", tasks=("qa_match", "entailment", "sentiment", "topic"), eval_tasks=("qa_match", "entailment"),
        n_train=800, n_test=200, vocab_size=700, max_length=56, max_target_length=8, width=64, ff_width=128, layers=2, heads=2,
        pretrain_lines=6000, pretrain_steps=600, pretrain_batch=64, pretrain_lr=2e-3,
        finetune_steps=250, finetune_batch=32, finetune_lr=1e-3, lora_rank=16, lora_alpha=32, lora_lr=5e-3,
    ),
}


def get_variant(name: str) -> T5Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown mini T5 GLUE pool variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]
