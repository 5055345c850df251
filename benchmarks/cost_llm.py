"""Cost at LLM shape: peak memory and one merging iteration vs pool size n, ours vs FusionBench's TA and TIES.

Pool: ``_llm_shape_pool.py`` (SmolLM2-135M's shape, random bf16 weights, 2 safetensors shards per
model, FusionBench's ``CausalLMPool`` loading bf16). Every (method, n, repeat) runs in a fresh child
process (``harness/child.py``), so its peak RSS belongs to that run only:

* ``fw_hard``: ours (``config/method/fw_hard.yaml``), ``max_iters=1``, task granularity, S samples
  per objective task (3 tasks), computing in the pool's bf16. Just before ``run()``, the child reads
  the n fine-tunes' files (``read_bytes``: every byte, 1 MiB buffers) cold, then again warm: the warm
  read is what the LMO pass (``time_lmo_s`` of the trajectory, the files now warm) is compared with.
* ``task_arithmetic``, ``ties_merging``: FusionBench's own configs, ``scaling_factor=0.3``; their whole
  ``run()`` is their one iteration (load every model, merge).

Usage::

    .venv/bin/python benchmarks/cost_llm.py --sizes 4,8,16 --repeats 3
    .venv/bin/python benchmarks/cost_llm.py --report-only
    .venv/bin/python benchmarks/cost_llm.py --tiny --sizes 2,4 --repeats 1 --out /tmp/llm_tiny   # smoke run, seconds

Writes ``benchmarks/results/cost/llm_cpu.{json,md}``. The pool (~4.6 GB for n=16) goes to
``--work-dir``/llm-shape-pool.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # not the repository root: children import the frozen package copy

import _llm_shape_pool as shape_pool  # noqa: E402
from harness import child, cli, machine  # noqa: E402
from harness.report import GB, cell, median, ratio, table, verdict, write_json  # noqa: E402

METHODS = ("fw_hard", "task_arithmetic", "ties_merging")
TARGETS = {"fw_hard peak RSS n=16 / n=4": 1.15, "fw_hard LMO pass / raw read, n=16": 2.0}  # the read: warm, as the pass runs
DEFINITIONS = {
    "peak_rss_bytes": "ru_maxrss of the fresh child process from os.wait4 (what /usr/bin/time -v reports)",
    "run_s": "the whole algorithm.run(modelpool) call",
    "iteration_s": "ours: the trajectory's time_s (gradient, LMO pass, line search, reads); FusionBench's TA/TIES: run_s",
    "lmo_s": "ours: the trajectory's time_lmo_s, the streaming pass that scores every fine-tune",
    "read_cold_s": "read_bytes (1 MiB buffers) of the same n fine-tunes' files just before run(), their pages evicted first (posix_fadvise DONTNEED)",
    "read_s": "the same read right after (warm): the state of the page cache the LMO pass then finds",
}


def measure(spec: Dict[str, Any], sampler: child.RssSampler) -> Dict[str, Any]:
    import lightning as L
    import torch

    import fusion_bench_config
    import fusion_bench_fw
    from cost_lmo import evict, read_bytes
    from cost_methods import load_config, solver_records
    from fusion_bench.utils import instantiate

    torch.set_num_threads(spec["threads"])
    method, n, run_dir, root = spec["method"], spec["n"], Path(spec["run_dir"]), Path(spec["pool_root"])
    modelpool = shape_pool.make_modelpool(root, n)
    result: Dict[str, Any] = {}
    if method == "fw_hard":
        objective = list(shape_pool.OBJECTIVE_TASKS[: min(n, 3)])
        overrides = {"max_iters": 1, "objective_tasks": objective, "samples_per_task": spec["samples_per_task"], "batch_size": spec["samples_per_task"],
                     "granularity": "task", "line_search_evals": spec["line_search_evals"], "trajectory_path": str(run_dir / "fw_trajectory.json")}
        ours = Path(fusion_bench_fw.__file__).resolve().parents[1] / "config" / "method"
        algorithm = instantiate(load_config(ours / "fw_hard.yaml", overrides))
        fabric = L.Fabric(accelerator="cpu", devices=1)
        fabric.launch()
        algorithm.fabric = fabric
        files = shape_pool.weight_files(root, n)
        evict(files)  # cold: the files' pages dropped from the page cache first
        for key in ("read_cold_s", "read_s"):  # then warm, as the LMO pass finds them
            start = time.perf_counter()
            read_bytes(files)
            result[key] = time.perf_counter() - start
    else:
        theirs = Path(list(fusion_bench_config.__path__)[0]) / "method"
        algorithm = instantiate(load_config(theirs / f"{method}.yaml", {"scaling_factor": 0.3}))
    start = time.perf_counter()
    algorithm.run(modelpool)
    result["run_s"] = time.perf_counter() - start
    if method == "fw_hard":
        records = solver_records(run_dir, algorithm)
        result.update(iteration_s=records["iteration_s"], lmo_s=records["timers_s"]["lmo"], readers=records["readers"])
    else:
        result["iteration_s"] = result["run_s"]
    return result


def render(path: Path) -> List[Path]:
    payload = json.loads(path.read_text())
    rows = [r for r in payload["rows"] if r.get("status") == "ok"]
    sizes = sorted({r["n"] for r in payload["rows"]})

    def values(method, n, key, scale=1.0):
        return [r[key] / scale for r in rows if r["method"] == method and r["n"] == n and r.get(key) is not None]

    pool = payload["settings"]["pool"]
    lines = [f"# Cost at LLM shape ({pool['shape']}, {pool['dtype']}, {pool['shards']} shards, {pool['bytes_per_checkpoint'] / GB:.2f} GiB per checkpoint)", "",
             f"Machine: {machine.one_line(payload['machine'])}", "", "Commands and commits:", ""]
    lines += [f"- `{inv['command']}` at {inv['commit']}" for inv in payload["invocations"]]
    lines += ["", "Median [min–max] ×repeats. Peak RSS in GiB, times in s.", ""]
    lines += table(["method", "n", "peak RSS", "iteration", "run()", "LMO pass", "raw read, warm", "raw read, cold"],
                   [[m, n, cell(values(m, n, "peak_rss_bytes", GB), 2), cell(values(m, n, "iteration_s")), cell(values(m, n, "run_s")),
                     cell(values(m, n, "lmo_s"), 2), cell(values(m, n, "read_s"), 2), cell(values(m, n, "read_cold_s"), 2)]
                    for m in METHODS for n in sizes if values(m, n, "run_s")])
    failed = [r for r in payload["rows"] if r.get("status") != "ok"]
    if failed:
        lines += ["", "Runs that did not finish:", ""] + [f"- {r['method']} n={r['n']}: {r['status']} {r.get('error', '')[:200]}" for r in failed]
    small, large = sizes[0], sizes[-1]
    peak = lambda m, n: median(values(m, n, "peak_rss_bytes"))  # noqa: E731
    judged = {
        f"fw_hard peak RSS n={large} / n={small}": (ratio(peak("fw_hard", large), peak("fw_hard", small)), TARGETS["fw_hard peak RSS n=16 / n=4"]),
        f"fw_hard LMO pass / raw read, n={large}": (ratio(median(values("fw_hard", large, "lmo_s")), median(values("fw_hard", large, "read_s"))),
                                                      TARGETS["fw_hard LMO pass / raw read, n=16"]),
    }
    cold = ratio(median(values("fw_hard", large, "lmo_s")), median(values("fw_hard", large, "read_cold_s")))
    lines += ["", "| target | measured | limit | verdict |", "|---|---|---|---|"]
    lines += [f"| {name} | {'–' if v is None else f'{v:.2f}'} | {limit} | {verdict(v, limit)} |" for name, (v, limit) in judged.items()]
    lines += [f"| fw_hard LMO pass / cold raw read, n={large} (reference) | {'–' if cold is None else f'{cold:.2f}'} | – | – |"]
    for m in ("task_arithmetic", "ties_merging"):
        grown = ratio(peak(m, large), peak(m, small))
        lines += [f"| {m} peak RSS n={large} / n={small} (reference: grows with n) | {'–' if grown is None else f'{grown:.2f}'} | – | – |"]
    lines += ["", "Definitions:", ""] + [f"- `{k}`: {v}" for k, v in payload["definitions"].items()]
    out = path.with_suffix(".md")
    out.write_text("\n".join(lines) + "\n")
    return [out]


def main(argv=None) -> int:
    parser = cli.parser(__doc__)
    cli.add_common(parser, HERE / "results" / "cost" / "llm_cpu")
    cli.add_child(parser)
    parser.add_argument("--sizes", default="4,8,16")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples-per-task", type=int, default=8)
    parser.add_argument("--line-search-evals", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="smoke run: a toy Llama shape instead of SmolLM2-135M's")
    args = parser.parse_args(argv)
    if args.child_spec:
        child.child_main(json.loads(args.child_spec), measure)
        return 0
    out = Path(args.out).with_suffix(".json")
    if args.report_only:
        print("wrote", *render(out))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        sys.exit(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    shape = "tiny" if args.tiny else shape_pool.SHAPE_NAME
    pool = shape_pool.ensure_pool(Path(args.work_dir) / f"llm-shape-pool{'-tiny' if args.tiny else ''}", max(sizes), shape)
    scratch = Path(args.scratch_dir)
    frozen = {"path": None, "commit": machine.commit_of()} if args.no_freeze else child.freeze_package(scratch.parent / "fw_cost_frozen")
    env = child.child_env(args.threads, frozen["path"])
    settings = {"sizes": sizes, "methods": methods, "repeats": args.repeats, "samples_per_task": args.samples_per_task,
                "line_search_evals": args.line_search_evals, "threads": args.threads, "pool": pool, "targets": TARGETS}
    command = machine.command_line("HF_HUB_OFFLINE=1")
    payload = {"experiment": "cost_llm", "settings": settings, "machine": machine.describe(), "definitions": DEFINITIONS,
               "invocations": [{"command": command, "commit": frozen["commit"]}], "rows": []}
    started = time.perf_counter()
    for repeat in range(args.repeats):  # methods interleaved per n and repeat: background load hits all alike
        for n in sizes:
            for method in methods:
                tag = f"{method}_n{n}_r{repeat}"
                spec = {"method": method, "n": n, "repeat": repeat, "threads": args.threads, "samples_per_task": args.samples_per_task,
                        "line_search_evals": args.line_search_evals, "pool_root": pool["root"], "run_dir": str(scratch / "llm" / tag)}
                result = child.run_child(Path(__file__).resolve(), spec, env, scratch / "logs" / f"llm_{tag}.log", mem_guard_gb=args.mem_guard_gb,
                                         min_available_gb=args.min_available_gb, timeout_s=args.child_timeout)
                keep = ("status", "error", "peak_rss_bytes", "iteration_s", "run_s", "lmo_s", "read_s", "read_cold_s", "readers", "traceback_tail")
                payload["rows"].append({"method": method, "n": n, "repeat": repeat, "commit": frozen["commit"], "command": command,
                                        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k in keep}})
                write_json(out, payload)
                print(f"[{time.perf_counter() - started:6.0f}s] {tag:26s} {result['status']:8s} peak {result['peak_rss_bytes'] / GB:5.2f} GiB  "
                      f"iteration {result.get('iteration_s') or 0:6.1f} s  lmo {result.get('lmo_s') or 0:5.2f} s  read {result.get('read_s') or 0:5.2f} s"
                      + (f"  {result.get('error', '')[:300]}" if result["status"] != "ok" else ""), flush=True)
    print("wrote", *render(out), f"in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
