"""``fw_trajectory.png`` beside the JSON: did the run converge, and what did it merge?

Three panels per iteration: the objective before and after, the FW gap (log scale), and the merge
as a stacked bar of the weights over the models (the largest ones named, the rest summed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

SHOWN_MODELS = 8


def plot_trajectory(path: Path, iterations: List[Dict[str, Any]], summary: Optional[Dict[str, Any]] = None) -> Optional[Path]:
    """Writes the picture next to ``path`` (same stem, .png); returns its path (None: nothing to plot)."""
    if not iterations:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(r["iteration"]) for r in iterations]
    figure, (objective, gap, merge) = plt.subplots(3, 1, figsize=(7, 8.5), sharex=True, height_ratios=[1, 1, 1.4])
    objective.plot(steps, [r["loss_before"] for r in iterations], "o-", label="before the step")
    objective.plot(steps, [r["loss_after"] for r in iterations], "s--", label="after the step")
    objective.set_ylabel("objective")
    objective.legend(fontsize=8)
    gaps = [max(float(r["fw_gap"]), 1e-12) for r in iterations]
    gap.semilogy(steps, gaps, "o-", color="tab:red")
    gap.set_ylabel("FW gap (log)")
    if not all(r.get("in_hull", True) for r in iterations):
        gap.set_title("theta_t outside the hull (affine start): the gap is not a certificate", fontsize=8)

    totals: Dict[str, float] = {}
    for record in iterations:
        for label, weight in record.get("weights", {}).items():
            totals[label] = totals.get(label, 0.0) + abs(float(weight))
    shown = [label for label, _ in sorted(totals.items(), key=lambda item: -item[1])[:SHOWN_MODELS] if totals[label] > 0]
    positive = [0.0] * len(steps)
    negative = [0.0] * len(steps)
    colours = plt.get_cmap("tab10")
    for index, label in enumerate(shown + ["others"]):
        values = [
            float(r.get("weights", {}).get(label, 0.0)) if label != "others"
            else sum(float(w) for name, w in r.get("weights", {}).items() if name not in shown)
            for r in iterations
        ]
        bottoms = [positive[i] if v >= 0 else negative[i] for i, v in enumerate(values)]
        # matplotlib hides legend labels that start with "_" (as "_pretrained_" does)
        merge.bar(steps, values, bottom=bottoms, color=colours(index % 10) if label != "others" else "lightgrey", label=label.strip("_"))
        for i, v in enumerate(values):
            if v >= 0:
                positive[i] += v
            else:
                negative[i] += v
    merge.set_ylabel("merge weights")
    merge.set_xlabel("iteration")
    merge.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    if summary is not None and summary.get("stop_reason"):
        figure.suptitle(f"stopped: {summary['stop_reason']}", fontsize=8)
    figure.tight_layout()
    target = Path(path).with_suffix(".png")
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target
