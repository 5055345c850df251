"""The two scaling curves of the paper's Table 3 on the mini-TA20 pool, through the stock CLI.

(a) irrelevant addition: pool = the 4 eval-task models + m irrelevant ones, evaluated on the 4 eval tasks;
(b) relevant addition:   pool = the first n models, evaluated on those n tasks.

Like the paper (§4.4), FW-soft optimizes AdaMerging's entropy objective on unlabelled test samples
here, with the same budget of coefficient-gradient steps as AdaMerging (FW iterations x inner steps
= AdaMerging steps). ``fw_soft_ce`` is FW-soft with its default objective instead (cross-entropy
on labelled train samples of the evaluated tasks, the paper's Table-2 setting), same step budget.

    python benchmarks/scaling.py [--irrelevant 0,4,8,16] [--relevant 4,8,12,20] [--methods ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion_bench_fw.compare import MethodSpec, run_method  # noqa: E402
from fusion_bench_fw.mini import ensure_built  # noqa: E402
from fusion_bench_fw.mini.manifest import load_manifest  # noqa: E402
from harness.cli import add_runs  # noqa: E402
from harness.machine import commit_of, describe, one_line  # noqa: E402
from harness.report import write_json, write_lines  # noqa: E402


def specs(budget: int, fw_iters: int, samples: int, eval_tasks: List[str], df_merge_steps=(4, 8)) -> Dict[str, MethodSpec]:
    inner = max(1, budget // fw_iters)
    adamerging = ["method.name=clip_layer_wise_adamerging", f"method.max_steps={budget}", "method.batch_size=16", "method.num_workers=0", "method.save_merging_weights=false"]
    return {
        "fw_soft": MethodSpec(
            f"FW-soft (entropy, {fw_iters}x{inner} steps)",
            ["method=fw_soft", "method.loss=entropy", f"method.max_iters={fw_iters}", f"method.inner_steps={inner}", f"method.samples_per_task={samples}"],
        ),
        # our default objective (the paper's Table-2 setting): cross-entropy on labelled train samples
        "fw_soft_ce": MethodSpec(
            f"FW-soft (CE, {fw_iters}x{inner} steps)",
            ["method=fw_soft", f"method.max_iters={fw_iters}", f"method.inner_steps={inner}", f"method.samples_per_task={samples}"],
        ),
        # FusionBench's default: entropy on the test images of every pool task (in (a), the
        # irrelevant ones too)
        "adamerging": MethodSpec(f"AdaMerging layer-wise ({budget} steps)", ["method=adamerging/clip", *adamerging]),
        # the paper's fair setting: entropy on the 4 eval tasks only, every pool model merged (curve
        # (a) only: in (b) the evaluated tasks are the pool's, so the row above is already fair)
        "adamerging_objective": MethodSpec(f"AdaMerging layer-wise ({budget} steps, entropy: eval tasks)", ["method=adamerging_objective", "method.objective_tasks=[" + ",".join(eval_tasks) + "]", *adamerging]),
        # DF-Merge on the evaluated tasks' train samples, a small BO budget (each step is one Fisher
        # merge of every model)
        "df_merge": MethodSpec(
            f"DF-Merge (BO {df_merge_steps[0]}+{df_merge_steps[1]}, {samples} train samples per task)",
            ["method=df_merge", f"method.init_points={df_merge_steps[0]}", f"method.n_iter={df_merge_steps[1]}", f"method.samples_per_task={samples}", f"method.fisher_samples_per_task={min(30, samples)}", f"method.fisher_batch_size={min(30, samples)}"],
        ),
        "task_arithmetic": MethodSpec("Task arithmetic (0.3)", ["method=task_arithmetic", "method.scaling_factor=0.3"]),
        "ties_merging": MethodSpec("TIES-merging (0.3)", ["method=ties_merging", "method.scaling_factor=0.3"]),
    }


def curve(kind: str, sizes: List[int], methods: List[str], out: Path, args) -> Dict:
    budget = args.budget_irrelevant if kind == "irrelevant" else args.budget_relevant
    table = specs(budget, args.fw_iters, args.samples_per_task, args.eval_tasks, tuple(args.df_merge_steps))
    rows = {}
    for size in sizes:
        if kind == "irrelevant":
            pool_args = [f"modelpool.num_irrelevant={size}"]
            taskpool = "mini-clip_TA20"
        else:
            pool_args = [f"modelpool.first_n={size}"]
            taskpool = "mini-clip_TA20_all"
            pool_args.append(f"taskpool.first_n={size}")
        for method in methods:
            result = run_method(method, table[method], modelpool="mini-clip_TA20", taskpool=taskpool, out_dir=Path(args.runs) / f"{kind}_{size}", extra=pool_args)
            accuracy = None if result.error else sum(result.accuracy.values()) / len(result.accuracy)
            rows.setdefault(method, {})[size] = accuracy
            print(f"[{kind} {size}] {method}: {result.error or f'{100 * accuracy:.1f}'} ({result.seconds:.0f} s)", flush=True)
    return {"sizes": sizes, "labels": {m: table[m].label for m in methods}, "accuracy": rows}


def load_previous(path: Path) -> Dict:
    """An earlier invocation's results in the same folder (curves and methods not recomputed now are
    kept), with the pool sizes back to integers (JSON made them string keys)."""
    if not path.exists():
        return {}
    payload = json.loads(path.read_text())
    for kind in ("irrelevant", "relevant"):
        if kind in payload:
            payload[kind]["accuracy"] = {m: {int(size): v for size, v in row.items()} for m, row in payload[kind]["accuracy"].items()}
    return payload


def merge_curves(earlier: Dict, new: Dict) -> Dict:
    """Pool sizes and methods of both; where both measured a point, the new value wins."""
    accuracy = {m: dict(row) for m, row in earlier["accuracy"].items()}
    for method, row in new["accuracy"].items():
        accuracy.setdefault(method, {}).update(row)
    sizes = sorted(set(earlier["sizes"]) | set(new["sizes"]))
    return {"sizes": sizes, "labels": {**earlier["labels"], **new["labels"]}, "accuracy": accuracy}


def markdown(name: str, data: Dict) -> str:
    sizes = data["sizes"]
    lines = [f"| {name} | " + " | ".join(str(s) for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for method, values in data["accuracy"].items():
        cells = ["failed" if values.get(s) is None else f"{100 * values[s]:.1f}" for s in sizes]
        lines.append(f"| {data['labels'][method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    order = list(dict.fromkeys(m for data in results.values() for m in data["accuracy"]))
    colors = {method: f"C{i}" for i, method in enumerate(order)}  # one colour per method in both panels
    for ax, (kind, xlabel) in zip(axes, [("irrelevant", "irrelevant models added to the 4 relevant"), ("relevant", "relevant models n (eval on n tasks)")]):
        data = results.get(kind)
        if not data:
            ax.set_visible(False)
            continue
        for method, values in data["accuracy"].items():
            xs = [s for s in data["sizes"] if values.get(s) is not None]
            ax.plot(xs, [100 * values[s] for s in xs], marker="o", color=colors[method], label=data["labels"][method])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("avg. accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--irrelevant", default="0,2,4,6,8,10,12,14,16")
    parser.add_argument("--relevant", default="4,6,8,10,12,14,16,18,20")
    parser.add_argument("--methods", default="fw_soft,fw_soft_ce,adamerging,task_arithmetic,ties_merging")
    parser.add_argument("--fw-iters", type=int, default=10)
    parser.add_argument("--budget-irrelevant", type=int, default=300, help="AdaMerging steps = FW iters x inner steps (paper: 300)")
    parser.add_argument("--budget-relevant", type=int, default=200, help="paper: 200")
    parser.add_argument("--samples-per-task", type=int, default=100)
    parser.add_argument("--df-merge-steps", type=int, nargs=2, default=(4, 8), metavar=("INIT", "ITERS"), help="DF-Merge random + GP-guided steps")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling"))
    add_runs(parser, "scaling")
    args = parser.parse_args()

    args.eval_tasks = list(load_manifest(ensure_built("ta20")).eval_tasks)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = commit_of()  # of the code the curves are measured with, taken before the runs
    methods = [m for m in args.methods.split(",") if m]
    earlier = load_previous(out / "scaling.json")
    results = {kind: earlier[kind] for kind in ("irrelevant", "relevant") if kind in earlier}
    for kind, sizes in (("irrelevant", args.irrelevant), ("relevant", args.relevant)):
        if sizes:
            data = curve(kind, [int(x) for x in sizes.split(",")], methods, out, args)
            results[kind] = merge_curves(results[kind], data) if kind in results else data
    command = "python benchmarks/scaling.py " + " ".join(sys.argv[1:])
    commands = earlier.get("commands", []) + [command]
    commits = earlier.get("commits", ["not recorded"] * (len(commands) - 1)) + [commit]
    # the machine (and library versions) of every invocation, not only of the last one
    machines = earlier.get("machines", [earlier.get("machine")] * (len(commands) - 1)) + [describe()]
    payload = {"command": command, "commands": commands, "commits": commits, "machines": machines, **results}
    write_json(out / "scaling.json", payload)
    text = ["# Scaling on mini-TA20 (paper Table 3 analog)", ""]
    for c, k, m in zip(commands, commits, machines):
        text += [f"Command: `{c}` (commit {k})  ", f"Machine: {one_line(m) if m else 'not recorded'}  "]
    text.append("")
    if "irrelevant" in results:
        text += ["(a) 4 relevant + m irrelevant models, accuracy (%) on the 4 eval tasks:", "", markdown("m", results["irrelevant"]), ""]
    if "relevant" in results:
        text += ["(b) first n models, accuracy (%) on those n tasks:", "", markdown("n", results["relevant"]), ""]
    write_lines(out / "scaling.md", text)
    plot(results, out / "scaling.png")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
