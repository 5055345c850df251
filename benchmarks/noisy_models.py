"""Noisy-model robustness on mini-TA20 (the paper's Fig. 1c), through the stock CLI.

A "noisy" checkpoint has the pool's architecture but not its initialization, in two kinds:
``random_init``, a CLIP vision tower with freshly drawn random weights (the model's own init), and
``std_matched``, every tensor of a fine-tuned tower redrawn at random with that tensor's own mean
and standard deviation. Every method runs on the clean 20-model pool and on the same pool plus one
noisy model (`modelpool.extra_models`), scored on the 4 eval tasks. The report gives the accuracies,
the drops and, for FW, the weight the noisy model got and whether it was screened out; the goal
for FW-soft / FW-hard is a drop of at most 0.5 points with the noisy model never selected.

    python benchmarks/noisy_models.py [--methods fw_soft,fw_hard,task_arithmetic,ties_merging] [--kinds random_init,std_matched]
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

from fusion_bench_fw.compare import method_specs, run_method  # noqa: E402
from fusion_bench_fw.mini import ensure_built  # noqa: E402
from fusion_bench_fw.mini.manifest import load_manifest  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from harness.cli import add_runs  # noqa: E402
from harness.machine import commit_of, describe, one_line  # noqa: E402
from harness.report import write_json, write_lines  # noqa: E402

GOAL_POINTS = 0.5


def write_noisy_checkpoint(manifest, directory: Path, seed: int, kind: str) -> Path:
    """A vision tower with the fine-tuned towers' exact config and random weights of ``kind``."""
    reference = manifest.models[manifest.eval_tasks[0]]
    if kind == "random_init":
        torch.manual_seed(seed)
        CLIPVisionModel(CLIPVisionConfig.from_pretrained(reference)).save_pretrained(directory)
        return directory
    model = CLIPVisionModel.from_pretrained(reference)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * parameter.std() + parameter.mean())
    model.save_pretrained(directory)
    return directory


def ever_selected(trajectory) -> bool:
    """Did any iteration pick the noisy model (as a selection, the gap's vertex, or an away vertex)?"""
    text = json.dumps([{k: r.get(k) for k in ("selected", "gap_vertex")} for r in trajectory["iterations"]])
    return '"noisy"' in text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="fw_soft,fw_hard,task_arithmetic,ties_merging")
    parser.add_argument("--fw-iters", type=int, default=15)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--samples-per-task", type=int, default=100)
    parser.add_argument("--noise-seed", type=int, default=1234)
    parser.add_argument("--kinds", default="random_init,std_matched")
    parser.add_argument("--override", action="append", default=[], help="extra fusion_bench override for every run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "noisy"))
    add_runs(parser, "noisy")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(args.runs)
    manifest = load_manifest(ensure_built("ta20", seed=0))
    eval_tasks = list(manifest.eval_tasks)
    kinds = [k for k in args.kinds.split(",") if k]
    noisy_dirs = {kind: write_noisy_checkpoint(manifest, runs / "noisy_checkpoint" / kind, args.noise_seed, kind) for kind in kinds}
    specs = method_specs(eval_tasks, fw_iters=args.fw_iters, samples_per_task=args.samples_per_task, adamerging_steps=0, inner_steps=args.inner_steps)
    methods = [m for m in args.methods.split(",") if m]

    rows = {}
    pools = [("clean", [])] + [(kind, [f"modelpool.extra_models={{noisy:{noisy_dirs[kind]}}}"]) for kind in kinds]
    for method in methods:
        for pool, extra in pools:
            commit = commit_of(ROOT)  # of the code that runs: taken before it starts
            result = run_method(method, specs[method], modelpool="mini-clip_TA20", taskpool="mini-clip_TA20", out_dir=runs / pool, extra=[*extra, *args.override])
            accuracy = None if result.error else 100 * sum(result.accuracy[t] for t in eval_tasks) / len(eval_tasks)
            row = rows.setdefault(method, {"label": specs[method].label})
            row[pool] = {"accuracy": accuracy, "command": result.command, "seconds": round(result.seconds, 1), "commit": commit}
            if pool != "clean" and method.startswith("fw_") and not result.error:
                log_dir = runs / pool / "runs" / method
                trajectory = json.loads(max(log_dir.glob("fw_trajectory*.json"), key=lambda p: p.stat().st_mtime).read_text())
                summary = trajectory["summary"]
                row[pool].update(weight=summary["weights"].get("noisy"), screened="noisy" in summary.get("screened", {}),
                                 distance=summary.get("relative_distances", {}).get("noisy"), selected=ever_selected(trajectory))
            print(f"[{pool}] {method}: {result.error or f'{accuracy:.1f}'} ({result.seconds:.0f} s)", flush=True)

    command = "python benchmarks/noisy_models.py " + " ".join(sys.argv[1:])
    payload = {"command": command, "machine": describe(), "eval_tasks": eval_tasks, "noise_seed": args.noise_seed, "kinds": kinds, "results": rows}
    write_json(out / "noisy.json", payload)
    fmt = lambda v: "failed" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [
        "# Noisy models on mini-TA20 (paper Fig. 1c analog)", "",
        f"Command: `{command}`; commits of the runs: {', '.join(sorted({c['commit'] for r in rows.values() for k, c in r.items() if isinstance(c, dict)}))}  ", f"Machine: {one_line(payload['machine'])}", "",
        f"Pool: the 20 mini-TA20 models, clean or plus one noisy vision tower (seed {args.noise_seed}): {', '.join(kinds)}. "
        f"Average accuracy (%) on the eval tasks {', '.join(eval_tasks)}. Goal for FW: drop <= {GOAL_POINTS} points, the noisy model never selected.", "",
        "| method | noisy model | clean | + noisy | drop | distance from pretrained | screened out | ever selected | final weight | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        clean = row.get("clean", {}).get("accuracy")
        for kind in kinds:
            cell = row.get(kind, {})
            noisy = cell.get("accuracy")
            drop = None if clean is None or noisy is None else clean - noisy
            fw = method.startswith("fw_")
            goal = "" if not fw or drop is None else ("PASS" if drop <= GOAL_POINTS and not cell.get("selected") else f"MISS (drop {drop:.1f})")
            extra = [f"{cell['distance']:.3f}" if cell.get("distance") is not None else "", str(cell.get("screened", "")), str(cell.get("selected", "")), "" if cell.get("weight") is None else f"{cell['weight']:.3g}"]
            lines.append(f"| {row['label']} | {kind} | {fmt(clean)} | {fmt(noisy)} | {fmt(drop)} | " + " | ".join(extra) + f" | {goal} |")
    write_lines(out / "noisy.md", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
