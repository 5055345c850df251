"""The pool card: the figures that say whether the mini pool is a meaningful merging benchmark.

Two conditions make it one: (a) fine-tuning must matter (the pretrained model's zero-shot average on
the eval tasks is at least 25 points below the fine-tuned models'), and (b) irrelevant models must
hurt (task arithmetic over every model scores lower on the eval tasks than task arithmetic over the
eval tasks' own models). Both are measured on the test splits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import torch
from transformers import CLIPVisionModel

from . import fidelity
from .fidelity import LAMBDA as TA_DEFAULT_LAMBDA
from .fidelity import MIN_GAP  # condition (a), as a fraction
from .training import TaskTensors, ZeroShotHead, accuracy, eval_average
from .variants import Variant


def task_arithmetic(
    pretrained: CLIPVisionModel, finetuned: Sequence[CLIPVisionModel], scaling: float
) -> CLIPVisionModel:
    """theta_0 + scaling * sum_i (theta_i - theta_0): the formula of TaskArithmeticAlgorithm."""
    base = pretrained.state_dict()
    merged = {k: v.clone() for k, v in base.items()}
    for model in finetuned:
        for k, v in model.state_dict().items():
            merged[k] += scaling * (v - base[k])
    out = CLIPVisionModel(pretrained.config)
    out.load_state_dict(merged)
    return out.eval()


def _ta_curve(
    pretrained, finetuned, heads, tasks: Mapping[str, TaskTensors], eval_tasks, grid
) -> Dict[str, Dict[str, float]]:
    curve = {}
    for lam in grid:
        merged = task_arithmetic(pretrained, finetuned, lam)
        accs = {t: accuracy(merged, heads[t], tasks[t].test_x, tasks[t].test_y) for t in eval_tasks}
        accs["average"] = sum(accs.values()) / len(eval_tasks)
        curve[f"{lam:g}"] = accs
    return curve


def _summary(curve: Dict[str, Dict[str, float]]) -> Dict:
    best = max(curve, key=lambda k: curve[k]["average"])
    return {
        "at_default": curve[f"{TA_DEFAULT_LAMBDA:g}"]["average"],
        "best_lambda": float(best),
        "best": curve[best]["average"],
        "by_lambda": curve,
    }


@torch.no_grad()
def measure_card(
    variant: Variant,
    seed: int,
    pretrained: CLIPVisionModel,
    finetuned: Mapping[str, CLIPVisionModel],
    heads: Mapping[str, ZeroShotHead],
    tasks: Mapping[str, TaskTensors],
) -> Dict:
    eval_tasks: List[str] = list(variant.eval_tasks)
    per_task = {
        t: {
            "zero_shot": accuracy(pretrained, heads[t], tasks[t].test_x, tasks[t].test_y),
            "finetuned": accuracy(finetuned[t], heads[t], tasks[t].test_x, tasks[t].test_y),
            "eval": t in eval_tasks,
        }
        for t in variant.tasks
    }
    mean = lambda key: sum(per_task[t][key] for t in eval_tasks) / len(eval_tasks)  # noqa: E731
    zs, ft = mean("zero_shot"), mean("finetuned")
    grid = sorted(set(variant.ta_grid) | {TA_DEFAULT_LAMBDA})
    relevant = _summary(
        _ta_curve(pretrained, [finetuned[t] for t in eval_tasks], heads, tasks, eval_tasks, grid)
    )
    everything = _summary(
        _ta_curve(pretrained, [finetuned[t] for t in variant.tasks], heads, tasks, eval_tasks, grid)
    )
    averaged = task_arithmetic(pretrained, [finetuned[t] for t in variant.tasks], 1.0 / len(variant.tasks))
    simple_average = eval_average(averaged, heads, tasks, eval_tasks)
    return {
        "variant": variant.name,
        "seed": seed,
        "settings": variant.to_dict(),
        "eval_tasks": eval_tasks,
        "tasks": per_task,
        "eval_average": {"zero_shot": zs, "finetuned": ft},
        "task_arithmetic": {
            "relevant": {"models": eval_tasks, **relevant},
            "all": {"models": list(variant.tasks), **everything},
        },
        "simple_average_all": simple_average,
        "conditions": {
            "a_finetune_gap": ft - zs,
            "a_holds": ft - zs >= MIN_GAP,
            "b_holds_at_default": everything["at_default"] < relevant["at_default"],
            "b_holds_at_best": everything["best"] < relevant["best"],
        },
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def card_markdown(card: Dict, build_seconds: float) -> str:
    lines = [
        f"# Mini pool card: {card['variant']} (seed {card['seed']})",
        "",
        f"Built in {build_seconds:.0f} s. Accuracies (%) on each task's test split.",
        "",
        "| task | eval | zero-shot | fine-tuned |",
        "|---|---|---|---|",
    ]
    for t, r in card["tasks"].items():
        lines.append(f"| {t} | {'yes' if r['eval'] else ''} | {_pct(r['zero_shot'])} | {_pct(r['finetuned'])} |")
    ea, ta, c = card["eval_average"], card["task_arithmetic"], card["conditions"]
    n_rel, n_all = len(ta["relevant"]["models"]), len(ta["all"]["models"])
    lines += [
        "",
        f"Eval-task average: zero-shot {_pct(ea['zero_shot'])}, fine-tuned {_pct(ea['finetuned'])} "
        f"(gap {_pct(c['a_finetune_gap'])} points; condition (a) needs >= {_pct(MIN_GAP)}: "
        f"{'holds' if c['a_holds'] else 'FAILS'}).",
        "",
        "Task arithmetic, eval-task average:",
        "",
        f"| models | lambda={TA_DEFAULT_LAMBDA:g} | best lambda | best |",
        "|---|---|---|---|",
        f"| {n_rel} relevant | {_pct(ta['relevant']['at_default'])} | {ta['relevant']['best_lambda']:g} "
        f"| {_pct(ta['relevant']['best'])} |",
        f"| all {n_all} | {_pct(ta['all']['at_default'])} | {ta['all']['best_lambda']:g} | {_pct(ta['all']['best'])} |",
        "",
        f"Condition (b), all {n_all} below the {n_rel} relevant: at lambda={TA_DEFAULT_LAMBDA:g} "
        f"{'holds' if c['b_holds_at_default'] else 'FAILS'}; at the best lambda "
        f"{'holds' if c['b_holds_at_best'] else 'FAILS'}.",
        "",
        f"Simple averaging of all {n_all}: {_pct(card['simple_average_all'])}."
        + (f" FusionBench layer-wise AdaMerging ({card['adamerging']['steps']} steps, lr {card['adamerging']['lr']:g}"
           f"{', seed ' + str(card['adamerging']['seed']) if 'seed' in card['adamerging'] else ''}), "
           f"entropy on the eval tasks: {_pct(card['adamerging']['adamerging_objective'])}; on all tasks: {_pct(card['adamerging']['adamerging_all'])}."
           if "adamerging" in card else " AdaMerging not measured in this build."),
        "",
        *fidelity.markdown(card["fidelity"]),
        "",
    ]
    return "\n".join(lines)


def _replace_atomically(path: Path, text: str) -> None:
    """A reader (or a killed writer) never sees half a card: write aside, then rename over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_card(build_dir: Path, card: Dict, build_seconds: float) -> None:
    """card.json and card.md, the fidelity verdicts judged from the card's figures (a rewrite judges again)."""
    card = {**card, "build_seconds": round(build_seconds, 1), "fidelity": fidelity.judge(fidelity.figures_of(card))}
    _replace_atomically(build_dir / "card.json", json.dumps(card, indent=2))
    _replace_atomically(build_dir / "card.md", card_markdown(card, build_seconds))
