"""Noisy-model robustness on mini-TA20 (the paper's Fig. 1c), through the stock CLI.

A "noisy" checkpoint has the pool's architecture but not its initialization: a CLIP vision tower
with freshly drawn random weights (seeded), so its task vector is large and meaningless. Every
method runs twice, on the clean 20-model pool and on the same pool plus the noisy model
(`modelpool.extra_models`), and is scored on the 4 eval tasks. The report gives both accuracies and
the drop; the goal for FW-soft / FW-hard is a drop of at most 0.5 points.

    python benchmarks/noisy_models.py [--methods fw_soft,fw_hard,task_arithmetic,ties_merging]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion_bench_fw.compare import machine_description, method_specs, run_method  # noqa: E402
from fusion_bench_fw.mini import ensure_built  # noqa: E402
from fusion_bench_fw.mini.manifest import load_manifest  # noqa: E402

GOAL_POINTS = 0.5


def write_noisy_checkpoint(manifest, directory: Path, seed: int) -> Path:
    """A randomly initialised vision tower with the fine-tuned towers' exact config."""
    config = CLIPVisionConfig.from_pretrained(manifest.models[manifest.eval_tasks[0]])
    torch.manual_seed(seed)
    CLIPVisionModel(config).save_pretrained(directory)
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="fw_soft,fw_hard,task_arithmetic,ties_merging")
    parser.add_argument("--fw-iters", type=int, default=15)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--samples-per-task", type=int, default=100)
    parser.add_argument("--noise-seed", type=int, default=1234)
    parser.add_argument("--override", action="append", default=[], help="extra fusion_bench override for every run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "noisy"))
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(ensure_built("ta20", seed=0))
    eval_tasks = list(manifest.eval_tasks)
    noisy_dir = write_noisy_checkpoint(manifest, out / "noisy_checkpoint", args.noise_seed)
    specs = method_specs(eval_tasks, fw_iters=args.fw_iters, samples_per_task=args.samples_per_task, adamerging_steps=0, inner_steps=args.inner_steps)
    methods = [m for m in args.methods.split(",") if m]

    rows = {}
    for method in methods:
        for pool, extra in (("clean", []), ("noisy", [f"modelpool.extra_models={{noisy:{noisy_dir}}}"])):
            result = run_method(method, specs[method], modelpool="mini-clip_TA20", taskpool="mini-clip_TA20", out_dir=out / pool, extra=[*extra, *args.override])
            accuracy = None if result.error else 100 * sum(result.accuracy[t] for t in eval_tasks) / len(eval_tasks)
            rows.setdefault(method, {"label": specs[method].label})[pool] = accuracy
            rows[method][f"{pool}_command"] = result.command
            rows[method][f"{pool}_seconds"] = result.seconds
            if pool == "noisy" and method.startswith("fw_") and not result.error:
                trajectory = json.loads((out / pool / "runs" / method / "fw_trajectory.json").read_text())
                rows[method]["noisy_weight"] = trajectory["summary"]["weights"].get("noisy")
            print(f"[{pool}] {method}: {result.error or f'{accuracy:.1f}'} ({result.seconds:.0f} s)", flush=True)

    command = "python benchmarks/noisy_models.py " + " ".join(sys.argv[1:])
    payload = {"command": command, "machine": machine_description(), "eval_tasks": eval_tasks, "noise_seed": args.noise_seed, "results": rows}
    (out / "noisy.json").write_text(json.dumps(payload, indent=1))
    lines = [
        "# Noisy model on mini-TA20 (paper Fig. 1c analog)", "",
        f"Command: `{command}`  ", f"Machine: {payload['machine']}", "",
        f"Pool: the 20 mini-TA20 models, clean or plus one randomly initialised vision tower (seed {args.noise_seed}). "
        f"Average accuracy (%) on the eval tasks {', '.join(eval_tasks)}. Goal for FW: drop <= {GOAL_POINTS} points.", "",
        "| method | clean | + noisy model | drop | FW weight on the noisy model | goal |", "|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        clean, noisy = row.get("clean"), row.get("noisy")
        drop = None if clean is None or noisy is None else clean - noisy
        goal = "" if not method.startswith("fw_") or drop is None else ("PASS" if drop <= GOAL_POINTS else f"MISS by {drop - GOAL_POINTS:.1f}")
        fmt = lambda v: "failed" if v is None else f"{v:.1f}"  # noqa: E731
        weight = row.get("noisy_weight")
        lines.append(f"| {row['label']} | {fmt(clean)} | {fmt(noisy)} | {fmt(drop)} | {'' if weight is None else f'{weight:.3g}'} | {goal} |")
    (out / "noisy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
