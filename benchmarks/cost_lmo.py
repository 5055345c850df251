"""One LMO pass over the first n checkpoints of the real pool config vs just reading the same files, cold and warm.

The pass is ``score_vertices`` over ``PoolCheckpoints``, called as the solver calls it (inner-product
score, no vertex norms), with random gradient-like rows: 1 row (fw_hard), 5 rows (total + one per
objective task) and fw_soft's pass (the task rows, the total row derived from them). The baseline
streams every byte of the same files two ways: ``readinto`` with 1 MiB buffers and
POSIX_FADV_SEQUENTIAL, and mmap (as safetensors does) + a float32 sum. Cold: the files' pages are
evicted first (posix_fadvise DONTNEED; the resident fraction is measured with fincore); warm: the
files are read just before. Operations are interleaved within each repeat. Then, with one
checkpoint in memory, the per-vertex arithmetic alone.

Pool: ``modelpool=clip-vit-base-patch32_TA20`` on the hub stand-in (``_standin_pool.py``), its first
n fine-tunes; the files are the ones the solver's resolution finds in the Hugging Face cache (every
shard of a sharded checkpoint). Theta, the gradient rows and the streamed checkpoints are in the
solver's dtype: with ``compute_dtype: null`` (the default) the dtype the pool loads the pretrained
model in (FusionBench's CLIPVisionModelPool: float32, also for bf16 checkpoints), else
``--compute-dtype``.

Usage::

    .venv/bin/python benchmarks/cost_lmo.py --sizes 4,20 --repeats 3
    .venv/bin/python benchmarks/cost_lmo.py --standin-dtype bf16 --standin-shards 2 --sizes 4,20 --repeats 3
    .venv/bin/python benchmarks/cost_lmo.py --quick --tiny      # smoke run: tiny towers, n in {2, 4}, 1 repeat (results under --work-dir)
    .venv/bin/python benchmarks/cost_lmo.py --report-only

Writes ``benchmarks/results/cost/lmo_<variant>.{json,md,png}`` (variant: ``fp32``, ``bf16_2shards``, ...).
"""

from __future__ import annotations

import mmap
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _standin_pool as standin  # noqa: E402
from harness import child, cli, machine  # noqa: E402
from harness.report import write_json  # noqa: E402

DEFINITIONS = {
    "seconds": "wall time of one operation over the first n fine-tuned checkpoints",
    "read_bytes": "readinto with a 1 MiB buffer, POSIX_FADV_SEQUENTIAL",
    "read_mmap": "mmap of each file + float32 sum of all its 4-byte words, whatever the dtype (every byte through the CPU once)",
    "lmo_1row": "score_vertices(PoolCheckpoints, theta, {total}, with_norms=False): fw_hard's pass",
    "lmo_5rows": "score_vertices with the total row and one row per objective task",
    "lmo_soft": "fw_soft's pass: the task rows through score_vertices, the total row derived (with_combined_row)",
    "cold": "posix_fadvise(POSIX_FADV_DONTNEED) on each file just before; resident_before from fincore",
    "warm": "the files read once just before",
    "per_vertex": "seconds per checkpoint with the checkpoint already in memory, median of 2",
}


