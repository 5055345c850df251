"""Cost on the real path: peak memory and time of one merging iteration of each method vs pool size n.

Pool: ``modelpool=clip-vit-base-patch32_TA20``, the config users run, on the hub stand-in
(``_standin_pool.py``: FusionBench's config composed by Hydra, resolved offline through a local
Hugging Face cache under the real repo ids; CLIP ViT-B/32 shapes, random fine-tune-like weights, 20
vision towers of ~350 MB in fp32); pool n = the config's first n fine-tunes (Hydra deletion overrides
for the others). ``--standin-dtype bf16 --standin-shards 2`` measures a bf16 pool in 2 shards per
model. Every (method, n, repeat) runs in a fresh child process (``harness/child.py``), so its peak
RSS belongs to that run only. One iteration each, the same objective samples for all methods:

* ``fw_hard``, ``fw_soft``: ours (``config/method/*.yaml``), ``max_iters=1``; their timings are the
  ones the solver records in ``fw_trajectory.json`` (``time_s``, ``time_gradient_s``, ``time_lmo_s``), and
  which reader served each checkpoint (``summary.readers``: all n+1 on the streaming one is the target)
* ``intree_fw_soft``, ``intree_fw_hard``: FusionBench's FW-Merging (``method/fw_merging/*.yaml``),
  ``init_weight=base``; on CPU its ``.cuda()`` calls are made no-ops; phases timed by ``_intree_timing.py``
* ``df_merge``: ours (``config/method/df_merge.yaml``), one BO step (``init_points=1 n_iter=0``): a streamed
  Fisher merge of every model on S samples per objective task, then its validation accuracy
* ``adamerging``: FusionBench's layer-wise AdaMerging, ``max_steps=1``, over max(S, n) test images
  split over the n tasks (S = samples of one FW gradient); run last, ascending n, and skipped after a
  run that peaked above ``--ada-skip-gb``

Methods are interleaved per n and repeat, so background load hits all of them alike.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cost_methods.py --sizes 4,20 --methods fw_hard,fw_soft,intree_fw_soft
    ... --standin-dtype bf16 --standin-shards 2   # the bf16 pool, 2 shards per model
    ... --standin-dtype bf16 --standin-shards 2 --compute-dtype bfloat16   # ours computing in bf16 too
    ... --quick --tiny        # smoke run: tiny towers, n in {2, 4}, one repeat each (results under --work-dir)
    ... --accelerator cuda    # every method on one GPU (the in-tree methods unpatched)
    ... --append              # more rows (repeats) into the existing JSON, same machine
    ... --report-only         # re-render the md/png from the JSON

Writes ``benchmarks/results/cost/methods_<accelerator>_<variant>.{json,md,png}`` (variant: ``fp32``,
``bf16_2shards``, ...) and, with the runs of other variants there, the summary ``standin_<accelerator>.md``
(``cost_report.py``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # not the repository root: children import the frozen package copy

import _standin_pool as standin  # noqa: E402
from harness import child, cli, machine  # noqa: E402
from harness.report import GB, write_json  # noqa: E402

OURS = ("fw_hard", "fw_soft")
INTREE = ("intree_fw_soft", "intree_fw_hard")
DEFINITIONS = {
    "iteration_s": "ours: the sum of the trajectory's time_s (the solver's FW step: gradient, LMO pass, descent probe, selected-checkpoint "
    "reads, line search / inner loop); in-tree FW: from its first gradient call to the end of run(); AdaMerging: from the end of its "
    "zero-shot heads to the end of run() (the adaptation step and the merge)",
    "run_s": "the whole algorithm.run(modelpool) call: loading, validation, zero-shot heads, the iteration",
    "run_cpu_s": "CPU time (user+sys, all threads) of the child during run()",
    "peak_rss_bytes": "ru_maxrss of the fresh child process from os.wait4 (what /usr/bin/time -v reports)",
    "peak_rss_setup_bytes / peak_rss_iteration_bytes": "the child's RSS sampled every 0.1 s: peak before / during the iteration",
    "timers_s": "ours: gradient = sum of time_gradient_s, lmo = sum of time_lmo_s, as the solver records them, and FW-soft's "
    "time_phases_s (selection_probe, assemble, fw_step, coefficients); "
    "FusionBench's methods: their phases, timed by wrapping them (benchmarks/_intree_timing.py)",
    "stages_s": "ours: the stages of run() in FusionBench's profiler",
    "cuda_peak_bytes": "torch.cuda.max_memory_allocated() of the child",
    "readers": "ours: summary.readers of fw_trajectory.json, checkpoints served by the streaming safetensors reader / the pool's load_model",
    "pool_models": "fine-tuned models in the instantiated pool (the config's first n)",
    "compute_dtype": "ours: method.compute_dtype; null = the dtype of the pretrained model as the pool loads it (FusionBench's CLIPVisionModelPool: "
    "transformers' from_pretrained default, float32, also for bf16 checkpoints); FusionBench's methods compute in what the pool loads",
    "in-tree methods": "FusionBench's own configs with init_weight=base, explicit tasks, dataset_size = samples per task; on CPU "
    "torch.nn.Module.cuda and torch.Tensor.cuda return self in their child process, nothing else patched",
}


# ------------------------------------------------------------------------------------------------
# child side: one method, one pool size
# ------------------------------------------------------------------------------------------------
def load_config(path: Path, overrides: Dict[str, Any]):
    from omegaconf import OmegaConf

    config = OmegaConf.load(str(path))
    for key, value in overrides.items():
        OmegaConf.update(config, key, value, force_add=True)
    return config


def build_algorithm(spec: Dict[str, Any], objective: List[str], run_dir: Path):
    """The algorithm object of ``spec['method']`` with this benchmark's overrides."""
    import fusion_bench_config
    import fusion_bench_fw
    from fusion_bench.utils import instantiate

    method, k = spec["method"], spec["samples_per_task"]
    theirs = Path(list(fusion_bench_config.__path__)[0]) / "method"
    ours = Path(fusion_bench_fw.__file__).resolve().parents[1] / "config" / "method"  # the frozen copy's configs
    if method in OURS:
        overrides: Dict[str, Any] = {"max_iters": 1, "objective_tasks": objective, "samples_per_task": k, "batch_size": spec.get("batch_size") or k, "trajectory_path": str(run_dir / "fw_trajectory.json")}
        if spec.get("compute_dtype"):
            overrides["compute_dtype"] = spec["compute_dtype"]
        if method == "fw_hard":
            overrides.update(granularity="task", line_search_evals=spec["line_search_evals"])
        else:
            overrides.update(inner_steps=spec["inner_steps"])
            overrides.update({key: spec[f"soft_{key}"] for key in ("inner_init", "line_search_evals", "fw_step_search") if spec.get(f"soft_{key}") is not None})
        return instantiate(load_config(ours / f"{method}.yaml", overrides))
    if method == "df_merge":  # one BO step: one streamed Fisher merge of every model, then its validation score
        overrides = {"init_points": 1, "n_iter": 0, "objective_tasks": objective, "samples_per_task": k, "fisher_samples_per_task": k, "batch_size": k,
                     "trajectory_path": str(run_dir / "df_merge_trajectory.json")}
        return instantiate(load_config(ours / "df_merge.yaml", overrides))
    if method in INTREE:
        overrides = {"max_iters": 1, "dataset_size": k, "tasks": objective}
        if method == "intree_fw_soft":
            overrides.update(init_weight="base", ada_iters=spec["inner_steps"])
        elif spec.get("variant") == "init_base":
            overrides.update(init_weight="base")
        return instantiate(load_config(theirs / "fw_merging" / f"{method[len('intree_'):]}.yaml", overrides))
    from fusion_bench.compat.method import AlgorithmFactory

    # batch 64 >= any per-task test set here: one batch = the whole (tiny) set
    overrides = {"max_steps": 1, "batch_size": 64, "num_workers": 0, "save_merging_weights": False, "fast_dev_run": False}
    return AlgorithmFactory.create_algorithm(load_config(theirs / "adamerging" / "clip.yaml", overrides))


