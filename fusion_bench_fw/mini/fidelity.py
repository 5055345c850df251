"""Does the pool merge like real CLIP? The fidelity criteria of the pool card, each PASS or MISS.

Real CLIP ViT-B/32 on TA20-style pools (the paper; FusionBench): fine-tuning lifts the 4 eval tasks
by ~30 points; task arithmetic over their 4 models recovers ~60% of that (task vectors small and
nearly orthogonal); over all 20 at the usual lambda 0.3 it collapses (70 -> 21); AdaMerging trained
on the eval tasks beats task arithmetic, and even trained on all 20 stays above zero-shot; simple
averaging of 20 is no worse than zero-shot. A mini pool is a meaningful stand-in when it shows the
same ordering. Every figure is an eval-task average on the test splits, in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

MIN_GAP = 0.25
MIN_RECOVERED = 0.50
MIN_INTERFERENCE = 0.15
LAMBDA = 0.3


@dataclass(frozen=True)
class Criterion:
    key: str
    text: str
    needs: tuple  # figures of the card it reads
    value: Callable[[Dict[str, float]], float]  # the measured quantity
    passes: Callable[[float], bool]
    unit: str = "points"


CRITERIA: List[Criterion] = [
    Criterion("finetune_gap", "zero-shot -> fine-tuned gap >= 25 points", ("zero_shot", "finetuned"),
              lambda f: f["finetuned"] - f["zero_shot"], lambda v: v >= MIN_GAP),
    Criterion("ta_relevant_recovers", "task arithmetic over the eval tasks' models (best lambda) recovers >= 50% of that gap",
              ("zero_shot", "finetuned", "ta_relevant_best"),
              lambda f: (f["ta_relevant_best"] - f["zero_shot"]) / (f["finetuned"] - f["zero_shot"]), lambda v: v >= MIN_RECOVERED, "share"),
    Criterion("ta_interference", "task arithmetic over all models is >= 15 points below over the eval tasks' models (both at lambda 0.3)",
              ("ta_relevant_0.3", "ta_all_0.3"), lambda f: f["ta_relevant_0.3"] - f["ta_all_0.3"], lambda v: v >= MIN_INTERFERENCE),
    Criterion("adamerging_objective_beats_ta", "layer-wise AdaMerging, entropy on the eval tasks, above task arithmetic over their models (best lambda)",
              ("adamerging_objective", "ta_relevant_best"), lambda f: f["adamerging_objective"] - f["ta_relevant_best"], lambda v: v > 0),
    Criterion("adamerging_all_above_zero_shot", "layer-wise AdaMerging, entropy on all tasks, above zero-shot",
              ("adamerging_all", "zero_shot"), lambda f: f["adamerging_all"] - f["zero_shot"], lambda v: v > 0),
    Criterion("average_above_zero_shot", "simple averaging of all models at least zero-shot",
              ("simple_average_all", "zero_shot"), lambda f: f["simple_average_all"] - f["zero_shot"], lambda v: v >= 0),
]


def judge(figures: Dict[str, float]) -> List[Dict]:
    """One row per criterion: measured value, PASS / MISS, or 'not measured' when a figure is absent."""
    rows = []
    for c in CRITERIA:
        value: Optional[float] = c.value(figures) if all(figures.get(k) is not None for k in c.needs) else None
        rows.append({"key": c.key, "criterion": c.text, "unit": c.unit, "value": value,
                     "verdict": "not measured" if value is None else ("PASS" if c.passes(value) else "MISS")})
    return rows


def figures_of(card: Dict) -> Dict[str, float]:
    """The figures the criteria read, from a card written by card.measure_card (plus AdaMerging's, when measured)."""
    ta = card["task_arithmetic"]
    lam = f"{LAMBDA:g}"
    return {
        "zero_shot": card["eval_average"]["zero_shot"],
        "finetuned": card["eval_average"]["finetuned"],
        "ta_relevant_best": ta["relevant"]["best"],
        "ta_relevant_0.3": ta["relevant"]["by_lambda"][lam]["average"],
        "ta_all_0.3": ta["all"]["by_lambda"][lam]["average"],
        "simple_average_all": card.get("simple_average_all"),
        **{k: card.get("adamerging", {}).get(k) for k in ("adamerging_objective", "adamerging_all")},
    }


def markdown(rows: List[Dict]) -> List[str]:
    lines = ["| fidelity criterion (real CLIP ViT-B/32 behaves so) | measured | verdict |", "|---|---|---|"]
    for r in rows:
        v = r["value"]
        shown = "" if v is None else (f"{100 * v:.0f}%" if r["unit"] == "share" else f"{100 * v:+.1f}")
        lines.append(f"| {r['criterion']} | {shown} | {r['verdict']} |")
    return lines