def evict(files: List[Path]) -> None:
    for file in files:
        fd = os.open(str(file), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(files: List[Path]) -> Optional[float]:
    """Fraction of the files' pages in the page cache (util-linux fincore), or None without it."""
    if not shutil.which("fincore"):
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", *map(str, files)], capture_output=True, text=True, timeout=60).stdout
    pairs = [tuple(map(int, line.split()[:2])) for line in out.strip().splitlines()]
    size = sum(s for _, s in pairs)
    return sum(r for r, _ in pairs) / size if size else None


def read_bytes(files: List[Path]) -> None:
    view = memoryview(bytearray(1 << 20))
    for file in files:
        fd = os.open(str(file), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        with os.fdopen(fd, "rb", buffering=0) as handle:
            while handle.readinto(view):
                pass


def read_mmap(files: List[Path]) -> None:
    import numpy as np

    for file in files:
        with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            words = np.frombuffer(mapped, dtype=np.float32, count=len(mapped) // 4)
            with np.errstate(all="ignore"):
                float(words.sum())
            del words


def stored_dtype(weight_map, name: str):
    """The dtype ``name`` is stored in (its safetensors header)."""
    from fusion_bench_fw.safetensors_slices import read_header

    return read_header(weight_map[name])[name].dtype


def loaded_dtype(modelpool):
    """The dtype of the pretrained model as the pool loads it: the solver's with compute_dtype null."""
    model = modelpool.load_pretrained_model()
    dtype = next(model.parameters()).dtype
    del model
    return dtype


def short(dtype) -> str:
    return str(dtype).replace("torch.", "")


def measure(args, sizes: List[int], read_sizes: List[int], provenance: Dict[str, str]) -> Dict[str, List[Dict[str, Any]]]:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from fusion_bench_fw.checkpoint_files import STREAMING, reader_counts, resolve_pool
    from fusion_bench_fw.checkpoints import PoolCheckpoints
    from fusion_bench_fw.frank_wolfe import score_vertices
    from fusion_bench_fw.frank_wolfe.lmo import with_combined_row
    from fusion_bench_fw.frank_wolfe.params import block_dots

    torch.set_num_threads(args.threads)
    if not args.system_malloc:  # as FWHard / FWSoft do by default (method.keep_freed_memory)
        from fusion_bench_fw.cpu_allocator import keep_freed_memory

        keep_freed_memory()
    modelpool, _ = standin.make_modelpool(max(sizes + read_sizes), {})  # no test set is read: only checkpoints
    tasks = list(modelpool.model_names)
    resolved = resolve_pool(modelpool, ["_pretrained_", *tasks])  # as the solver resolves them: the Hugging Face cache
    if reader_counts(resolved) != {STREAMING: len(tasks) + 1, "pool_loader": 0}:
        raise RuntimeError(f"not every checkpoint is served by the streaming reader: {reader_counts(resolved)}")

    def files_of(n: int) -> List[Path]:
        return [file for task in tasks[:n] for file in sorted(set(resolved[task].weight_map.values()))]

    first_dir = next(iter(resolved[tasks[0]].weight_map.values())).parent  # the snapshot folder, config.json beside the weights
    with torch.device("meta"):
        names = [name for name, _ in CLIPVisionModel(CLIPVisionConfig.from_pretrained(str(first_dir))).named_parameters()]
    dtype = getattr(torch, args.compute_dtype) if args.compute_dtype else loaded_dtype(modelpool)
    stored = stored_dtype(resolved[tasks[0]].weight_map, names[0])
    print(f"[lmo] checkpoints stored as {short(stored)}, computing in {short(dtype)}", flush=True)
    theta = {b: t.clone() for b, t in PoolCheckpoints(modelpool, ["_pretrained_"], names, dtype=dtype, files=resolved).load("_pretrained_").items()}
    generator = torch.Generator().manual_seed(0)

    def random_row():
        return {b: (torch.randn(theta[b].shape, generator=generator) * 1e-3).to(dtype) for b in names}

    total = {"total": random_row()}
    task_rows = {f"task:{t}": random_row() for t in range(standin.OBJECTIVE_TASKS)}
    all_rows = {**total, **task_rows}

    def soft_pass(source):
        scores = score_vertices(source, theta, task_rows, names, with_norms=False)
        return with_combined_row(scores, "total", {key: 1.0 / len(task_rows) for key in task_rows})

    rows: List[Dict[str, Any]] = []

    def timed(n: int, cache: str, op: str, run: Callable[[], Any], files: List[Path], repeat: int) -> None:
        if cache == "cold":
            evict(files)
        else:
            read_bytes(files)
        resident = resident_fraction(files)
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        seconds = time.perf_counter() - start
        rows.append({"n": n, "cache": cache, "op": op, "repeat": repeat, "seconds": round(seconds, 4), "cpu_seconds": round(time.process_time() - start_cpu, 4),
                     "resident_before": None if resident is None else round(resident, 4), **provenance})
        print(f"[lmo] repeat {repeat} n={n} {cache:4s} {op:10s} {seconds:7.2f} s (resident before: {resident})", flush=True)

    for repeat in range(args.repeats):
        for n in read_sizes + sizes:
            files = files_of(n)
            source = PoolCheckpoints(modelpool, tasks[:n], names, dtype=dtype, files=resolved)
            for cache in ("cold", "warm"):
                timed(n, cache, "read_bytes", lambda: read_bytes(files), files, repeat)
                timed(n, cache, "read_mmap", lambda: read_mmap(files), files, repeat)
                if n not in sizes:
                    continue
                timed(n, cache, "lmo_1row", lambda: score_vertices(source, theta, total, names, with_norms=False), files, repeat)
                if repeat < args.soft_repeats:
                    timed(n, cache, "lmo_5rows", lambda: score_vertices(source, theta, all_rows, names, with_norms=False), files, repeat)
                    timed(n, cache, "lmo_soft", lambda: soft_pass(source), files, repeat)

    # the arithmetic alone, one checkpoint in memory (its pages touched): is the pass compute-bound?
    first = tasks[0]
    vertex = {b: t.clone() for b, t in PoolCheckpoints(modelpool, [first], names, dtype=dtype, files=resolved).load(first).items()}

    class InMemory:
        names = ["in_memory"]

        def stream(self, indices=None):
            yield 0, vertex

    stacked = {b: torch.stack([row[b].reshape(-1) for row in all_rows.values()]) for b in names}
    computations = {
        "score_vertices 1 row, with_norms=False": lambda: score_vertices(InMemory(), theta, total, names, with_norms=False),
        "score_vertices 5 rows, with_norms=False": lambda: score_vertices(InMemory(), theta, all_rows, names, with_norms=False),
        "  of which the per-pass terms <g,theta>, |g|^2 per row + |theta|^2": lambda: (
            [block_dots(g, theta, names) for g in all_rows.values()], [block_dots(g, g, names) for g in all_rows.values()], block_dots(theta, theta, names)),
        f"{short(dtype)} dot <g, s> only, 1 row": lambda: [torch.dot(total["total"][b].reshape(-1), vertex[b].reshape(-1)) for b in names],
        f"{short(dtype)} one matvec per block, 5 rows": lambda: [stacked[b] @ vertex[b].reshape(-1) for b in names],
        "float64 copy of the vertex only": lambda: [vertex[b].to(torch.float64) for b in names],
    }
    per_vertex = []
    for label, run in computations.items():
        values = []
        for _ in range(2):
            start = time.perf_counter()
            run()
            values.append(time.perf_counter() - start)
        per_vertex.append({"computation": label, "seconds": round(statistics.median(values), 4), **provenance})
        print(f"[lmo] in memory: {label:70s} {per_vertex[-1]['seconds']:6.2f} s", flush=True)
    return {"rows": rows, "per_vertex": per_vertex, "dtypes": {"stored": short(stored), "compute": short(dtype)}}


def main(argv=None) -> int:
    parser = cli.parser(__doc__)
    cli.add_common(parser, HERE / "results" / "cost" / "lmo")
    parser.add_argument("--sizes", default="4,20", help="n for the LMO passes (and their read baseline)")
    parser.add_argument("--read-sizes", default="", help="n where only the raw reads are measured")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--soft-repeats", type=int, default=3, help="repeats of the multi-row passes (lmo_5rows, lmo_soft)")
    parser.add_argument("--quick", action="store_true", help="smoke run: n in {2, 4}, one repeat (results under --work-dir)")
    parser.add_argument("--compute-dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="the solver's method.compute_dtype (default null: the dtype the pool loads the pretrained model in)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc defaults (the methods' keep_freed_memory: false); default: keep freed memory, as the methods do")
    standin.add_options(parser)
    args = parser.parse_args(argv)
    variant, standin_dir = standin.from_args(args)
    if args.out == parser.get_default("out"):  # lmo_<variant>[_quick]; smoke runs outside results/
        root = Path(args.work_dir) / "results" if args.quick or args.tiny else Path(args.out).parent
        compute = f"_compute_{args.compute_dtype}" if args.compute_dtype else ""
        args.out = str(root / f"lmo_{variant.tag}{compute}{'_quick' if args.quick else ''}")
    out = Path(args.out)
    from cost_report import TARGETS, render
    from cost_summary import render_summaries

    if not args.report_only:
        os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        summary = standin.ensure(standin_dir, variant, child.child_env(args.threads))
        standin.use_in_this_process(standin_dir)  # before anything imports huggingface_hub
        provenance = {"commit": machine.commit_of(), "command": machine.command_line()}
        from fusion_bench_fw.frank_wolfe.reading import BLOCK_GROUP

        sizes = [2, 4] if args.quick else [int(s) for s in args.sizes.split(",")]
        read_sizes = [] if args.quick else [int(s) for s in args.read_sizes.split(",") if s]
        if args.quick:
            args.repeats = args.soft_repeats = 1
        pool = standin.settings(standin_dir, variant, summary)
        settings = {
            "sizes": sizes, "read_sizes": read_sizes, "repeats": args.repeats, "quick": args.quick,
            "soft_repeats": args.soft_repeats, "threads": args.threads, "objective_tasks": standin.OBJECTIVE_TASKS, "block_group": BLOCK_GROUP,
            "bytes_per_checkpoint": pool["bytes_per_checkpoint"], "pool": pool, "targets": TARGETS,
        }
        measured = measure(args, sizes, read_sizes, provenance)
        settings.update(compute_dtype=args.compute_dtype, keep_freed_memory=not args.system_malloc, dtypes=measured.pop("dtypes"))
        write_json(out.with_suffix(".json"), {"experiment": "cost_lmo", "settings": settings, "machine": machine.describe(), "definitions": DEFINITIONS, **measured})
    print("wrote", ", ".join(map(str, render(out.with_suffix(".json")) + render_summaries(out.parent))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
