"""Data efficiency on mini-TA20 (the paper's Fig. 5 analog): accuracy vs samples per objective task.

Every method runs through the stock ``fusion_bench`` CLI on all 20 models (compare's method specs),
with k samples per eval task: FW-soft, FW-hard, DF-Merge and multi-task fine-tuning read k labelled
train samples of each eval task; the fair AdaMerging (entropy on the eval tasks only) reads k
unlabelled test images of each (``method.samples_per_task``). DF-Merge runs a smaller Bayesian-
optimisation budget than in the table (``--df-merge-steps``, stated in the output).

    python benchmarks/data_efficiency.py --samples 10,30,100,300 --out benchmarks/results/data_efficiency

Output: ``data_efficiency.json`` (every run: command, commit, seconds, accuracies), a markdown table
and ``data_efficiency.png``. ``--merge`` keeps the cells of an earlier JSON that are not re-run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from fusion_bench_fw.cli import POOLS
from fusion_bench_fw.compare import RunResult, average, machine_description, method_specs, run_method, source_commit
from fusion_bench_fw.mini import ensure_built
from fusion_bench_fw.mini.manifest import load_manifest

METHODS = ("fw_soft", "fw_hard", "adamerging_layer_objective", "df_merge", "mtl_samples")
LABELS = {"fw_soft": "FW-soft", "fw_hard": "FW-hard", "adamerging_layer_objective": "AdaMerging layer-wise (entropy: eval tasks)",
          "df_merge": "DF-Merge", "mtl_samples": "Multi-task fine-tuning (not a merge)"}


def spec_for(method: str, k: int, eval_tasks, args):
    specs = method_specs(eval_tasks, fw_iters=args.fw_iters, samples_per_task=k, adamerging_steps=args.adamerging_steps,
                         inner_steps=args.inner_steps, df_merge_steps=tuple(args.df_merge_steps))
    spec = specs[method]
    if method.startswith("adamerging"):  # its data: k unlabelled test images per eval task
        spec.overrides.append(f"method.samples_per_task={k}")
    return spec


def table(cells, samples, eval_tasks) -> str:
    lines = ["| Method | " + " | ".join(f"k={k}" for k in samples) + " |", "|" + "---|" * (len(samples) + 1)]
    for method in METHODS:
        row = []
        for k in samples:
            cell = cells.get(f"{method}@{k}")
            row.append("-" if cell is None else ("failed" if cell.error else f"{100 * average(cell, eval_tasks):.1f}"))
        if any(c != "-" for c in row):
            lines.append(f"| {LABELS[method]} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(cells, samples, eval_tasks, path: Path, reference: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for method in METHODS:
        points = [(k, 100 * average(cells[f"{method}@{k}"], eval_tasks)) for k in samples if f"{method}@{k}" in cells and not cells[f"{method}@{k}"].error]
        if points:
            ax.plot(*zip(*points), marker="o", label=LABELS[method], linestyle="--" if method.startswith("mtl") else "-")
    for label, value in reference.items():
        ax.axhline(100 * value, color="grey", linewidth=0.8, linestyle=":")
        ax.annotate(label, (samples[0], 100 * value), fontsize=7, color="grey", va="bottom")
    ax.set_xscale("log")
    ax.set_xticks(samples, [str(k) for k in samples])
    ax.set_xlabel("samples per eval task")
    ax.set_ylabel("avg. accuracy on the 4 eval tasks (%)")
    ax.set_title("mini-TA20, 20 models merged: data efficiency", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="10,30,100,300")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--pool", choices=sorted(POOLS), default="ta20")
    parser.add_argument("--out", default="benchmarks/results/data_efficiency")
    parser.add_argument("--fw-iters", type=int, default=15)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--adamerging-steps", type=int, default=300)
    parser.add_argument("--df-merge-steps", type=int, nargs=2, default=(5, 15), metavar=("INIT", "ITERS"), help="DF-Merge random + GP-guided steps")
    parser.add_argument("--merge", action="store_true", help="keep an earlier JSON's cells that are not re-run")
    args = parser.parse_args(argv)
    samples = [int(k) for k in args.samples.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"--methods: unknown {unknown}; choose among {', '.join(METHODS)}")
    build_dir = ensure_built(args.pool)
    manifest = load_manifest(build_dir)
    eval_tasks = list(manifest.eval_tasks)
    card = json.loads(Path(manifest.card).read_text())
    modelpool, taskpool = POOLS[args.pool]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    cells, commands = {}, [command]
    if args.merge and (out / "data_efficiency.json").exists():
        earlier = json.loads((out / "data_efficiency.json").read_text())
        cells = {key: RunResult(**value) for key, value in earlier["cells"].items()}
        commands = earlier["commands"] + [command]
    commit = source_commit()
    for k in samples:
        for method in methods:
            key = f"{method}@{k}"
            print(f"[data_efficiency] {key} ...", flush=True)
            result = run_method(key.replace("@", "_k"), spec_for(method, k, eval_tasks, args), modelpool=modelpool, taskpool=taskpool, out_dir=out)
            result.commit = commit
            cells[key] = result
            print(f"[data_efficiency] {key}: {result.error or f'{100 * average(result, eval_tasks):.1f}'} ({result.seconds:.0f} s)", flush=True)
            payload = {"commands": commands, "machine": machine_description(), "pool": args.pool, "build": build_dir.name, "eval_tasks": eval_tasks,
                       "df_merge_steps": list(args.df_merge_steps), "cells": {key: asdict(value) for key, value in cells.items()}}
            (out / "data_efficiency.json").write_text(json.dumps(payload, indent=1))
    shown = sorted({int(key.split("@")[1]) for key in cells})
    zero_shot = sum(card["tasks"][t]["zero_shot"] for t in eval_tasks) / len(eval_tasks)
    plot(cells, shown, eval_tasks, out / "data_efficiency.png", {"zero-shot": zero_shot})
    commits = sorted({c.commit or "unknown" for c in cells.values()})
    (out / "data_efficiency.md").write_text(
        f"# Data efficiency on mini-TA20 ({build_dir.name}): average accuracy (%) on the 4 eval tasks, 20 models merged\n\n"
        + "\n".join(f"Command: `{c}`" for c in commands) + f"\n\nCommit(s): {', '.join(commits)}; every cell's command is in data_efficiency.json\n\n"
        f"Machine: {machine_description()}\n\nk = labelled train samples per eval task (FW-soft, FW-hard, DF-Merge, multi-task fine-tuning) or unlabelled "
        f"test images per eval task (AdaMerging). DF-Merge: BO {args.df_merge_steps[0]}+{args.df_merge_steps[1]} steps, Fisher on min(30, k) samples. "
        f"Zero-shot: {100 * zero_shot:.1f}.\n\n" + table(cells, shown, eval_tasks) + "\n\n![](data_efficiency.png)\n"
    )
    print(out / "data_efficiency.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