def solver_records(run_dir: Path, algorithm) -> Dict[str, Any]:
    """Our timings as the solver wrote them (trajectory) and the profiler's stages of run()."""
    trajectory = json.loads(max(run_dir.glob("fw_trajectory*.json"), key=lambda p: p.stat().st_mtime).read_text())
    records, summary = trajectory["iterations"], trajectory.get("summary", {})
    timers = {"gradient": sum(r.get("time_gradient_s", 0.0) for r in records), "lmo": sum(r.get("time_lmo_s", 0.0) for r in records)}
    for record in records:  # FW-soft: the rest of the iteration, phase by phase
        for phase, seconds in record.get("time_phases_s", {}).items():
            timers[phase] = timers.get(phase, 0.0) + seconds
    return {
        "iteration_s": sum(r["time_s"] for r in records),
        "timers_s": timers,
        "stages_s": {name: float(sum(values)) for name, values in algorithm.profiler.recorded_durations.items()},
        "passes": {"forward": summary.get("forward_passes"), "backward": summary.get("backward_passes")},
        "vertices": len(trajectory.get("config", {}).get("vertices", [])) or None,
        "readers": summary.get("readers"),
    }


def measure(spec: Dict[str, Any], sampler: child.RssSampler) -> Dict[str, Any]:
    import lightning as L
    import torch
    from lightning.fabric.loggers import TensorBoardLogger

    from _intree_timing import instrument, iteration_start
    from fusion_bench.utils import cache_utils

    torch.set_num_threads(spec["threads"])
    method, n, run_dir = spec["method"], spec["n"], Path(spec["run_dir"])
    if os.environ.get("HF_HOME") != spec["standin_dir"]:
        raise RuntimeError(f"HF_HOME is {os.environ.get('HF_HOME')!r}, not the stand-in {spec['standin_dir']}")
    cuda = spec["accelerator"] == "cuda"
    tasks = spec["tasks"][:n]
    objective = tasks[: standin.OBJECTIVE_TASKS]
    cache_utils.set_default_cache_dir(run_dir / "cache")  # zero-shot heads: per run, never shared
    if method == "adamerging":  # max(S, n) test images over the n tasks, S = one FW gradient's samples
        test_rows = dict(zip(tasks, standin.ada_split(n, max(spec["samples_per_task"] * len(objective), n))))
    else:  # in-tree fw_soft's inner loop reads the objective tasks' test sets: k images each
        test_rows = {task: spec["samples_per_task"] for task in objective}
    modelpool, _ = standin.make_modelpool(n, test_rows)
    if list(modelpool.model_names) != tasks:
        raise RuntimeError(f"the pool holds {modelpool.model_names}, not the first {n} of the parent's {spec['tasks']}")
    if method in INTREE and not cuda:
        from fusion_bench_fw.intree_on_cpu import make_cuda_calls_noops

        make_cuda_calls_noops()  # FusionBench's FW-Merging calls .cuda() unconditionally
    algorithm = build_algorithm(spec, objective, run_dir)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    timers = None if method in OURS + ("df_merge",) else instrument(method, algorithm, modelpool, sync)
    fabric = L.Fabric(accelerator=spec["accelerator"], devices=1, loggers=[TensorBoardLogger(str(run_dir), name="logs")])
    fabric.launch()
    algorithm.fabric = fabric

    # what the process holds before merging starts (the libraries, the pool's config): the same in
    # every dtype, so it is reported apart from the peak
    floor = sampler.rss()
    t_start, clock_start, cpu_start = sampler.now(), time.perf_counter(), time.process_time()
    algorithm.run(modelpool)
    sync()
    t_end, clock_end = sampler.now(), time.perf_counter()
    result: Dict[str, Any] = {"rss_floor_bytes": floor, "run_s": clock_end - clock_start, "run_cpu_s": time.process_time() - cpu_start, "pool_models": len(modelpool.model_names)}
    if cuda:
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    if method in OURS:
        result.update(solver_records(run_dir, algorithm))
        begin = t_end - result["iteration_s"]
    elif method == "df_merge":
        record = json.loads((run_dir / "df_merge_trajectory.json").read_text())
        result.update(iteration_s=sum(step["time_s"] for step in record["iterations"]), readers=record["summary"]["readers"],
                      stages_s={name: float(sum(values)) for name, values in algorithm.profiler.recorded_durations.items()})
        begin = t_end - result["iteration_s"]
    else:
        first = iteration_start(method, timers)
        result["iteration_s"] = clock_end - first if first is not None else None
        result["timers_s"] = timers.total
        begin = t_start + (first - clock_start) if first is not None else t_end
    result["peak_rss_setup_bytes"] = sampler.peak_between(0.0, begin)
    result["peak_rss_iteration_bytes"] = sampler.peak_between(begin, t_end)
    return result


