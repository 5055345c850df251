"""Size and schedule of each mini causal-LM pool variant; the builder version names the cache.

Bump ``BUILDER_VERSION`` whenever a change here or in the builder changes the produced files (the
cache directory carries it, so an older build is rebuilt rather than silently reused).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Dict, Tuple

from .tasks import EVAL_TASKS, TASK_NAMES

BUILDER_VERSION = 4


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
    pretrain_task_pairs: int  # (prompt + response) lines of each pool task's train split mixed into pretraining
    # per-task fine-tuning (response tokens only)
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float
    lora_rank: int
    lora_alpha: float
    lora_lr: float
    # pretraining sees each task under an alias keyword (its keyword in capitals, e.g. "REV"), so the base
    # has the skills but not the fine-tunes' prompts, and a fine-tune only has to tie its keyword to a
    # skill the base already has: the small, elicited change real instruction fine-tunes make. Off in v3
    pretrain_alias: bool = False
    # task arithmetic's coefficients tried by the pool card (the check compares the best of each side)
    ta_grid: Tuple[float, ...] = (0.3, 0.5, 0.7, 1.0)

    def to_dict(self) -> Dict:
        return asdict(self)


# Measured on the micro variant (tiny Llama 64 wide x 2 layers, 1200 fine-tune steps, exact match
# on the test split): 200 train pairs per task gave copy 15% / reverse 17% / add 17%; 1000 pairs
# 100 / 100 / 81%. Pretraining lines that repeat themselves took copy from 15% to 100%.
# LoRA (all linear layers, 1200 steps): rank 8 at lr 5e-3..5e-2 learnt nothing on uppercase (loss
# stuck near 1.9, it diverges at high lr); rank 16, alpha 32, lr 2e-3 reached 100% on lookup,
# parity, first and caesar (uppercase 52%), so the LoRA tasks are those four.
# A full fine-tune moves the weights far (|tau| ~ 25 against |theta_0| ~ 27 at lr 3e-3, 1000 steps), and
# then nothing is linear: the gradient of a task's loss at theta_0 had cosine <= 0.06 with every task
# vector and the LMO chose the LoRA "first" model for the reverse objective; task arithmetic over the
# 3 eval models scored <= 0.3% at every coefficient. A base that has seen a little of every task (400
# train pairs per task mixed into 1500 pretraining steps, as web text holds a little of everything) and
# short fine-tunes (lr 1e-3, 400 steps, |tau| ~ 10) turn this around (8-task trial): each eval task's
# gradient has its most negative cosine with its own model (reverse -0.035, add -0.023, lookup -0.033),
# fine-tunes reach 50 / 48 / 100% from a base at 0 / 0 / 0%. Task vectors still do not add up
# (task arithmetic over the 3 eval models <= 5% at 0.3..1.0): the card says so. A 128-wide decoder
# (same recipe, 8-task trial) did not change it either: <= 5% over the 3 eval models, fine-tunes 54/60/100%.
# Two ta16 trials of a stronger base (3000 pretraining steps) and gentler fine-tunes (lr 3e-4, 300 steps;
# LoRA lr 1e-3), builds of 252-266 s: with all 800 train pairs of every task in pretraining the base
# solves most tasks (reverse 73.5, sort 69.5, copy/first/last 100; add 3.0, lookup 0.0), |tau| is
# 0.04-0.17 of |theta_0| = 35, and task arithmetic over 3 models stays at base level or below at every
# coefficient (reverse/sort/lookup 47.7 at 0.2 from a base of 47.7; reverse/sort/parity 66.0 from 68.7),
# over all 16 it falls to 0 from 0.5 on; add stays unlearnt (ft 7.0) and the base ties its fine-tunes on
# copy, first, last. With 150 pairs per task the base is weak again (reverse 4.0) and task arithmetic
# over the eval models <= 5.2. A 128-wide decoder (intermediate 256; 2000 pretraining steps, 279 s of
# a 400 s build; the t1 fine-tunes) moves a little: task arithmetic over reverse/sort/parity 49.0 at 0.2
# from a base mean of 43.0 (fine-tunes 91/93/100), over twice/drop_vowels/caesar 42.7 from 34.7, over
# the eval tasks 6.8; over all 16 <= 19.3 and 0 from 0.5 on. No recipe tried yet makes task vectors
# add up as fine-tunes of a real LLM do.
LORA_TASKS = ("lookup", "first", "caesar", "parity")


def _eval_first(eval_tasks: Tuple[str, ...]) -> Tuple[str, ...]:
    """The pool's fixed order: the eval tasks, then the others in the task table's order."""
    return tuple(eval_tasks) + tuple(t for t in TASK_NAMES if t not in eval_tasks)


_V3: Dict[str, LLMVariant] = {
    "ta16": LLMVariant(
        name="ta16", tasks=_eval_first(EVAL_TASKS), eval_tasks=tuple(EVAL_TASKS), lora_tasks=LORA_TASKS,
        n_train=800, n_test=200, vocab_size=260, hidden=64, layers=2, heads=4, intermediate=128,
        pretrain_lines=10000, pretrain_steps=1500, pretrain_batch=64, pretrain_lr=3e-3, pretrain_task_pairs=400,
        finetune_steps=400, finetune_batch=32, finetune_lr=1e-3, lora_rank=16, lora_alpha=32, lora_lr=2e-3,
    ),
    "micro": LLMVariant(
        name="micro", tasks=("reverse", "add", "copy", "first"), eval_tasks=("reverse",), lora_tasks=("first",),
        n_train=800, n_test=48, vocab_size=260, hidden=64, layers=2, heads=4, intermediate=128,
        pretrain_lines=3000, pretrain_steps=1000, pretrain_batch=32, pretrain_lr=3e-3, pretrain_task_pairs=400,
        finetune_steps=400, finetune_batch=32, finetune_lr=1e-3, lora_rank=16, lora_alpha=32, lora_lr=2e-3,
    ),
}

# v4 (issue 16): fine-tunes that elicit a skill the base already has, as instruction fine-tunes of a real
# LLM do. Pretraining sees 800 train pairs of every task under an alias keyword (pretrain_alias: "REV"
# for "rev"), so the base solves no task as the pool prompts it (0% on 15 of 16) but has every skill,
# and a short, gentle fine-tune (lr 3e-4, 300 steps) ties the keyword to it: |tau| 4.2-9.5 against
# |theta_0| 46. Measured on trial builds (scratch, 264 s each): task arithmetic over reverse/sort/parity
# reaches 39.7 at lambda 0.7 from a base of 0 and fine-tunes of 70/81/98 (48% of the gap; v3's recipe
# with the same tower: 6 points above its base), and over all 16 at most 9.3 (0 from lambda 0.5 on).
# Halving the fine-tuning rates (lr 1.5e-4, LoRA 5e-4) gave smaller task vectors but worse merges
# (27.0 over the same three). The eval tasks become reverse, sort and parity (two full fine-tunes and a
# LoRA adapter): v3's add stays unlearnt by every recipe (fine-tunes 6-24%) and lookup is a memorised
# table no merge of other models can carry. A 128-wide decoder with a 320-token vocabulary (task
# keywords become single tokens). micro keeps v3's recipe (its tests check v3's behaviour).
_V4: Dict[str, LLMVariant] = {
    "ta16": replace(
        _V3["ta16"], tasks=_eval_first(("reverse", "sort", "parity")), eval_tasks=("reverse", "sort", "parity"),
        vocab_size=320, hidden=128, intermediate=256, pretrain_steps=2000, pretrain_task_pairs=800, pretrain_alias=True,
        finetune_steps=300, finetune_lr=3e-4, lora_lr=1e-3, ta_grid=(0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
    ),
    "micro": _V3["micro"],
}

VARIANTS_BY_VERSION: Dict[int, Dict[str, LLMVariant]] = {3: _V3, 4: _V4}
VARIANTS: Dict[str, LLMVariant] = VARIANTS_BY_VERSION[BUILDER_VERSION]


def get_variant(name: str, version: int = BUILDER_VERSION) -> LLMVariant:
    if version not in VARIANTS_BY_VERSION:
        raise ValueError(f"mini LLM pool builder version {version}: choose one of {sorted(VARIANTS_BY_VERSION)} (current {BUILDER_VERSION})")
    if name not in VARIANTS_BY_VERSION[version]:
        raise ValueError(f"unknown mini LLM pool variant {name!r}; choose one of {', '.join(VARIANTS_BY_VERSION[version])}")
    return VARIANTS_BY_VERSION[version][name]
