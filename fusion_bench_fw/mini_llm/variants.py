"""Size and schedule of each mini causal-LM pool variant; the builder version names the cache.

Bump ``BUILDER_VERSION`` whenever a change here or in the builder changes the produced files (the
cache directory carries it, so an older build is rebuilt rather than silently reused).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

from .tasks import EVAL_TASKS, TASK_NAMES

BUILDER_VERSION = 1


@dataclass(frozen=True)
class LLMVariant:
    name: str
    tasks: Tuple[str, ...]  # the pool's fixed order, eval tasks first
    eval_tasks: Tuple[str, ...]
    lora_tasks: Tuple[str, ...]  # fine-tuned as LoRA adapters; the others are full fine-tunes
    n_train: int
    n_test: int
    # the decoder (a real Hugging Face Llama)
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    # pretraining on the generic mix (every token predicted)
    pretrain_lines: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    # per-task fine-tuning (response tokens only)
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    lora_rank: int
    lora_alpha: float
    lora_lr: float
    ta_scaling: float = 0.3  # task arithmetic's coefficient for the pool card

    def to_dict(self) -> Dict:
        return asdict(self)


# Measured on the micro variant (tiny Llama 64 wide x 2 layers, 1200 fine-tune steps, exact match
# on the test split): 200 train pairs per task gave copy 15% / reverse 17% / add 17%; 1000 pairs
# 100 / 100 / 81%. Pretraining lines that repeat themselves took copy from 15% to 100%.
# every fourth non-eval task is a LoRA fine-tune, and so is one eval task, as in the paper's pool
# of hub LoRA adapters next to full fine-tunes
_OTHERS = tuple(t for t in TASK_NAMES if t not in EVAL_TASKS)
VARIANTS: Dict[str, LLMVariant] = {
    "ta16": LLMVariant(
        name="ta16", tasks=tuple(TASK_NAMES), eval_tasks=tuple(EVAL_TASKS), lora_tasks=(EVAL_TASKS[2],) + _OTHERS[::4],
        n_train=800, n_test=200, vocab_size=260, hidden=64, layers=2, heads=4, intermediate=128,
        pretrain_lines=10000, pretrain_steps=600, pretrain_batch=64, pretrain_lr=3e-3,
        finetune_steps=1000, finetune_batch=32, finetune_lr=3e-3, lora_rank=8, lora_alpha=16, lora_lr=5e-3,
    ),
    "micro": LLMVariant(
        name="micro", tasks=tuple(EVAL_TASKS[:2]) + _OTHERS[:2], eval_tasks=tuple(EVAL_TASKS[:1]), lora_tasks=(_OTHERS[1],),
        n_train=800, n_test=48, vocab_size=260, hidden=64, layers=2, heads=4, intermediate=128,
        pretrain_lines=3000, pretrain_steps=400, pretrain_batch=32, pretrain_lr=3e-3,
        finetune_steps=600, finetune_batch=32, finetune_lr=3e-3, lora_rank=8, lora_alpha=16, lora_lr=5e-3,
    ),
}


def get_variant(name: str) -> LLMVariant:
    if name not in VARIANTS:
        raise ValueError(f"unknown mini LLM pool variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]