# ------------------------------------------------------------------------------------------------
# parent side
# ------------------------------------------------------------------------------------------------
def plan(settings: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The (method, n, repeat) cells in run order: FW methods interleaved, in-tree fw_hard, AdaMerging last."""
    sizes, methods = settings["sizes"], settings["methods"]
    cells = []
    for repeat in range(settings["repeats"]):
        for n in sizes:
            for method in (m for m in ("fw_hard", "fw_soft", "intree_fw_soft") if m in methods):
                if repeat == 0 or (n in settings["repeat_sizes"] and method in settings["repeat_methods"]):
                    cells.append({"method": method, "n": n, "repeat": repeat})
    if "df_merge" in methods:
        cells += [{"method": "df_merge", "n": n, "repeat": 0} for n in sizes]
    if "intree_fw_hard" in methods:  # tried once at the smallest n, shipped config and init_weight=base
        cells += [{"method": "intree_fw_hard", "n": sizes[0], "repeat": 0, "variant": v} for v in ("shipped_config", "init_base")]
    if "adamerging" in methods:
        cells += [{"method": "adamerging", "n": n, "repeat": r} for n in sizes for r in range(settings["ada_repeats"] if n in settings["repeat_sizes"] else 1)]
    return cells


def compact(result: Dict[str, Any]) -> Dict[str, Any]:
    """The row as stored: every number the report uses, no bulk."""
    keep = ("status", "error", "peak_rss_bytes", "rss_floor_bytes", "peak_rss_setup_bytes", "peak_rss_iteration_bytes", "cuda_peak_bytes", "iteration_s", "run_s", "run_cpu_s",
            "wall_s", "cpu_s", "timers_s", "stages_s", "passes", "vertices", "readers", "pool_models", "loadavg", "traceback_tail", "log_tail")
    row = {key: result[key] for key in keep if result.get(key) is not None}
    for key in ("timers_s", "stages_s"):
        if key in row:
            row[key] = {name: round(v, 4) for name, v in row[key].items()}
    for key in ("iteration_s", "run_s", "run_cpu_s", "wall_s", "cpu_s"):
        if key in row:
            row[key] = round(row[key], 4)
    return row


def appendable(earlier: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    """``earlier`` ready to take this invocation's rows: same machine and measurement settings, sizes united."""
    same = ("samples_per_task", "batch_size", "objective_tasks", "inner_steps", "line_search_evals", "soft_inner_init", "soft_line_search_evals", "soft_fw_step_search", "threads", "accelerator", "bytes_per_checkpoint", "compute_dtype")
    differs = [k for k in same if earlier["settings"].get(k) != new["settings"][k]]
    differs += [k for k in ("cpu_model", "cpu_cores", "gpu") if earlier["machine"].get(k) != new["machine"].get(k)]
    differs += ["pool variant"] if earlier["settings"].get("pool", {}).get("variant") != new["settings"]["pool"]["variant"] else []
    if differs:
        sys.exit(f"--append: {', '.join(differs)} differ from the file's; write a new file with --out")
    earlier["settings"]["targets"] = {**new["settings"]["targets"], **earlier["settings"].get("targets", {})}  # targets added since: judged too
    earlier["settings"]["sizes"] = sorted(set(earlier["settings"]["sizes"]) | set(new["settings"]["sizes"]))
    return earlier


def main(argv=None) -> int:
    parser = cli.parser(__doc__)
    cli.add_common(parser, HERE / "results" / "cost" / "methods_cpu")
    cli.add_child(parser)
    parser.add_argument("--sizes", default="4,8,12,16,20")
    parser.add_argument("--methods", default="fw_hard,fw_soft,intree_fw_soft,intree_fw_hard,adamerging")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats of --repeat-methods at --repeat-sizes (other cells: 1 run)")
    parser.add_argument("--repeat-sizes", default="4,20")
    parser.add_argument("--repeat-methods", default="fw_soft,intree_fw_soft", help="the time target's pair")
    parser.add_argument("--ada-repeats", type=int, default=1, help="AdaMerging runs at --repeat-sizes")
    parser.add_argument("--ada-skip-gb", type=float, default=18.0, help="skip AdaMerging's larger n after a run that peaked above this")
    parser.add_argument("--samples-per-task", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="our methods' batch_size, samples per forward pass (default: --samples-per-task "
                        "x the objective tasks, so that one pass evaluates the whole objective)")
    parser.add_argument("--inner-steps", type=int, default=3, help="fw_soft inner_steps = in-tree fw_soft ada_iters")
    parser.add_argument("--line-search-evals", type=int, default=4, help="fw_hard line_search_evals")
    parser.add_argument("--soft-inner-init", choices=("uniform", "fw_step", "current"), default=None, help="fw_soft inner_init (default: the config's)")
    parser.add_argument("--soft-fw-step-search", choices=("golden", "quadratic"), default=None, help="fw_soft fw_step_search (default: the config's)")
    parser.add_argument("--soft-line-search-evals", type=int, default=None, help="fw_soft line_search_evals, its FW step (default: the config's)")
    parser.add_argument("--accelerator", choices=("cpu", "cuda"), default="cpu", help="cuda: every method on one GPU (Fabric accelerator=cuda)")
    parser.add_argument("--compute-dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="our methods' method.compute_dtype (default: the config's null = the dtype FusionBench's pool loads the "
                             "pretrained model in, float32 for these checkpoints whatever their stored dtype)")
    parser.add_argument("--quick", action="store_true", help="smoke run: n in {2, 4}, one repeat (results under --work-dir)")
    parser.add_argument("--append", action="store_true", help="add rows to the existing JSON (new repeat numbers), same machine")
    standin.add_options(parser)
    args = parser.parse_args(argv)
    if args.child_spec:
        child.child_main(json.loads(args.child_spec), measure)
        return 0
    variant, standin_dir = standin.from_args(args)
    if args.out == parser.get_default("out"):  # methods_<accelerator>_<variant>[_quick]; smoke runs outside results/
        root = Path(args.work_dir) / "results" if args.quick or args.tiny else Path(args.out).parent
        compute = f"_compute_{args.compute_dtype}" if args.compute_dtype else ""
        args.out = str(root / f"methods_{args.accelerator}_{variant.tag}{compute}{'_quick' if args.quick else ''}")
    out = Path(args.out)
    from cost_report import TARGETS, render
    from cost_summary import render_summaries

    if args.report_only:
        print("wrote", ", ".join(map(str, render(out.with_suffix(".json")) + render_summaries(out.parent))))
        return 0

    scratch = Path(args.scratch_dir)
    sizes = [2, 4] if args.quick else [int(s) for s in args.sizes.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    needed = max([args.samples_per_task] + ([max(standin.ada_split(n, max(args.samples_per_task * min(n, standin.OBJECTIVE_TASKS), n))) for n in sizes]
                                            if "adamerging" in methods else []))
    if needed > variant.rows:
        sys.exit(f"the methods read up to {needed} samples of a task's split; the stand-in has --standin-rows {variant.rows}")
    summary = standin.ensure(standin_dir, variant, child.child_env(args.threads))
    pool = standin.settings(standin_dir, variant, summary)
    if max(sizes) > len(pool["tasks"]):
        sys.exit(f"--sizes: the pool has {len(pool['tasks'])} fine-tunes")
    settings = {
        "sizes": sizes, "methods": methods, "repeats": 1 if args.quick else args.repeats, "quick": args.quick,
        "repeat_sizes": sizes if args.quick else [int(s) for s in args.repeat_sizes.split(",")], "repeat_methods": [m for m in args.repeat_methods.split(",") if m],
        "ada_repeats": args.ada_repeats, "samples_per_task": args.samples_per_task, "batch_size": args.batch_size or args.samples_per_task * standin.OBJECTIVE_TASKS, "objective_tasks": standin.OBJECTIVE_TASKS,
        "inner_steps": args.inner_steps, "line_search_evals": args.line_search_evals, "soft_inner_init": args.soft_inner_init,
        "soft_line_search_evals": args.soft_line_search_evals, "soft_fw_step_search": args.soft_fw_step_search or (load_config(HERE.parent / "config/method/fw_soft.yaml", {}).fw_step_search if "fw_soft" in methods else None), "threads": args.threads, "accelerator": args.accelerator, "compute_dtype": args.compute_dtype, "bytes_per_checkpoint": pool["bytes_per_checkpoint"], "ada_skip_gb": args.ada_skip_gb, "mem_guard_gb": args.mem_guard_gb, "pool": pool,
        "targets": TARGETS,
    }
    payload = {"experiment": "cost_methods", "settings": settings, "machine": machine.describe(), "definitions": DEFINITIONS, "invocations": [], "rows": []}
    if args.append:
        payload = appendable(json.loads(out.with_suffix(".json").read_text()), payload)
    frozen = {"path": None, "commit": machine.commit_of()} if args.no_freeze else child.freeze_package(scratch.parent / "fw_cost_frozen")
    env = standin.child_env(child.child_env(args.threads, frozen["path"]), standin_dir)
    command = machine.command_line("HF_HUB_OFFLINE=1")
    cells = plan(settings)
    invocation = {"command": command, "planned_rows": len(cells), "finished": False}
    payload["invocations"].append(invocation)
    started = time.perf_counter()
    skip = None  # AdaMerging: why its larger n are skipped
    for cell in cells:
        if args.append:
            cell["repeat"] = 1 + max([r["repeat"] for r in payload["rows"] if (r["method"], r["n"]) == (cell["method"], cell["n"])], default=-1)
        tag = f"{cell['method']}_n{cell['n']}_r{cell['repeat']}" + (f"_{cell['variant']}" if "variant" in cell else "")
        base = {**cell, "commit": frozen["commit"], "command": command}
        if cell["method"] == "adamerging" and skip:
            payload["rows"].append({**base, "status": "skipped", "error": skip})
            continue
        spec = {**cell, **{k: settings[k] for k in ("samples_per_task", "batch_size", "inner_steps", "line_search_evals", "soft_inner_init", "soft_line_search_evals", "soft_fw_step_search", "threads", "accelerator", "compute_dtype")},
                "standin_dir": str(standin_dir), "tasks": pool["tasks"], "run_dir": str(scratch / tag)}
        result = child.run_child(Path(__file__).resolve(), spec, env, scratch / "logs" / f"{tag}.log", mem_guard_gb=args.mem_guard_gb, min_available_gb=args.min_available_gb, timeout_s=args.child_timeout)
        payload["rows"].append({**base, **compact(result)})
        write_json(out.with_suffix(".json"), payload)
        readers = result.get("readers")
        print(f"[{time.perf_counter() - started:6.0f}s] {tag:34s} {result['status']:8s} peak {result['peak_rss_bytes'] / GB:5.2f} GB  iteration {result.get('iteration_s') or 0:6.1f} s"
              + (f"  readers {readers}" if readers else "") + (f"  {result.get('error', '')[:200]}" if result["status"] != "ok" else ""), flush=True)
        if cell["method"] == "adamerging" and (result["status"] != "ok" or result["peak_rss_bytes"] > args.ada_skip_gb * GB):
            skip = f"after n={cell['n']}: {result['status']}, peak {result['peak_rss_bytes'] / GB:.1f} GB (skip threshold {args.ada_skip_gb} GB)"
    invocation["finished"] = True
    write_json(out.with_suffix(".json"), payload)
    print("wrote", ", ".join(map(str, render(out.with_suffix(".json")) + render_summaries(out.parent))), f"in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
