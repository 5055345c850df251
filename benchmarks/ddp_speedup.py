"""Speed-up of FW-Merging's two phases with 2 data-parallel processes vs 1 (CPU, gloo).

Runs the stock CLI (``fusion_bench method=fw_hard ... fabric.devices=N fabric.strategy=ddp``) on a
mini pool, reads the per-iteration phase timings the solver records (``time_gradient_s``: the
objective's forward/backward, ``time_lmo_s``: the streaming LMO pass) from the trajectory, and
reports medians over iterations and repeats. Each process gets ``--threads`` intra-op threads, so
with 2 cores the fair comparison is 1 process x 2 threads vs 2 processes x 1 thread (the default).

    python benchmarks/ddp_speedup.py --pool ta20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion_bench_fw.compare import FUSION_BENCH  # noqa: E402
from harness.machine import describe, one_line  # noqa: E402
from harness.report import write_json, write_lines  # noqa: E402

POOLS = {"ta20": "mini-clip_TA20", "micro": "mini-clip_micro"}


def run_once(pool: str, devices: int, threads: int, iters: int, samples: int, out: Path):
    strategy = "ddp" if devices > 1 else "auto"
    command = [
        FUSION_BENCH, "method=fw_hard", "method.granularity=task", "method.init=pretrained", f"method.max_iters={iters}",
        f"method.samples_per_task={samples}", "method.batch_size=25", "method.probe_step=0",
        f"modelpool={POOLS[pool]}", "taskpool=dummy", f"fabric.devices={devices}", f"fabric.strategy={strategy}",
        "fabric.accelerator=cpu", f"path.log_dir={out}", "print_config=false",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    iterations = json.loads((out / "fw_trajectory.json").read_text())["iterations"]
    return [r["time_gradient_s"] for r in iterations], [r["time_lmo_s"] for r in iterations]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", choices=sorted(POOLS), default="ta20")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--samples-per-task", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ddp_speedup"))
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    setups = {1: max(1, cores), 2: max(1, cores // 2)}  # processes -> threads per process
    phases = {n: {"gradient": [], "lmo": []} for n in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for devices, threads in setups.items():
                grad, lmo = run_once(args.pool, devices, threads, args.iters, args.samples_per_task, Path(tmp) / f"r{repeat}_d{devices}")
                phases[devices]["gradient"].extend(grad)
                phases[devices]["lmo"].extend(lmo)
                print(f"repeat {repeat} devices {devices}: gradient {statistics.median(grad):.3f}s lmo {statistics.median(lmo):.4f}s", flush=True)

    def summary(values):
        return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "n": len(values)}

    result = {
        "command": "python benchmarks/ddp_speedup.py " + " ".join(sys.argv[1:]),
        "machine": describe(),
        "threads_per_process": setups,
        "phases": {str(n): {phase: summary(v) for phase, v in p.items()} for n, p in phases.items()},
    }
    speedups = {phase: statistics.median(phases[1][phase]) / statistics.median(phases[2][phase]) for phase in ("gradient", "lmo")}
    result["speedup_2_vs_1"] = speedups
    out = Path(args.out)  # writes out.json and out.md
    write_json(out.with_suffix(".json"), result)
    lines = [
        "# FW-Merging data-parallel speed-up, 2 processes vs 1 (CPU, gloo)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {one_line(result['machine'])}  ",
        f"Threads per process: {setups} (processes -> threads); fw_hard task-wise, {args.samples_per_task} samples/task,",
        f"{args.iters} iterations x {args.repeats} repeats; medians over all iterations (spread = min..max).",
        "",
        "| phase | 1 process (s) | 2 processes (s) | speed-up |",
        "|---|---|---|---|",
    ]
    for phase in ("gradient", "lmo"):
        one, two = result["phases"]["1"][phase], result["phases"]["2"][phase]
        lines.append(
            f"| {phase} | {one['median_s']:.4f} ({one['min_s']:.4f}..{one['max_s']:.4f}) | "
            f"{two['median_s']:.4f} ({two['min_s']:.4f}..{two['max_s']:.4f}) | {speedups[phase]:.2f}x |"
        )
    write_lines(out.with_suffix(".md"), lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
