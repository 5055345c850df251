"""Size and schedule of each pool variant, per builder version; the version names the cache.

Add a version (and make it BUILDER_VERSION) whenever a change here or in the builder changes the
produced files: the cache directory and manifest carry it, so an older cache is rebuilt instead of
silently reused. Older versions stay buildable by number (``builder_version=3``): their settings
are kept here and the builder's code paths for them are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Optional, Tuple

from .tasks import EVAL_TASKS, TASK_ORDER

# The default build: v4 (anchored fine-tunes, below). v3 stays buildable with builder_version=3.
BUILDER_VERSION = 4


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
    # fine-tune the weight matrices only: biases and LayerNorm parameters keep their pretrained values
    # (a candidate lever against the large component all task vectors share; off in v3 and v4)
    finetune_weights_only: bool = False
    # intra-op threads of the contrastive pretraining, fixed (not the machine's cores) so a build is the
    # same function of its seed everywhere; 1 in v3 and v4, whose pretraining leaves a second core idle.
    # Measured on ta20 v4 (benchmarks/results/mini_fidelity/variant_trials.md): 2 threads change only the
    # weights' rounding (every figure the card judges identical; 6 of its 22 task-arithmetic points
    # move by 1-3 test images) and the build takes 555 s instead of 614 s; the next version should use it
    pretrain_threads: int = 1
    # share of each *eval* task's train images in the pretraining mix (None: pretrain_fraction, as in v3
    # and v4). A real CLIP's zero-shot skill comes from web data, not from its benchmarks' training sets
    eval_pretrain_fraction: Optional[float] = None
    # task arithmetic grid for the pool card
    ta_grid: Tuple[float, ...] = field(default=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0))

    def to_dict(self) -> Dict:
        return asdict(self)


# ta20 keeps the prototype's size (vision tower 128 wide x 4 layers, patch 8). Cheaper
# settings measured worse: a 96-wide tower (30% faster) or 192-image pretraining batches put task
# arithmetic over the 4 relevant models below zero-shot (48.9 vs 51.4; 49.4 vs 51.4), unlike real
# CLIP, where merging relevant fine-tunes helps. micro: 5 tasks, half the width, half the depth,
# for tests; its 2 eval tasks are two of ta20's.
_V3: Dict[str, Variant] = {
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


# v4 (issue 13): fine-tunes that keep the pretrained function outside their task, as a real CLIP's
# do. Each step also pulls the tower's embeddings of generic pretraining images toward the
# pretrained ones (finetune_anchor), and twice the optimizer steps at half the batch grow the task
# vectors (relative norm 0.06 -> 0.09), so that 20 of them at lambda 0.3 interfere (16 points below
# the 4 relevant ones) while the 4 still recover half the fine-tuning gain (best lambda 0.7, not
# real CLIP's ~0.3). Measured attempts: benchmarks/results/mini_fidelity/.
_V4: Dict[str, Variant] = {
    "ta20": replace(
        _V3["ta20"], finetune_steps=500, finetune_batch=32, finetune_lr=7e-4, finetune_anchor=7.0, finetune_anchor_batch=16,
        ta_grid=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    ),
    # micro keeps v3's fine-tuning: its 64-wide, 2-layer tower cannot both learn a task and keep the
    # pretrained function (anchored, the fine-tuning gain falls from 30 to 19-25 points)
    "micro": _V3["micro"],
}

VARIANTS_BY_VERSION: Dict[int, Dict[str, Variant]] = {3: _V3, 4: _V4}
VARIANTS: Dict[str, Variant] = VARIANTS_BY_VERSION[BUILDER_VERSION]


def override(variant: Variant, assignments) -> Tuple[Variant, Dict]:
    """The variant with ``field=value`` assignments applied (values converted to the field's type),
    and the changes as a dict; for experiments that try settings no version has."""
    numeric = [k for k, v in asdict(variant).items() if v is None or isinstance(v, (int, float))]  # bools included
    changes = {}
    for item in assignments:
        key, _, value = item.partition("=")
        if key not in numeric:
            raise ValueError(f"{item!r}: {key!r} is not a numeric setting of the mini pool variant; choose one of {', '.join(numeric)}")
        kind = type(getattr(variant, key))
        try:
            changes[key] = kind(float(value)) if kind in (int, float, bool) else float(value)  # else an Optional[float] left None
        except ValueError:
            raise ValueError(f"{item!r}: {key} takes a number, e.g. {key}={getattr(variant, key)}") from None
    return replace(variant, **changes), changes


def get_variant(name: str, version: int = BUILDER_VERSION) -> Variant:
    if version not in VARIANTS_BY_VERSION:
        raise ValueError(f"mini pool builder_version={version}: choose one of {sorted(VARIANTS_BY_VERSION)} (current {BUILDER_VERSION})")
    try:
        return VARIANTS_BY_VERSION[version][name]
    except KeyError:
        raise ValueError(f"unknown mini pool variant {name!r}; choose one of {sorted(VARIANTS_BY_VERSION[version])}") from None
