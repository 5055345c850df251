"""Does FW converge? Final objective, FW gap and accuracy of FW runs, through the stock CLI.

Each row is one ``fusion_bench`` run; its ``fw_trajectory.json`` gives the objective and the FW gap
per iteration, its ``program_report.json`` the test accuracy. ``--tree DIR`` runs the rows with
another checkout of this project first on ``PYTHONPATH`` (e.g. a ``git worktree`` of an older
commit, to measure before/after on the same machine); each row records the commit it ran.

    python benchmarks/convergence.py --pool ta20 --rows fw_soft,fw_hard [--tree DIR --tag before]
    python benchmarks/convergence.py --pool ta20 --rows fw_hard --override modelpool.num_irrelevant=0
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion_bench_fw.cli import POOLS  # noqa: E402
from fusion_bench_fw.compare import FUSION_BENCH  # noqa: E402
from fusion_bench_fw.mini import ensure_built  # noqa: E402
from fusion_bench_fw.mini.manifest import load_manifest  # noqa: E402
from harness.cli import add_runs  # noqa: E402
from harness.machine import commit_of, describe  # noqa: E402
from harness.report import write_json  # noqa: E402

ROWS = {"fw_soft": ["method=fw_soft"], "fw_hard": ["method=fw_hard"]}


def summarize(log_dir: Path, eval_tasks: List[str]) -> Dict:
    report = json.loads((log_dir / "program_report.json").read_text())
    trajectory = json.loads(max(log_dir.glob("fw_trajectory*.json"), key=lambda p: p.stat().st_mtime).read_text())
    iterations = trajectory["iterations"]
    summary = trajectory.get("summary", {})
    accuracy = {t: round(100 * float(report[t]["accuracy"]), 2) for t in eval_tasks}
    relative = [(r["loss_before"] - r["loss_after"]) / abs(r["loss_before"]) for r in iterations]
    return {
        "accuracy": accuracy,
        "average": round(sum(accuracy.values()) / len(accuracy), 2),
        "objective_start": iterations[0]["loss_before"],
        "objective_final": iterations[-1]["loss_after"],
        "gap_first": iterations[0]["fw_gap"],
        "gap_final": iterations[-1]["fw_gap"],
        "gaps": [round(r["fw_gap"], 5) for r in iterations],
        "objectives": [round(r["loss_after"], 5) for r in iterations],
        "iterations": len(iterations),
        # iterations after the first that lowered the objective by < 1e-4 (relative) and did not end the run
        "idle_iterations": sum(1 for x in relative[1:-1] if x < 1e-4),
        "stop_reason": summary.get("stop_reason"),
        "time_iterating_s": round(sum(r.get("time_s", 0.0) for r in iterations), 1),
        "weights": {k: v for k, v in sorted(summary.get("weights", {}).items(), key=lambda kv: -abs(kv[1]))[:6]},
        "screened": summary.get("screened"),
    }


def write_report(results: Dict, path: Path) -> None:
    """The markdown table of every row so far, each with its commit; the commands below it."""
    rows = results["rows"]
    lines = [
        "# FW convergence: objective, FW gap and accuracy per run", "",
        f"Machine: {results['machine'].get('cpu_cores')} cores, {results['machine'].get('memory_gib')} GiB, torch {results['machine'].get('torch')}, CUDA {results['machine'].get('cuda')}.", "",
        "| run | commit | final objective | FW gap first -> final (ratio) | iterations (idle) | stop | per-task accuracy | avg | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        accuracy = ", ".join(f"{t} {a:.1f}" for t, a in r["accuracy"].items())
        stop = (r["stop_reason"] or "").split(":")[0]
        lines.append(
            f"| {r['name']} | {r['commit']} | {r['objective_final']:.4f} | {r['gap_first']:.3f} -> {r['gap_final']:.4f} ({r['gap_final'] / r['gap_first']:.3f}) "
            f"| {r['iterations']} ({r['idle_iterations']}) | {stop} | {accuracy} | **{r['average']:.2f}** | {r['wall_s']:.0f} |"
        )
    lines += ["", "Commands:", ""] + [f"- `{r['name']}`: `{r['command']}`" for r in rows]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", choices=sorted(POOLS), default="ta20")
    parser.add_argument("--rows", default="fw_soft,fw_hard")
    parser.add_argument("--tree", default=None, help="checkout whose fusion_bench_fw runs the rows (default: this one)")
    parser.add_argument("--tag", default="after", help="label of these rows in the table (e.g. before / after)")
    parser.add_argument("--override", action="append", default=[], help="extra fusion_bench override for every row")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "convergence"))
    add_runs(parser, "convergence")
    parser.add_argument("--resummarize", action="store_true", help="re-read the kept run folders of every row, rewrite the table, run nothing")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(ensure_built(args.pool, seed=0))
    eval_tasks = list(manifest.eval_tasks)
    tree = Path(args.tree).resolve() if args.tree else ROOT
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if args.tree:
        env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
    results_file = out / "convergence.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {"machine": describe(), "rows": []}
    modelpool, taskpool = POOLS[args.pool]
    if args.resummarize:
        for entry in results["rows"]:
            tasks = list(load_manifest(ensure_built(entry["pool"], seed=0)).eval_tasks)
            entry.update(summarize(Path(args.runs) / entry["name"], tasks))
        write_json(results_file, results)
        write_report(results, out / "convergence.md")
        return 0
    for row in [r for r in args.rows.split(",") if r]:
        name = "_".join([args.pool, row, args.tag] + [o.split("=")[-1] for o in args.override])
        log_dir = Path(args.runs) / name
        command = [FUSION_BENCH, *ROWS[row], f"modelpool={modelpool}", f"taskpool={taskpool}", f"path.log_dir={log_dir}", "print_config=false", *args.override]
        print(f"[convergence] {name}: {shlex.join(command[1:])}", flush=True)
        commit = commit_of(tree)  # of the code that runs: taken before it starts
        started = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        entry = {
            "name": name, "pool": args.pool, "row": row, "tag": args.tag, "commit": commit,
            "command": ("PYTHONPATH=" + str(tree) + " " if args.tree else "") + shlex.join(["fusion_bench", *command[1:]]),
            "wall_s": round(seconds, 1), **summarize(log_dir, eval_tasks),
        }
        results["rows"] = [r for r in results["rows"] if r["name"] != name] + [entry]
        write_json(results_file, results)
        write_report(results, out / "convergence.md")
        print(f"[convergence] {name}: avg {entry['average']}, objective {entry['objective_final']:.4f}, gap {entry['gap_first']:.3f} -> {entry['gap_final']:.4f}, {entry['stop_reason']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
