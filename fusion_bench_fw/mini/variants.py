"""Size and schedule of each pool variant, and the builder version that names the cache.

Bump BUILDER_VERSION whenever a change here or in the builder changes the produced files: the
cache directory and manifest carry it, so an older cache is rebuilt instead of silently reused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Tuple

from .tasks import EVAL_TASKS, TASK_ORDER

BUILDER_VERSION = 3


@dataclass(frozen=True)
class Variant:
    name: str
    tasks: Tuple[str, ...]  # in the pool's fixed order, eval tasks first
    eval_tasks: Tuple[str, ...]
    n_train: int  # train images per task
    n_test: int  # test images per task
    # CLIP shape
    vision_width: int
    vision_layers: int
    text_width: int
    text_layers: int
    heads: int
    projection_dim: int
    # log of CLIP's initial logit scale; ln 30, sharper than CLIP's ln(1/0.07), suits short training
    logit_scale_init: float
    # contrastive pretraining
    pretrain_steps: int
    pretrain_batch: int
    pretrain_fraction: float  # share of each task's train images seen in pretraining
    pretrain_lr: float
    # per-task fine-tuning of the vision tower against the frozen zero-shot head
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    max_shift: int  # random-translation augmentation, pixels
    # weight of the embedding anchor on generic images during fine-tuning (0 = none, builder v3)
    finetune_anchor: float = 0.0
    finetune_anchor_batch: int = 64
    # task arithmetic grid for the pool card
    ta_grid: Tuple[float, ...] = field(default=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0))

    def to_dict(self) -> Dict:
        return asdict(self)


# ta20 keeps the prototype's size (vision tower 128 wide x 4 layers, patch 8). Cheaper
# settings measured worse: a 96-wide tower (30% faster) or 192-image pretraining batches put task
# arithmetic over the 4 relevant models below zero-shot (48.9 vs 51.4; 49.4 vs 51.4), unlike real
# CLIP, where merging relevant fine-tunes helps. micro: 5 tasks, half the width, half the depth,
# for tests; its 2 eval tasks are two of ta20's.
VARIANTS: Dict[str, Variant] = {
    "ta20": Variant(
        name="ta20",
        tasks=TASK_ORDER,
        eval_tasks=EVAL_TASKS,
        n_train=1000,
        n_test=400,
        vision_width=128,
        vision_layers=4,
        text_width=128,
        text_layers=2,
        heads=4,
        projection_dim=64,
        logit_scale_init=3.4,
        pretrain_steps=500,
        pretrain_batch=256,
        pretrain_fraction=0.3,
        pretrain_lr=1e-3,
        finetune_steps=250,
        finetune_batch=64,
        finetune_lr=5e-4,
        max_shift=3,
    ),
    "micro": Variant(
        name="micro",
        tasks=("scenes", "textures", "shapes", "colors", "digit_rotation"),
        eval_tasks=("scenes", "textures"),
        n_train=800,
        n_test=200,
        vision_width=64,
        vision_layers=2,
        text_width=64,
        text_layers=2,
        heads=2,
        projection_dim=32,
        logit_scale_init=3.4,
        pretrain_steps=100,
        pretrain_batch=128,
        pretrain_fraction=0.3,
        pretrain_lr=2e-3,
        finetune_steps=200,
        finetune_batch=64,
        finetune_lr=2e-3,
        max_shift=2,
    ),
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown mini pool variant {name!r}; choose one of {sorted(VARIANTS)}") from None
