"""Size and schedule of each mini GLUE pool variant; the builder version names the cache.

Bump ``BUILDER_VERSION`` whenever a change here or in the builder changes the produced files (the
cache directory carries it, so an older build is rebuilt rather than silently reused).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

from .tasks import EVAL_TASKS, TASK_ORDER

BUILDER_VERSION = 1


@dataclass(frozen=True)
class GlueVariant:
    name: str
    tasks: Tuple[str, ...]  # the pool's fixed order, eval tasks first
    eval_tasks: Tuple[str, ...]
    n_train: int
    n_test: int
    # the backbone (a real Hugging Face GPT-2) and its tokenizer
    vocab_size: int
    max_length: int  # every row is padded to this many tokens, as FusionBench's GLUE rows are (to 512 there)
    width: int
    layers: int
    heads: int
    # pretraining as a language model on the generic mix (every token predicted)
    pretrain_lines: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    # per-task fine-tuning of backbone and a new classification head
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    # task arithmetic's coefficients tried by the pool card (the check compares the best of each side)
    ta_grid: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)

    def to_dict(self) -> Dict:
        return asdict(self)


VARIANTS: Dict[str, GlueVariant] = {
    "ta8": GlueVariant(
        name="ta8", tasks=tuple(TASK_ORDER), eval_tasks=tuple(EVAL_TASKS), n_train=1000, n_test=400,
        vocab_size=600, max_length=48, width=128, layers=4, heads=4,
        pretrain_lines=20000, pretrain_steps=1500, pretrain_batch=64, pretrain_lr=1e-3,
        finetune_steps=300, finetune_batch=32, finetune_lr=3e-4,
    ),
    "micro": GlueVariant(
        name="micro", tasks=("qa_match", "entailment", "sentiment", "topic"), eval_tasks=("qa_match", "entailment"),
        n_train=800, n_test=200, vocab_size=600, max_length=48, width=64, layers=2, heads=2,
        pretrain_lines=6000, pretrain_steps=600, pretrain_batch=64, pretrain_lr=2e-3,
        finetune_steps=250, finetune_batch=32, finetune_lr=1e-3,
    ),
}


def get_variant(name: str) -> GlueVariant:
    if name not in VARIANTS:
        raise ValueError(f"unknown mini GLUE pool variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]
