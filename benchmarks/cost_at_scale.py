"""Cost at real scale: peak memory and time of one merging iteration vs the number of models n.

Pool: the real CLIP ViT-B/32 architecture (openai/clip-vit-base-patch32's config written out by hand)
with random weights, 20 fine-tuned vision towers of ~350 MB (see ``_cost_pool.py``); pool n = the
first n of them. Every (method, n) runs in a fresh child process, so its peak RSS
(``os.wait4`` rusage ``ru_maxrss``, i.e. what ``/usr/bin/time -v`` reports) belongs to that run only.

Methods (one FW iteration / one AdaMerging step, the same objective samples for all):

* ``fw_hard``  ours, ``config/method/fw_hard.yaml``, task-wise LMO, max_iters=1 (init: task arithmetic,
  the config's default; line search with ``--line-search-evals`` loss evaluations)
* ``fw_soft``  ours, ``config/method/fw_soft.yaml``, max_iters=1, ``--inner-steps`` coefficient steps
* ``intree_fw_soft``  FusionBench 0.2.33 ``FrankWolfeSoftAlgorithm`` (``method/fw_merging/fw_soft.yaml``),
  **in-tree, patched to CPU**: ``torch.nn.Module.cuda`` / ``torch.Tensor.cuda`` return self in that
  child process; ``init_weight=base``, explicit ``tasks``, ``dataset_size`` = samples per task,
  ``ada_iters`` = our inner steps
* ``intree_fw_hard``  FusionBench ``FrankWolfeHardAlgorithm`` (shipped config, then init_weight=base):
  tried once at the smallest n, its failure recorded
* ``adamerging``  FusionBench ``CLIPLayerWiseAdaMergingAlgorithm`` (``method/adamerging/clip.yaml``,
  max_steps=1); it adapts on the test data of *every* model, so its pool gets max(S, n) test images
  split over the n tasks (S = samples of one FW gradient). Run last, ascending n; an n after one that
  peaked above ``--ada-skip-gb`` is skipped, and a harness memory guard kills a child before the
  machine runs out of memory (recorded as a result).

Plus: one LMO pass (``PoolCheckpoints`` + ``score_vertices``, called as the solver calls it) vs just
reading the same n checkpoint files (``readinto`` and mmap + float32 sum, both streaming every byte),
cold (pages of those files evicted with posix_fadvise(DONTNEED), verified with fincore) and warm.

Children run torch single-threaded by default (``--threads``): on a shared 2-core machine two OpenMP
threads made the same operation vary up to 10x between repeats. Our package is copied once at the
start (``fusion_bench_fw/`` + ``config/``) and every child imports that copy, so a long run measures
one version of the code even while the tree is being edited.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cost_at_scale.py            # full run (~30-40 min)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cost_at_scale.py --quick    # smoke run, n in {2, 4} (~4 min)
    .venv/bin/python benchmarks/cost_at_scale.py --report-only               # re-render md/png from json
    ... --append-repeats 2 --repeat-sizes 20    # more timing repeats into the existing json (same frozen code)
    ... --redo-lmo                              # re-measure only the LMO-vs-read part

Writes ``benchmarks/results/cost_at_scale.{json,md,png}`` (``--quick``: ``cost_at_scale_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _cost_pool as cost_pool  # noqa: E402

GB = 1024**3
OURS = ("fw_hard", "fw_soft")
METHOD_LABELS = {
    "fw_hard": "ours fw_hard (task-wise)",
    "fw_soft": "ours fw_soft",
    "intree_fw_soft": "in-tree fw_soft (patched to CPU)",
    "intree_fw_hard": "in-tree fw_hard (patched to CPU)",
    "adamerging": "FusionBench layer-wise AdaMerging",
}
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
}


# ================================================================================================
# child side
# ================================================================================================
class RssSampler:
    """Samples this process's RSS every ``interval`` s (for the 'peak during the iteration' split)."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.samples: List[List[float]] = []
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append([time.perf_counter() - self.t0, self.rss()])
            self._stop.wait(self.interval)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def stop(self):
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> Optional[int]:
        values = [rss for t, rss in self.samples if start <= t <= end]
        return max(values) if values else None


class Timers:
    """Accumulated wall time per label, installed by wrapping methods (harness-side instrumentation)."""

    def __init__(self):
        self.total: Dict[str, float] = {}
        self.count: Dict[str, int] = {}
        self.first_start: Dict[str, float] = {}
        self.last_end: Dict[str, float] = {}
        self.cpu_total: Dict[str, float] = {}
        self.first_start_cpu: Dict[str, float] = {}
        self.last_end_cpu: Dict[str, float] = {}
        self.clock = time.perf_counter
        self.sync = lambda: None  # on CUDA: torch.cuda.synchronize, so a timer holds its kernels' time

    def wrap(self, owner, attr: str, label: str):
        original = getattr(owner, attr)
        timers = self

        def wrapped(*args, **kwargs):
            timers.sync()
            start, start_cpu = timers.clock(), time.process_time()
            timers.first_start.setdefault(label, start)
            timers.first_start_cpu.setdefault(label, start_cpu)
            try:
                return original(*args, **kwargs)
            finally:
                timers.sync()
                end, end_cpu = timers.clock(), time.process_time()
                timers.last_end[label] = end
                timers.last_end_cpu[label] = end_cpu
                timers.total[label] = timers.total.get(label, 0.0) + end - start
                timers.cpu_total[label] = timers.cpu_total.get(label, 0.0) + end_cpu - start_cpu
                timers.count[label] = timers.count.get(label, 0) + 1

        setattr(owner, attr, wrapped)
        return original


def _load_yaml(path: Path, overrides: Dict[str, Any]):
    from omegaconf import OmegaConf

    config = OmegaConf.load(str(path))
    for key, value in overrides.items():
        OmegaConf.update(config, key, value, force_add=True)
    return config


def _fusion_bench_config_dir() -> Path:
    import fusion_bench_config

    return Path(list(fusion_bench_config.__path__)[0])


def patch_cuda_to_noop() -> None:
    """The in-tree fw_merging calls .cuda() unconditionally; make it a no-op in this process."""
    from fusion_bench_fw.intree_on_cpu import make_cuda_calls_noops

    make_cuda_calls_noops()


def child_main(spec: Dict[str, Any]) -> None:
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"spec": spec, "status": "started"}
    sampler = RssSampler()
    try:
        if spec["kind"] == "lmo":
            result.update(lmo_benchmark(spec))
        else:
            result.update(method_run(spec, sampler))
        result["status"] = result.get("status") or "ok"
        if result["status"] == "started":
            result["status"] = "ok"
    except BaseException as error:  # a crash is a result
        result["status"] = "error"
        result["error_type"] = type(error).__name__
        result["error"] = str(error)[:2000]
        result["traceback_tail"] = traceback.format_exc()[-4000:]
    finally:
        sampler.stop()
        import resource

        result["child_self_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["rss_timeline"] = [[round(t, 2), rss] for t, rss in sampler.samples[:: max(1, len(sampler.samples) // 400)]]
        (run_dir / "result.json").write_text(json.dumps(result, indent=1, default=str))


def method_run(spec: Dict[str, Any], sampler: RssSampler) -> Dict[str, Any]:
    import lightning as L
    import torch

    torch.set_num_threads(int(spec.get("threads", 1)))
    from lightning.fabric.loggers import TensorBoardLogger

    from fusion_bench.utils import cache_utils, instantiate

    method = spec["method"]
    n = spec["n"]
    work_dir = Path(spec["work_dir"])
    run_dir = Path(spec["run_dir"])
    tasks = cost_pool.task_names(n)
    objective = tasks[: cost_pool.OBJECTIVE_TASKS]
    k = spec["samples_per_task"]
    cost_pool.register_tasks(cost_pool.task_names())
    cache_utils.set_default_cache_dir(run_dir / "cache")  # zero-shot heads: per run, never shared

    if method == "adamerging":
        test_root = cost_pool.ensure_ada_sets(work_dir, k * len(objective), n)
    else:
        test_root = cost_pool.ensure_test_sets(work_dir, k)
    modelpool = cost_pool.make_modelpool(work_dir, n, test_root)
    timers = Timers()
    accelerator = spec.get("accelerator", "cpu")
    if accelerator == "cuda":
        timers.sync = torch.cuda.synchronize
    overrides: Dict[str, Any]

    if method in OURS:
        from fusion_bench_fw.checkpoints import PoolCheckpoints
        from fusion_bench_fw.frank_wolfe import solver as fw_solver
        from fusion_bench_fw.objective import ClassificationObjective

        overrides = {
            "max_iters": 1,
            "objective_tasks": list(objective),
            "samples_per_task": k,
            "batch_size": k,
            "trajectory_path": str(run_dir / "fw_trajectory.json"),
        }
        if method == "fw_hard":
            overrides.update(granularity="task", line_search_evals=spec["line_search_evals"])
        else:
            overrides.update(inner_steps=spec["inner_steps"])
        config_dir = Path(os.environ.get("FW_COST_CONFIG_DIR", str(REPO / "config")))
        config = _load_yaml(config_dir / "method" / f"{method}.yaml", overrides)
        algorithm = instantiate(config)
        # harness-side timers (the package is not edited): where does the iteration's time go?
        timers.wrap(fw_solver, "score_vertices", "lmo_pass")
        timers.wrap(fw_solver, "assemble", "assemble_selected")
        timers.wrap(ClassificationObjective, "loss_and_grad", "loss_and_grad")
        timers.wrap(ClassificationObjective, "loss", "loss_only")
        timers.wrap(PoolCheckpoints, "load", "checkpoint_read")
        timers.wrap(PoolCheckpoints, "validate", "validate_pass")
        if method == "fw_soft":
            timers.wrap(fw_solver.FrankWolfeSoft, "optimize_coefficients", "inner_loop")
        timers.wrap(fw_solver.FrankWolfeSoft if method == "fw_soft" else fw_solver.FrankWolfeHard, "step", "iteration")
    elif method in ("intree_fw_soft", "intree_fw_hard"):
        if accelerator == "cpu":
            patch_cuda_to_noop()
        name = "fw_soft" if method == "intree_fw_soft" else "fw_hard"
        overrides = {"max_iters": 1, "dataset_size": k, "tasks": list(objective)}
        if method == "intree_fw_soft":
            overrides.update(init_weight="base", ada_iters=spec["inner_steps"])
        elif spec.get("variant") == "init_base":
            overrides.update(init_weight="base")
        config = _load_yaml(_fusion_bench_config_dir() / "method" / "fw_merging" / f"{name}.yaml", overrides)
        algorithm = instantiate(config)
        cls = type(algorithm)
        timers.wrap(cls, "frank_wolfe_iteration", "gradient")
        timers.wrap(cls, "frank_wolfe_selection", "lmo_pass")
        if hasattr(cls, "run_adamerging"):
            timers.wrap(cls, "run_adamerging", "inner_loop")
        timers.wrap(cls, "setup_zero_shot_classification_head", "zero_shot_heads")
        timers.wrap(modelpool, "load_model", "load_model")
    elif method == "adamerging":
        from fusion_bench.compat.method import AlgorithmFactory

        overrides = {
            "max_steps": 1,
            "batch_size": 64,  # >= any per-task test set here: one batch = the whole (tiny) set
            "num_workers": 0,
            "save_merging_weights": False,
            "fast_dev_run": False,
        }
        config = _load_yaml(_fusion_bench_config_dir() / "method" / "adamerging" / "clip.yaml", overrides)
        algorithm = AlgorithmFactory.create_algorithm(config)
        cls = type(algorithm)
        timers.wrap(cls, "construct_layer_wise_merged_model", "build_wrapped_model")
        timers.wrap(cls, "setup_zero_shot_classification_head", "zero_shot_heads")
        timers.wrap(cls, "on_test_time_adaptation_start", "tta_start_hook")
        timers.wrap(cls, "test_time_adaptation", "test_time_adaptation")
        timers.wrap(modelpool, "load_model", "load_model")
    else:
        raise ValueError(f"unknown method {method}")

    fabric = L.Fabric(accelerator=accelerator, devices=1, loggers=[TensorBoardLogger(str(run_dir), name="logs")])
    fabric.launch()
    algorithm.fabric = fabric
    import fusion_bench_fw

    result: Dict[str, Any] = {
        "package_file": fusion_bench_fw.__file__,
        "config_overrides": overrides,
        "objective_tasks": list(objective),
        "torch_threads": torch.get_num_threads(),
        "rss_before_run_bytes": RssSampler.rss(),
    }
    t_start = sampler.now()
    clock_start, cpu_start = time.perf_counter(), time.process_time()
    algorithm.run(modelpool)
    timers.sync()
    clock_end, cpu_end = time.perf_counter(), time.process_time()
    t_end = sampler.now()
    if accelerator == "cuda":
        result["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        result["cuda_device"] = torch.cuda.get_device_name()
    total = clock_end - clock_start
    result["run_s"] = total
    result["run_cpu_s"] = cpu_end - cpu_start

    # one iteration: from its first data-dependent step to the end of run()
    if method in OURS:
        trajectory = algorithm.fw_state.trajectory
        result["iteration_s"] = timers.total.get("iteration")
        result["iteration_cpu_s"] = timers.cpu_total.get("iteration")
        result["solver_reported_iteration_s"] = float(trajectory[0]["time_s"]) if trajectory else None
        result["fw_summary"] = {k_: v for k_, v in algorithm.fw_summary.items() if k_ != "weights"}
        result["profile"] = {key: float(sum(values)) for key, values in algorithm.profiler.recorded_durations.items()}
        iteration_start = t_end - (result["iteration_s"] or 0.0)
    elif method.startswith("intree"):
        first = timers.first_start.get("gradient")
        result["iteration_s"] = clock_end - first if first is not None else None
        result["iteration_cpu_s"] = cpu_end - timers.first_start_cpu["gradient"] if first is not None else None
        iteration_start = t_start + (first - clock_start) if first is not None else t_end
    else:  # adamerging: after the zero-shot heads are built: the adaptation step + merge_and_unload
        heads_done = timers.last_end.get("tta_start_hook")
        result["iteration_s"] = clock_end - heads_done if heads_done is not None else None
        result["iteration_cpu_s"] = cpu_end - timers.last_end_cpu["tta_start_hook"] if heads_done is not None else None
        iteration_start = t_start + (heads_done - clock_start) if heads_done is not None else t_end
    result["timers_s"] = timers.total
    result["timers_cpu_s"] = timers.cpu_total
    result["timer_counts"] = timers.count
    result["peak_rss_setup_bytes"] = sampler.peak_between(0.0, iteration_start)
    result["peak_rss_iteration_bytes"] = sampler.peak_between(iteration_start, t_end)
    return result


# --- LMO vs raw read ----------------------------------------------------------------------------
def _evict(files: List[Path]) -> None:
    for file in files:
        fd = os.open(str(file), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _resident_fraction(files: List[Path]) -> Optional[float]:
    """Fraction of the files' pages in the page cache (util-linux fincore), or None."""
    if not shutil.which("fincore"):
        return None
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", *map(str, files)], capture_output=True, text=True, timeout=60).stdout
        res = size = 0
        for line in out.strip().splitlines():
            r, s = line.split()[:2]
            res += int(r)
            size += int(s)
        return res / size if size else None
    except Exception:
        return None


def _warm(files: List[Path]) -> None:
    for file in files:
        with open(file, "rb") as handle:
            while handle.read(64 << 20):
                pass


def lmo_benchmark(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(int(spec.get("threads", 1)))
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from fusion_bench_fw.checkpoints import PoolCheckpoints
    from fusion_bench_fw.frank_wolfe.lmo import score_vertices
    from fusion_bench_fw.frank_wolfe.params import block_dots

    work_dir = Path(spec["work_dir"])
    lmo_sizes = spec["lmo_sizes"]
    read_sizes = spec["read_sizes"]
    repeats = spec["lmo_repeats"]
    repeats_5rows = spec["lmo5_repeats"]
    max_n = max(lmo_sizes + read_sizes)
    modelpool = cost_pool.make_modelpool(work_dir, max_n, cost_pool.ensure_test_sets(work_dir, spec["samples_per_task"]))
    config = CLIPVisionConfig.from_pretrained(str(work_dir / "models" / "ft_00"))
    with torch.device("meta"):
        skeleton = CLIPVisionModel(config)
    names = [name for name, _ in skeleton.named_parameters()]
    del skeleton
    theta = {b: t.clone() for b, t in PoolCheckpoints(modelpool, ["_pretrained_"], names).load("_pretrained_").items()}
    generator = torch.Generator().manual_seed(0)
    grad_rows = {"total": {b: torch.randn(theta[b].shape, generator=generator) * 1e-3 for b in names}}
    soft_rows = dict(grad_rows)
    for t in range(cost_pool.OBJECTIVE_TASKS):
        soft_rows[f"task:{t}"] = {b: torch.randn(theta[b].shape, generator=generator) * 1e-3 for b in names}
    bytes_per_ckpt = cost_pool.checkpoint_files(work_dir, 1)[0].stat().st_size

    def read_bytes(files):
        """Plain sequential read (1 MiB readinto, POSIX_FADV_SEQUENTIAL: the fastest plain read measured here)."""
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        for file in files:
            fd = os.open(str(file), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            with os.fdopen(fd, "rb", buffering=0) as handle:
                while handle.readinto(view):
                    pass

    def read_mmap(files):
        """Map each file (as safetensors does) and sum it as float32 words: every byte streamed through
        the CPU once with one add each, the least work any LMO must do (its dot is one multiply-add)."""
        import mmap

        import numpy as np

        for file in files:
            with open(file, "rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                words = np.frombuffer(mapped, dtype=np.float32, count=len(mapped) // 4)
                with np.errstate(all="ignore"):
                    float(words.sum())
                del words
                mapped.close()

    measurements: List[Dict[str, Any]] = []
    soft_pass = None
    try:  # FW-soft as its solver calls it since the total row is derived: the 4 task rows, total combined after
        from fusion_bench_fw.frank_wolfe.lmo import with_combined_row

        task_rows = {key: row for key, row in soft_rows.items() if key != "total"}

        def soft_pass(source):
            scores = score_vertices(source, theta, task_rows, names, with_norms=False)
            return with_combined_row(scores, "total", {key: 1.0 / len(task_rows) for key in task_rows})
    except ImportError:  # code measured before that change
        pass

    # call the LMO the way the solver does (the default inner_product score needs no vertex norms)
    import inspect

    lmo_kwargs = {"with_norms": False} if "with_norms" in inspect.signature(score_vertices).parameters else {}

    def measure(n, cache, op_name, op, files, repeat):
        if cache == "cold":
            _evict(files)
        else:
            _warm(files)
        resident = _resident_fraction(files)
        start, start_cpu = time.perf_counter(), time.process_time()
        op()
        seconds = time.perf_counter() - start
        measurements.append({"repeat": repeat, "n": n, "cache": cache, "op": op_name, "seconds": seconds, "cpu_seconds": time.process_time() - start_cpu, "resident_before": resident})
        print(f"[lmo] rep {repeat} n={n} {cache:4s} {op_name:12s} {seconds:7.2f}s (files resident before: {resident})", flush=True)

    drop_caches = _try_drop_caches()
    for repeat in range(repeats):
        for n in read_sizes:
            files = cost_pool.checkpoint_files(work_dir, n)
            for cache in ("cold", "warm"):
                measure(n, cache, "read_bytes", lambda: read_bytes(files), files, repeat)
                measure(n, cache, "read_mmap", lambda: read_mmap(files), files, repeat)
        for n in lmo_sizes:
            files = cost_pool.checkpoint_files(work_dir, n)
            source = PoolCheckpoints(modelpool, cost_pool.task_names(n), names)
            for cache in ("cold", "warm"):
                measure(n, cache, "read_bytes", lambda: read_bytes(files), files, repeat)
                measure(n, cache, "read_mmap", lambda: read_mmap(files), files, repeat)
                measure(n, cache, "lmo_1row", lambda: score_vertices(source, theta, grad_rows, names, **lmo_kwargs), files, repeat)
                if repeat < repeats_5rows:
                    measure(n, cache, "lmo_5rows", lambda: score_vertices(source, theta, soft_rows, names, **lmo_kwargs), files, repeat)
                    if soft_pass is not None:
                        measure(n, cache, "lmo_soft", lambda: soft_pass(source), files, repeat)

    # per-vertex arithmetic with the vertex already in memory (its pages touched): is the LMO compute-bound?
    vertex = {b: t.clone() for b, t in PoolCheckpoints(modelpool, [cost_pool.task_names(1)[0]], names).load(cost_pool.task_names(1)[0]).items()}

    class OneInMemory:
        names = ["in_memory"]

        def stream(self, indices=None):
            yield 0, vertex

    per_vertex: Dict[str, float] = {}

    def time_it(label, fn, count=2):
        values = []
        for _ in range(count):
            start = time.perf_counter()
            fn()
            values.append(time.perf_counter() - start)
        per_vertex[label] = statistics.median(values)
        print(f"[lmo] per vertex, in memory: {label:40s} {per_vertex[label]:6.2f}s", flush=True)

    time_it(f"score_vertices 1 row, as the solver calls it {lmo_kwargs or ''}", lambda: score_vertices(OneInMemory(), theta, grad_rows, names, **lmo_kwargs))
    time_it(f"score_vertices 5 rows, as the solver calls it {lmo_kwargs or ''}", lambda: score_vertices(OneInMemory(), theta, soft_rows, names, **lmo_kwargs))
    time_it("  of which the per-pass terms <g,theta>, |g|^2 per row + |theta|^2", lambda: ([block_dots(g, theta, names) for g in soft_rows.values()], [block_dots(g, g, names) for g in soft_rows.values()], block_dots(theta, theta, names)))
    time_it("float32 dot <g, s> only, 1 row", lambda: [torch.dot(grad_rows["total"][b].reshape(-1), vertex[b].reshape(-1)) for b in names])
    stacked = {b: torch.stack([soft_rows[key][b].reshape(-1) for key in soft_rows]) for b in names}
    time_it("float32 one matvec per block, 5 rows", lambda: [stacked[b] @ vertex[b].reshape(-1) for b in names])
    time_it("float64 copy of the vertex only", lambda: [vertex[b].to(torch.float64) for b in names])
    return {
        "lmo_measurements": measurements,
        "per_vertex_compute_s": per_vertex,
        "score_vertices_kwargs": lmo_kwargs,
        "bytes_per_checkpoint": bytes_per_ckpt,
        "drop_caches": drop_caches,
        "eviction": "posix_fadvise(POSIX_FADV_DONTNEED) on each file before a cold measurement, residency checked with fincore",
    }


def _try_drop_caches() -> Dict[str, Any]:
    """Whether the global page-cache drop works here (reported; the benchmark evicts per file)."""
    try:
        subprocess.run(["sync"], timeout=120)
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return {"works": True}
    except Exception as error:
        return {"works": False, "error": f"{type(error).__name__}: {error}"}


# ================================================================================================
# parent side
# ================================================================================================
def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        info["affinity_cores"] = len(os.sched_getaffinity(0))
    except Exception:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 1024**2, 1)
    except Exception:
        pass
    try:
        versions = subprocess.run(
            [sys.executable, "-c", "import torch, fusion_bench, transformers, lightning, importlib.metadata as m; "
             "print(torch.__version__, m.version('fusion-bench'), transformers.__version__, lightning.__version__); "
             "print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')"],
            capture_output=True, text=True, timeout=120, env=_child_env(),
        ).stdout.split("\n")
        gpu = versions[1].strip()
        versions = versions[0].split()
        info.update(torch=versions[0], fusion_bench=versions[1], transformers=versions[2], lightning=versions[3])
        if gpu:
            info["gpu"] = gpu
    except Exception:
        pass
    return info


SNAPSHOT: Dict[str, Any] = {}


def _child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(CHILD_ENV)
    threads = str(SNAPSHOT.get("threads", 1))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    if SNAPSHOT.get("path"):
        env["PYTHONPATH"] = SNAPSHOT["path"] + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["FW_COST_CONFIG_DIR"] = str(Path(SNAPSHOT["path"]) / "config")
    return env


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable"):
            return int(line.split()[1]) * 1024
    return 1 << 62


def _vm_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(spec: Dict[str, Any], args, log_file: Path) -> Dict[str, Any]:
    """Run one measurement in a fresh process; peak RSS from wait4; a memory guard; a timeout."""
    run_dir = Path(spec["run_dir"])
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child-spec", json.dumps(spec)]
    with open(log_file, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=str(run_dir))
    guard = {"killed": None, "max_vmrss": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            rss = _vm_rss(process.pid)
            guard["max_vmrss"] = max(guard["max_vmrss"], rss)
            available = _mem_available()
            if rss > args.mem_guard_gb * GB or available < args.min_available_gb * GB:
                guard["killed"] = f"harness memory guard: child RSS {rss / GB:.1f} GB, machine MemAvailable {available / GB:.1f} GB"
                try:
                    process.send_signal(signal.SIGKILL)
                except OSError:
                    pass
                return
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    load_start = os.getloadavg()
    status = None
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > args.child_timeout:
            timed_out = True
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.1)
    process.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    watcher.join()
    wall = time.perf_counter() - started
    result_file = run_dir / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {"spec": spec}
    result.pop("spec", None)
    result.update(
        spec=spec,
        child_wall_s=wall,
        returncode=process.returncode,
        peak_rss_bytes=usage.ru_maxrss * 1024,
        child_cpu_s=usage.ru_utime + usage.ru_stime,
        guard_max_vmrss_bytes=guard["max_vmrss"],
        loadavg_1min_start_end=[round(load_start[0], 2), round(os.getloadavg()[0], 2)],
    )
    if guard["killed"]:
        result["status"] = "killed"
        result["error"] = guard["killed"]
    elif timed_out:
        result["status"] = "timeout"
        result["error"] = f"child exceeded {args.child_timeout} s"
    elif process.returncode != 0 and result.get("status") in (None, "started", "ok"):
        result["status"] = "crashed"
        sig = -process.returncode if process.returncode < 0 else None
        result["error"] = f"exit code {process.returncode}" + (" (SIGKILL: likely the kernel OOM killer)" if sig == 9 else "")
    if result.get("status") not in ("ok",):
        try:
            result["log_tail"] = log_file.read_text()[-3000:]
        except OSError:
            pass
    return result


def snapshot_package(target_root: Path) -> Dict[str, Any]:
    """Freeze our package (fusion_bench_fw/ + config/) for the whole run: other people edit the tree
    while a long benchmark runs, and every child must measure the same code. Children get the
    snapshot first on PYTHONPATH (the editable install's path entry comes later)."""
    import hashlib

    digest = hashlib.sha256()
    files = sorted(list((REPO / "fusion_bench_fw").rglob("*.py")) + list((REPO / "fusion_bench_fw").rglob("*.yaml")) + list((REPO / "config").rglob("*.yaml")))
    for file in files:
        digest.update(str(file.relative_to(REPO)).encode())
        digest.update(file.read_bytes())
    tag = digest.hexdigest()[:12]
    root = target_root / tag
    if not root.exists():
        tmp = target_root / f"{tag}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(REPO / "fusion_bench_fw", tmp / "fusion_bench_fw", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "config", tmp / "config")
        tmp.rename(root)

    def git(*command):
        try:
            return subprocess.run(["git", *command], cwd=str(REPO), capture_output=True, text=True, timeout=60).stdout.strip()
        except Exception:
            return None

    return {
        "path": str(root),
        "content_sha256_12": tag,
        "git_head": git("rev-parse", "HEAD"),
        "git_head_subject": git("log", "-1", "--format=%s"),
        "uncommitted_changes_in_package": git("status", "--short", "--", "fusion_bench_fw", "config"),
    }


def _save(results_path: Path, payload: Dict[str, Any]) -> None:
    results_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = results_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(results_path)


def parent_main(args) -> None:
    results_path, md_path, png_path = output_paths(args)
    if args.report_only:
        payload = json.loads(results_path.read_text())
        write_report(payload, md_path, png_path)
        print("wrote " + " and ".join(str(p) for p in (md_path, png_path) if p.exists()))
        return
    if args.append_repeats:
        append_repeats(args, results_path, md_path, png_path)
        return
    if args.redo_lmo:
        redo_lmo(args, results_path, md_path, png_path)
        return

    work_dir = Path(args.work_dir)
    sizes = [2, 4] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat_sizes = set(sizes) if args.quick else {int(s) for s in args.repeat_sizes.split(",")}
    repeats = 1 if args.quick else args.repeats
    lmo_sizes = [2] if args.quick else [int(s) for s in args.lmo_sizes.split(",")]
    read_sizes = [4] if args.quick else [int(s) for s in args.read_sizes.split(",") if s]
    lmo_repeats = 1 if args.quick else args.lmo_repeats
    methods = [m for m in args.methods.split(",") if m]
    repeat_methods = set(methods) if args.quick else {m for m in args.repeat_methods.split(",") if m}

    free = shutil.disk_usage(str(work_dir.parent if not work_dir.exists() else work_dir)).free
    built = (work_dir / "build.json").exists()
    if not built and free < 8.5 * GB:
        sys.exit(f"need ~8 GB free under {work_dir} for the pool, have {free / GB:.1f} GB")

    payload: Dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in ["HF_HUB_OFFLINE=1", ".venv/bin/python", *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "settings": {
            "sizes": sizes, "repeats": repeats, "repeat_sizes": sorted(repeat_sizes), "repeat_methods": sorted(repeat_methods), "lmo_sizes": lmo_sizes,
            "lmo_repeats": lmo_repeats, "lmo5_repeats": args.lmo5_repeats, "read_sizes": read_sizes, "samples_per_task": args.samples_per_task,
            "objective_tasks": cost_pool.OBJECTIVE_TASKS, "inner_steps": args.inner_steps,
            "line_search_evals": args.line_search_evals, "methods": methods, "quick": args.quick,
            "threads": args.threads, "accelerator": args.accelerator, "ada_skip_gb": args.ada_skip_gb, "mem_guard_gb": args.mem_guard_gb, "work_dir": str(work_dir),
            "disk_free_gb_at_start": round(free / GB, 1),
        },
        "runs": [],
        "lmo": None,
    }
    print(json.dumps(payload["machine"]), flush=True)
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    t_begin = time.perf_counter()

    # 1. the pool (child process, so this process stays small)
    build = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); import _cost_pool as p; from pathlib import Path; p.build(Path({str(work_dir)!r}))"], env=_child_env())
    if build.returncode != 0:
        sys.exit("pool build failed")
    SNAPSHOT["threads"] = args.threads
    if not args.no_snapshot:
        SNAPSHOT.update(snapshot_package(Path(args.scratch_dir).parent / "fw_cost_snapshots"))
    payload["package_snapshot"] = dict(SNAPSHOT) or {"path": None, "note": "children imported the live working tree"}
    payload["settings"]["pool_bytes_per_checkpoint"] = cost_pool.checkpoint_files(work_dir, 1)[0].stat().st_size

    def run(spec_extra: Dict[str, Any], tag: str) -> Dict[str, Any]:
        spec = {
            "work_dir": str(work_dir), "run_dir": str(Path(args.scratch_dir) / tag),
            "samples_per_task": args.samples_per_task, "inner_steps": args.inner_steps,
            "line_search_evals": args.line_search_evals, "threads": args.threads, "accelerator": args.accelerator, **spec_extra,
        }
        t = time.perf_counter()
        result = run_child(spec, args, logs / f"{tag}.log")
        print(f"[{time.perf_counter() - t_begin:7.0f}s] {tag:32s} {str(result.get('status')):8s} peak {result['peak_rss_bytes'] / GB:5.2f} GB  "
              f"run {_fmt(result.get('run_s'))} s  iteration {_fmt(result.get('iteration_s'))} s  (child {time.perf_counter() - t:.0f} s)"
              + (f"  ERROR: {str(result.get('error', ''))[:200]}" if result.get("status") != "ok" else ""), flush=True)
        return result

    # 2. LMO vs raw read
    if not args.skip_lmo:
        lmo = run({"kind": "lmo", "lmo_sizes": lmo_sizes, "read_sizes": read_sizes, "lmo_repeats": lmo_repeats, "lmo5_repeats": args.lmo5_repeats}, "lmo")
        payload["lmo"] = lmo
        _save(results_path, payload)

    # 3. the FW methods, interleaved so that background load hits all of them alike
    fw_methods = [m for m in ("fw_hard", "fw_soft", "intree_fw_soft") if m in methods]
    for repeat in range(repeats):
        for n in sizes:
            if repeat > 0 and n not in repeat_sizes:
                continue
            for method in fw_methods:
                if repeat > 0 and method not in repeat_methods:
                    continue
                result = run({"kind": "method", "method": method, "n": n, "repeat": repeat}, f"{method}_n{n}_r{repeat}")
                payload["runs"].append(result)
                _save(results_path, payload)
    if "intree_fw_hard" in methods:
        for variant in ("shipped_config", "init_base"):
            result = run({"kind": "method", "method": "intree_fw_hard", "n": sizes[0] if args.quick else 4, "repeat": 0, "variant": variant}, f"intree_fw_hard_{variant}")
            payload["runs"].append(result)
            _save(results_path, payload)

    # 4. AdaMerging last, ascending n, skipping after a run that came close to the machine's memory
    if "adamerging" in methods:
        skip_reason = None
        for n in sizes:
            for repeat in range(args.ada_repeats if n in repeat_sizes else 1):
                tag = f"adamerging_n{n}_r{repeat}"
                if skip_reason:
                    payload["runs"].append({"spec": {"kind": "method", "method": "adamerging", "n": n, "repeat": repeat}, "status": "skipped", "error": skip_reason})
                    print(f"{tag}: skipped ({skip_reason})", flush=True)
                    continue
                result = run({"kind": "method", "method": "adamerging", "n": n, "repeat": repeat}, tag)
                payload["runs"].append(result)
                _save(results_path, payload)
                peak = max(result.get("peak_rss_bytes") or 0, result.get("guard_max_vmrss_bytes") or 0)
                if result.get("status") != "ok" or peak > args.ada_skip_gb * GB:
                    skip_reason = f"n={n} already {'failed (' + str(result.get('status')) + ')' if result.get('status') != 'ok' else 'peaked at'} {peak / GB:.1f} GB (> {args.ada_skip_gb} GB skip threshold or failed)"

    payload["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    payload["total_wall_s"] = time.perf_counter() - t_begin
    _save(results_path, payload)
    write_report(payload, md_path, png_path)
    print("wrote " + ", ".join(str(p) for p in (results_path, md_path, png_path) if p.exists()) + f" in {payload['total_wall_s'] / 60:.1f} min", flush=True)


def append_repeats(args, results_path: Path, md_path: Path, png_path: Path) -> None:
    """More timing repeats added to an existing result file, same settings and the same frozen code.

    ``--append-repeats N --repeat-sizes 20``: N more runs of each ``--repeat-methods`` at those n."""
    payload = json.loads(results_path.read_text())
    settings = payload["settings"]
    snapshot = payload.get("package_snapshot") or {}
    if snapshot.get("path") and not Path(snapshot["path"]).exists():
        sys.exit(f"the frozen package copy {snapshot['path']} is gone: rerun the whole benchmark")
    SNAPSHOT.update({k: v for k, v in snapshot.items() if k in ("path", "threads")})
    SNAPSHOT.setdefault("threads", settings.get("threads", 1))
    work_dir = Path(settings["work_dir"])
    sizes = [int(x) for x in args.repeat_sizes.split(",")]
    methods = [m for m in args.repeat_methods.split(",") if m]
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    payload.setdefault("appended_commands", []).append(" ".join(shlex.quote(a) for a in ["HF_HUB_OFFLINE=1", ".venv/bin/python", *sys.argv]))
    t_begin = time.perf_counter()
    for _ in range(args.append_repeats):
        for n in sizes:
            for method in methods:
                repeat = 1 + max([r["spec"].get("repeat", 0) for r in payload["runs"] if r["spec"].get("method") == method and r["spec"].get("n") == n] or [-1])
                spec = {
                    "work_dir": str(work_dir), "run_dir": str(Path(args.scratch_dir) / f"{method}_n{n}_r{repeat}"),
                    "samples_per_task": settings["samples_per_task"], "inner_steps": settings["inner_steps"],
                    "line_search_evals": settings["line_search_evals"], "threads": SNAPSHOT["threads"],
                    "kind": "method", "method": method, "n": n, "repeat": repeat, "appended": True,
                }
                result = run_child(spec, args, logs / f"{method}_n{n}_r{repeat}.log")
                print(f"[{time.perf_counter() - t_begin:7.0f}s] {method}_n{n}_r{repeat:<3d} {str(result.get('status')):8s} peak {result['peak_rss_bytes'] / GB:5.2f} GB  "
                      f"run {_fmt(result.get('run_s'))} s  iteration {_fmt(result.get('iteration_s'))} s", flush=True)
                payload["runs"].append(result)
                _save(results_path, payload)
    payload["appended_wall_s"] = payload.get("appended_wall_s", 0.0) + time.perf_counter() - t_begin
    _save(results_path, payload)
    write_report(payload, md_path, png_path)
    print(f"appended; wrote {results_path}, {md_path}, {png_path}")


def redo_lmo(args, results_path: Path, md_path: Path, png_path: Path) -> None:
    """Re-measure only the LMO-vs-read part of an existing result file (same frozen code), e.g. with a new read baseline."""
    payload = json.loads(results_path.read_text())
    settings = payload["settings"]
    snapshot = payload.get("package_snapshot") or {}
    if args.no_snapshot:  # measure the live tree's LMO (e.g. a newer engine) against the same files
        SNAPSHOT["threads"] = settings.get("threads", 1)
    else:
        if snapshot.get("path") and not Path(snapshot["path"]).exists():
            sys.exit(f"the frozen package copy {snapshot['path']} is gone: rerun the whole benchmark")
        SNAPSHOT.update({k: v for k, v in snapshot.items() if k in ("path", "threads")})
        SNAPSHOT.setdefault("threads", settings.get("threads", 1))
    lmo_sizes = [int(x) for x in args.lmo_sizes.split(",")]
    read_sizes = [int(x) for x in args.read_sizes.split(",") if x]
    spec = {
        "work_dir": settings["work_dir"], "run_dir": str(Path(args.scratch_dir) / "lmo"), "samples_per_task": settings["samples_per_task"],
        "threads": SNAPSHOT["threads"], "kind": "lmo", "lmo_sizes": lmo_sizes, "read_sizes": read_sizes,
        "lmo_repeats": args.lmo_repeats, "lmo5_repeats": args.lmo5_repeats,
    }
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    result = run_child(spec, args, Path(args.log_dir) / "lmo.log")
    print(f"lmo: {result.get('status')} {result.get('error', '')}", flush=True)
    if result.get("status") != "ok":
        sys.exit("LMO measurement failed; result file left unchanged")
    if payload.get("lmo"):
        payload.setdefault("superseded_lmo", []).append({k: v for k, v in payload["lmo"].items() if k != "rss_timeline"})
    if args.no_snapshot:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
        result["code"] = f"live working tree at {revision or 'unknown revision'} (not the frozen copy the method runs used)"
    payload["lmo"] = result
    settings.update(lmo_sizes=lmo_sizes, read_sizes=read_sizes, lmo_repeats=args.lmo_repeats, lmo5_repeats=args.lmo5_repeats)
    payload.setdefault("appended_commands", []).append(" ".join(shlex.quote(a) for a in ["HF_HUB_OFFLINE=1", ".venv/bin/python", *sys.argv]) + "  (LMO-vs-read re-measured)")
    _save(results_path, payload)
    write_report(payload, md_path, png_path)
    print(f"re-measured the LMO part; wrote {results_path}, {md_path}, {png_path}")


def output_paths(args):
    out = Path(args.out_dir)
    stem = "cost_at_scale_quick" if args.quick else "cost_at_scale"
    if args.accelerator != "cpu":
        stem += f"_{args.accelerator}"
    return out / f"{stem}.json", out / f"{stem}.md", out / f"{stem}.png"


# ================================================================================================
# report
# ================================================================================================
def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def _median(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _cell(values: List[float], digits: int = 1, scale: float = 1.0) -> str:
    values = [v / scale for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}] ×{len(values)}"


def summarize(payload: Dict[str, Any]) -> Dict[str, Any]:
    """Medians per (method, n) and the targets."""
    table: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for run in payload["runs"]:
        spec = run["spec"]
        method, n = spec["method"], spec["n"]
        if method == "intree_fw_hard":
            continue
        entry = table.setdefault(method, {}).setdefault(n, {"ok": [], "failed": []})
        (entry["ok"] if run.get("status") == "ok" else entry["failed"]).append(run)
    summary: Dict[str, Any] = {"per_method": {}}
    for method, by_n in table.items():
        summary["per_method"][method] = {}
        for n, entry in sorted(by_n.items()):
            ok = entry["ok"]
            summary["per_method"][method][n] = {
                "runs_ok": len(ok),
                "failures": [f"{r.get('status')}: {r.get('error', '')}"[:300] for r in entry["failed"]],
                "peak_rss_gb": _median([r["peak_rss_bytes"] / GB for r in ok]),
                "peak_rss_gb_all": [r["peak_rss_bytes"] / GB for r in ok],
                "iteration_s": _median([r.get("iteration_s") for r in ok]),
                "iteration_s_all": [r.get("iteration_s") for r in ok],
                "run_s": _median([r.get("run_s") for r in ok]),
                "run_s_all": [r.get("run_s") for r in ok],
                "iteration_cpu_s": _median([r.get("iteration_cpu_s") for r in ok]),
                "iteration_cpu_s_all": [r.get("iteration_cpu_s") for r in ok],
                "run_cpu_s": _median([r.get("run_cpu_s") for r in ok]),
                "run_cpu_s_all": [r.get("run_cpu_s") for r in ok],
                "peak_failed_gb": max([max(r.get("peak_rss_bytes") or 0, r.get("guard_max_vmrss_bytes") or 0) / GB for r in entry["failed"]], default=None),
            }
    targets = []
    per = summary["per_method"]
    sizes = payload["settings"]["sizes"]
    lo, hi = min(sizes), max(sizes)
    for method in OURS:
        a = per.get(method, {}).get(lo, {}).get("peak_rss_gb")
        b = per.get(method, {}).get(hi, {}).get("peak_rss_gb")
        ratio = b / a if a and b else None
        targets.append({
            "target": f"{method}: peak RSS at n={hi} <= 1.25 x peak RSS at n={lo}",
            "measured": f"{_fmt(b, 2)} GB / {_fmt(a, 2)} GB = {_fmt(ratio, 3)}",
            "ratio": ratio, "limit": 1.25,
            "verdict": None if ratio is None else ("PASS" if ratio <= 1.25 else "MISS"),
        })
    for kind in ("iteration_s", "run_s", "iteration_cpu_s"):
        ratios = {}
        for n in sizes:
            ours = per.get("fw_soft", {}).get(n, {}).get(kind)
            theirs = per.get("intree_fw_soft", {}).get(n, {}).get(kind)
            if ours and theirs:
                ratios[n] = ours / theirs
        worst = max(ratios.values()) if ratios else None
        label = {"iteration_s": "wall time of one iteration", "run_s": "wall time of the whole run() (setup + 1 iteration)",
                 "iteration_cpu_s": "CPU time of one iteration (secondary: robust to CPU contention)"}[kind]
        targets.append({
            "target": f"fw_soft {label} <= 1/3 of in-tree fw_soft's, every n",
            "measured": ", ".join(f"n={n}: {r:.2f}" for n, r in ratios.items()) or "–",
            "ratio": worst, "limit": 1 / 3, "per_n": ratios,
            "verdict": None if worst is None else ("PASS" if worst <= 1 / 3 else "MISS"),
        })
    lmo = payload.get("lmo") or {}
    lmo_rows = []
    if lmo.get("lmo_measurements"):
        groups: Dict[tuple, List[float]] = {}
        for m in lmo["lmo_measurements"]:
            groups.setdefault((m["n"], m["cache"], m["op"]), []).append(m["seconds"])
        for n in sorted({m["n"] for m in lmo["lmo_measurements"]}):
            for cache in ("cold", "warm"):
                row: Dict[str, Any] = {"n": n, "cache": cache}
                for op in ("read_bytes", "read_mmap", "lmo_1row", "lmo_5rows", "lmo_soft"):
                    row[f"{op}_all"] = groups.get((n, cache, op), [])
                    row[f"{op}_s"] = _median(row[f"{op}_all"])
                if row["read_bytes_s"] is None:
                    continue
                # the read baseline: the faster of the plain-read medians (the stricter comparison for the LMO)
                row["read_s"] = min(v for v in (row["read_bytes_s"], row["read_mmap_s"]) if v is not None)
                for op in ("lmo_1row", "lmo_5rows", "lmo_soft"):
                    row[f"{op}_over_read"] = row[f"{op}_s"] / row["read_s"] if row[f"{op}_s"] else None
                lmo_rows.append(row)
        for lmo_n, cache in [(nn, cc) for nn in sorted({r["n"] for r in lmo_rows if r.get("lmo_1row_s")}) for cc in ("cold", "warm")]:
            for op, label in (("lmo_1row", "1 gradient row = fw_hard"), ("lmo_5rows", "5 gradient rows = fw_soft with 4 tasks, total row read"),
                              ("lmo_soft", "fw_soft with 4 tasks as it runs now: 4 task rows read, total derived")):
                row = next((r for r in lmo_rows if r["n"] == lmo_n and r["cache"] == cache), None)
                ratio = row.get(f"{op}_over_read") if row else None
                if row is None or row.get(f"{op}_s") is None:
                    continue
                targets.append({
                    "target": f"LMO pass over n={lmo_n} checkpoints ({label}, {cache} page cache) <= 2 x raw read of the same files (faster of read/mmap)",
                    "measured": f"{_fmt(row.get(f'{op}_s'), 2)} s / {_fmt(row.get('read_s'), 2)} s = {_fmt(ratio, 2)}",
                    "ratio": ratio, "limit": 2.0,
                    "verdict": None if ratio is None else ("PASS" if ratio <= 2.0 else "MISS"),
                })
    # the LMO pass inside the real runs (real gradients; the page cache as the run found it)
    in_run = []
    for method in OURS:
        for n, entry in sorted(summary["per_method"].get(method, {}).items()):
            ok = [r for r in payload["runs"] if r["spec"].get("method") == method and r["spec"].get("n") == n and r.get("status") == "ok"]
            seconds = _median([(r.get("timers_s") or {}).get("lmo_pass") for r in ok])
            if seconds is None:
                continue
            vertices = n + 1  # pretrained_as_vertex: the pretrained model is streamed too
            in_run.append({"method": method, "n": n, "vertices": vertices, "lmo_pass_s": seconds, "per_vertex_s": seconds / vertices})
    summary["lmo_in_run"] = in_run
    summary["targets"] = targets
    summary["lmo_rows"] = lmo_rows
    return summary


def write_report(payload: Dict[str, Any], md_path: Path, png_path: Path) -> None:
    if payload["settings"].get("accelerator", "cpu") != "cpu":
        write_gpu_report(payload, md_path)
        return
    summary = summarize(payload)
    payload["summary"] = summary
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path = md_path.with_suffix(".json")
    json_path.write_text(json.dumps(payload, indent=1, default=str))
    per = summary["per_method"]
    sizes = payload["settings"]["sizes"]
    s = payload["settings"]
    m = payload["machine"]
    lines: List[str] = []
    add = lines.append
    add("# Cost at real scale: peak memory and time of one merging iteration vs n")
    add("")
    add(f"Generated by `benchmarks/cost_at_scale.py` ({payload.get('started')} → {payload.get('finished', 'unfinished')}, "
        f"{_fmt((payload.get('total_wall_s') or 0) / 60)} min).")
    add("")
    add(f"Command: `{payload['command']}`")
    for extra in payload.get("appended_commands", []):
        command, _, note = extra.partition("  (")
        add(f"then (same frozen code and settings): `{command.strip()}`" + (f" ({note}" if note else ""))
    add("")
    add(f"Machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores, {m.get('mem_total_gib')} GiB RAM, no GPU; "
        f"Python {m.get('python')}, torch {m.get('torch')}, fusion-bench {m.get('fusion_bench')}, transformers {m.get('transformers')}, "
        f"lightning {m.get('lightning')}; {m.get('platform')}. Other processes may have shared the CPU: compare times only as ratios "
        "within this run (methods are interleaved per n and repeat).")
    loads = [x for r in payload["runs"] + ([payload["lmo"]] if payload.get("lmo") else []) for x in (r.get("loadavg_1min_start_end") or [])]
    if loads:
        add("")
        add(f"CPU contention: the 1-minute load average at the start/end of the child runs ranged {min(loads):.1f}–{max(loads):.1f} "
            f"on {m.get('cpu_count')} cores (other engineers' jobs ran beside this benchmark), so absolute seconds are inflated and noisy; "
            "the per-run values are in the JSON (`loadavg_1min_start_end`).")
    snap = payload.get("package_snapshot") or {}
    if snap:
        add("")
        add(f"Code measured: a frozen copy of `fusion_bench_fw/` + `config/` taken at the start (content hash {snap.get('content_sha256_12')}, "
            f"git HEAD {str(snap.get('git_head'))[:10]} \"{snap.get('git_head_subject')}\"; uncommitted package changes at that time: "
            f"{(snap.get('uncommitted_changes_in_package') or 'none').replace(chr(10), '; ')}).")
    add("")
    add("## Setup")
    add("")
    add(f"- Pool: CLIP ViT-B/32 architecture (openai/clip-vit-base-patch32 config written by hand), random weights; pretrained = CLIPModel "
        f"(605 MB file), fine-tuned = CLIPVisionModel (pretrained vision tower + seeded noise, "
        f"{(s.get('pool_bytes_per_checkpoint') or 0) / 1e6:.0f} MB each); pool n = the first n of 20.")
    total = s['samples_per_task'] * s['objective_tasks']
    add(f"- Objective: {s['objective_tasks']} tasks × {s['samples_per_task']} samples = {total} samples per gradient, for every method. "
        f"Ours: cross-entropy on train samples, batch {s['samples_per_task']}. In-tree fw_soft: `dataset_size={s['samples_per_task']}` per task "
        f"(its gradients are one sample at a time), its AdaMerging inner loop reads {s['samples_per_task']} test images per task per step. "
        f"AdaMerging: one step over the test sets of all n models, max({total}, n) images in all split over the n tasks.")
    add(f"- Iterations: `max_iters=1` for every FW method; fw_soft `inner_steps={s['inner_steps']}` and in-tree fw_soft `ada_iters={s['inner_steps']}`; "
        f"fw_hard: `granularity=task`, `line_search_evals={s['line_search_evals']}`, default init (task arithmetic: one extra streaming pass); "
        "AdaMerging `max_steps=1`.")
    add(f"- Threads: every child runs torch with {s.get('threads', '?')} thread(s) (`torch.set_num_threads`, OMP/MKL_NUM_THREADS). The machine was "
        "shared with other jobs; with 2 OpenMP threads on 2 busy cores the same operation varied up to 10x between repeats "
        "(preempted OpenMP threads), with 1 thread it is far steadier. CPU time (user+sys) is reported beside wall time.")
    add("- In-tree FusionBench fw_merging methods are **in-tree, patched to CPU**: `torch.nn.Module.cuda` and `torch.Tensor.cuda` return self "
        "in their child process (nothing else patched); `init_weight=base`, explicit `tasks`.")
    counts: Dict[str, Dict[int, int]] = {}
    for r in payload["runs"]:
        if r.get("status") == "ok":
            counts.setdefault(r["spec"]["method"], {}).setdefault(r["spec"]["n"], 0)
            counts[r["spec"]["method"]][r["spec"]["n"]] += 1
    repeated = "; ".join(f"{mm} at " + ", ".join(f"n={n} ×{c}" for n, c in sorted(by_n.items()) if c > 1) for mm, by_n in counts.items() if any(c > 1 for c in by_n.values()))
    add(f"- Peak RSS: `ru_maxrss` of each fresh child process from `os.wait4` (same number as `/usr/bin/time -v`). Timing repeats (fresh process each): "
        f"{repeated or 'none'}; every other (method, n) 1 run (time budget); the time target's pair (fw_soft, in-tree fw_soft) is the one repeated. "
        "Cells: median [min–max] ×runs.")
    add("- 'Iteration' = ours: `FrankWolfe{Hard,Soft}.step` (gradient, LMO pass, descent probe, selected-checkpoint reads, line search / inner loop); "
        "in-tree fw_soft: from its first gradient call to the end of `run()`; AdaMerging: the adaptation step + merge-and-unload after the heads are built. "
        "'run()' = the whole `algorithm.run(modelpool)` call (loading, validation, zero-shot heads, iteration).")
    add("")
    add("## Targets")
    add("")
    add("| target | measured | verdict |")
    add("|---|---|---|")
    for t in summary["targets"]:
        add(f"| {t['target']} | {t['measured']} | **{t['verdict'] or 'n/a'}** |")
    add("")
    analysis = _analysis(payload, summary)
    if analysis:
        add("## Why (from the timers and the per-vertex measurements)")
        add("")
        lines.extend(analysis)
        add("")
    method_order = [mm for mm in ("fw_hard", "fw_soft", "intree_fw_soft", "adamerging") if mm in per]
    add("## Peak RSS (GB) vs n")
    add("")
    add("| method | " + " | ".join(f"n={n}" for n in sizes) + f" | n={max(sizes)} / n={min(sizes)} |")
    add("|---|" + "---|" * (len(sizes) + 1))
    for method in method_order:
        cells = []
        for n in sizes:
            entry = per[method].get(n)
            if entry is None:
                cells.append("–")
            elif entry["runs_ok"]:
                cells.append(_cell(entry["peak_rss_gb_all"], 2))
            else:
                cells.append(("**" + (entry["failures"][0].split(":")[0] if entry["failures"] else "failed") + "**")
                             + (f" (≥{entry['peak_failed_gb']:.1f})" if entry.get("peak_failed_gb") else ""))
        a = per[method].get(min(sizes), {}).get("peak_rss_gb")
        b = per[method].get(max(sizes), {}).get("peak_rss_gb")
        add(f"| {METHOD_LABELS[method]} | " + " | ".join(cells) + f" | {_fmt(b / a if a and b else None, 2)} |")
    add("")
    add("Peak RSS split (median GB): before the iteration (loading, validation, heads) / during the iteration:")
    add("")
    add("| method | " + " | ".join(f"n={n}" for n in sizes) + " |")
    add("|---|" + "---|" * len(sizes))
    for method in method_order:
        cells = []
        for n in sizes:
            ok = [r for r in payload["runs"] if r["spec"].get("method") == method and r["spec"].get("n") == n and r.get("status") == "ok"]
            setup = _median([(r.get("peak_rss_setup_bytes") or 0) / GB for r in ok])
            it = _median([(r.get("peak_rss_iteration_bytes") or 0) / GB for r in ok])
            cells.append(f"{_fmt(setup, 2)} / {_fmt(it, 2)}" if ok else "–")
        add(f"| {METHOD_LABELS[method]} | " + " | ".join(cells) + " |")
    add("")
    for kind, title in (("iteration_s", "Wall time of one iteration (s) vs n"), ("iteration_cpu_s", "CPU time (user+sys, all threads) of one iteration (s) vs n"),
                        ("run_s", "Wall time of the whole run() with max_iters=1 (s) vs n")):
        add(f"## {title}")
        add("")
        add("| method | " + " | ".join(f"n={n}" for n in sizes) + " |")
        add("|---|" + "---|" * len(sizes))
        for method in method_order:
            add(f"| {METHOD_LABELS[method]} | " + " | ".join(_cell(per[method].get(n, {}).get(f"{kind}_all", []), 1) for n in sizes) + " |")
        ratios = []
        for n in sizes:
            ours = per.get("fw_soft", {}).get(n, {}).get(kind)
            theirs = per.get("intree_fw_soft", {}).get(n, {}).get(kind)
            ratios.append(_fmt(ours / theirs if ours and theirs else None, 2))
        add("| *ratio fw_soft / in-tree fw_soft* | " + " | ".join(ratios) + " |")
        add("")
    add("## Where the time goes (median seconds, harness-side method timers)")
    add("")
    add("| method | n | timers |")
    add("|---|---|---|")
    for method in method_order:
        for n in sizes:
            ok = [r for r in payload["runs"] if r["spec"].get("method") == method and r["spec"].get("n") == n and r.get("status") == "ok"]
            if not ok:
                continue
            keys = sorted({k for r in ok for k in (r.get("timers_s") or {})})
            text = ", ".join(f"{k} {_median([(r.get('timers_s') or {}).get(k) for r in ok]):.1f}" for k in keys)
            if method in OURS:
                prof = ok[0].get("profile") or {}
                text += "; profiler: " + ", ".join(f"{k} {v:.1f}" for k, v in prof.items())
            add(f"| {METHOD_LABELS[method]} | {n} | {text} |")
    add("")
    add("Note: `lmo_pass` / `assemble_selected` include their `checkpoint_read` time; `loss_and_grad` includes the inner loop's gradients.")
    add("")
    lmo = payload.get("lmo") or {}
    add("## One LMO pass vs just reading the checkpoints")
    add("")
    if summary["lmo_rows"]:
        add(f"Dedicated measurement (child process `lmo`): `score_vertices` over `PoolCheckpoints` of the first n fine-tuned checkpoints with a "
            f"gradient-like dict (random tensors; 1 row = fw_hard's LMO, 5 rows = fw_soft's with 4 objective tasks: total + one per task), "
            f"versus just reading the same files ({(lmo.get('bytes_per_checkpoint') or 0) / 1e6:.0f} MB each) two ways, both streaming every byte: `readinto` "
            f"with 1 MiB buffers and POSIX_FADV_SEQUENTIAL, and mmap (as safetensors does) + a float32 sum of the whole file; the ratio uses the faster of the two medians. "
            f"Measurements are interleaved (read, mmap, LMO 1 row, LMO 5 rows) within each repeat: cold reads from this VM's virtual disk "
            f"vary up to ~3x between repeats. "
            f"Cold: {lmo.get('eviction')}; warm: files read once just before. 'resident' = fraction of the files' pages in the page cache just "
            f"before the timed operation. Global `echo 3 > /proc/sys/vm/drop_caches`: {lmo.get('drop_caches')}. "
            f"Repeats: {payload['settings'].get('lmo_repeats')} (5-row pass: {payload['settings'].get('lmo5_repeats')}). Seconds.")
        add("")
        add("| n | cache | read (readinto) | read (mmap + sum) | LMO 1 row | LMO 5 rows | FW-soft pass (4 rows + derived total) | LMO1 / read | LMO5 / read | FW-soft / read | resident before (max) |")
        add("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in summary["lmo_rows"]:
            resident = [mm.get("resident_before") for mm in lmo["lmo_measurements"] if mm["n"] == row["n"] and mm["cache"] == row["cache"] and mm.get("resident_before") is not None]
            add(f"| {row['n']} | {row['cache']} | {_cell(row['read_bytes_all'], 2)} | {_cell(row.get('read_mmap_all') or [], 2)} | {_cell(row['lmo_1row_all'], 2)} | "
                f"{_cell(row['lmo_5rows_all'], 2)} | {_cell(row.get('lmo_soft_all') or [], 2)} | {_fmt(row.get('lmo_1row_over_read'), 2)} | "
                f"{_fmt(row.get('lmo_5rows_over_read'), 2)} | {_fmt(row.get('lmo_soft_over_read'), 2)} | "
                + (f"{max(resident):.3f} |" if resident else "? |"))
        add("")
        per_vertex = lmo.get("per_vertex_compute_s") or {}
        if per_vertex:
            add("Per-vertex arithmetic with the checkpoint already in memory (median of 2, seconds per checkpoint):")
            add("")
            add("| computation | s / checkpoint |")
            add("|---|---|")
            for label, value in per_vertex.items():
                add(f"| {label} | {value:.2f} |")
            add("")
    else:
        add("(not measured)")
        add("")
    if summary.get("lmo_in_run"):
        reads = {r["cache"]: r["read_s"] / r["n"] for r in summary["lmo_rows"] if r.get("read_s")}
        read_text = ", ".join(f"{cache} {v:.2f} s" for cache, v in reads.items())
        add(f"LMO pass inside the real runs (`score_vertices` timer, real gradients, n fine-tuned + the pretrained vertex); "
            f"raw read per checkpoint for comparison (median over the sizes measured): {read_text or '–'}.")
        add("")
        add("| method | n | vertices | LMO pass (s) | per vertex (s) | per vertex / cold read | per vertex / warm read |")
        add("|---|---|---|---|---|---|---|")
        cold = _median([r["read_s"] / r["n"] for r in summary["lmo_rows"] if r["cache"] == "cold" and r.get("read_s")])
        warm = _median([r["read_s"] / r["n"] for r in summary["lmo_rows"] if r["cache"] == "warm" and r.get("read_s")])
        for r in summary["lmo_in_run"]:
            add(f"| {METHOD_LABELS[r['method']]} | {r['n']} | {r['vertices']} | {r['lmo_pass_s']:.1f} | {r['per_vertex_s']:.2f} | "
                f"{_fmt(r['per_vertex_s'] / cold if cold else None, 1)} | {_fmt(r['per_vertex_s'] / warm if warm else None, 1)} |")
        add("")
    add("## In-tree fw_hard")
    add("")
    for run in payload["runs"]:
        if run["spec"].get("method") != "intree_fw_hard":
            continue
        add(f"- variant `{run['spec'].get('variant')}` (n={run['spec']['n']}): **{run.get('status')}**"
            + (f" — {run.get('error_type', '')}: {str(run.get('error', ''))[:400]}" if run.get("status") != "ok" else
               f" — peak {run['peak_rss_bytes'] / GB:.2f} GB, run {_fmt(run.get('run_s'))} s"))
        tail = (run.get("traceback_tail") or "").strip().splitlines()
        frames = [ln.strip() for ln in tail if ln.strip().startswith("File ")][-3:]
        if frames:
            add("  - last frames: " + " ← ".join(f"`{f}`" for f in reversed(frames)))
    add("")
    failures = [r for r in payload["runs"] if r.get("status") not in ("ok",) and r["spec"].get("method") != "intree_fw_hard"]
    if failures:
        add("## Failures, OOMs and skips (recorded as results)")
        add("")
        for r in failures:
            add(f"- {r['spec'].get('method')} n={r['spec'].get('n')} repeat {r['spec'].get('repeat')}: **{r.get('status')}** — {str(r.get('error', ''))[:300]}")
        add("")
    md_path.write_text("\n".join(lines) + "\n")
    _plot(summary, sizes, png_path, payload)


def write_gpu_report(payload: Dict[str, Any], md_path: Path) -> None:
    """The GPU run's short report: iteration/run times, host and GPU memory, the time-ratio target.

    Every method runs natively on the GPU here (the in-tree methods are not patched), so the CPU
    report's LMO-vs-read and CPU-time sections do not apply."""
    summary = summarize(payload)
    payload["summary"] = summary
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    per, sizes, s, m = summary["per_method"], payload["settings"]["sizes"], payload["settings"], payload["machine"]
    runs = [r for r in payload["runs"] if r.get("status") == "ok"]
    lines = [
        f"# One merging iteration on one GPU ({m.get('gpu', 'GPU')}) vs n, CLIP ViT-B/32 size", "",
        f"Generated by `benchmarks/cost_at_scale.py --accelerator cuda` ({payload.get('started')} → {payload.get('finished', 'unfinished')}).", "",
        f"Command: `{payload['command']}`", "",
        f"Machine: {m.get('gpu')}; host {m.get('cpu_model')}, {m.get('cpu_count')} cores, {m.get('mem_total_gib')} GiB RAM; "
        f"Python {m.get('python')}, torch {m.get('torch')}, fusion-bench {m.get('fusion_bench')}, transformers {m.get('transformers')}, lightning {m.get('lightning')}.", "",
        f"Settings: pool = the cost pool of `_cost_pool.py` (random ViT-B/32 weights, fine-tuned vision towers of 350 MB, written on "
        f"the GPU machine's local disk, page cache warm); objective {s['objective_tasks']} tasks x {s['samples_per_task']} samples; "
        f"max_iters=1; fw_soft inner_steps = in-tree ada_iters = {s['inner_steps']}; fw_hard task-wise, {s['line_search_evals']} line-search "
        f"evaluations. Every method runs with Fabric accelerator=cuda, devices=1; the in-tree FusionBench fw_soft runs unpatched (it is "
        f"written for CUDA). Timers call torch.cuda.synchronize at both ends. {s['threads']} torch CPU thread(s) per child. "
        "Cells: median [min-max] xruns.", "",
        "| method | n | iteration (s) | run() (s) | peak GPU memory (GB) | peak host RSS (GB) | where the iteration's time goes (median s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, by_n in per.items():
        for n in sorted(by_n):
            ok = [r for r in runs if r["spec"].get("method") == method and r["spec"].get("n") == n]
            timers = {key: _median([(r.get("timers_s") or {}).get(key) for r in ok]) for key in sorted({k for r in ok for k in (r.get("timers_s") or {})})}
            where = ", ".join(f"{key} {value:.2f}" for key, value in timers.items() if value is not None and key != "iteration")
            lines.append(
                f"| {METHOD_LABELS[method].replace(' (patched to CPU)', ' (native CUDA)')} | {n} | {_cell([r.get('iteration_s') for r in ok], 2)} | "
                f"{_cell([r.get('run_s') for r in ok], 2)} | {_cell([r.get('cuda_peak_allocated_bytes') for r in ok], 2, GB)} | "
                f"{_cell([r['peak_rss_bytes'] for r in ok], 2, GB)} | {where} |")
    failures = [f"{r['spec'].get('method')} n={r['spec'].get('n')}: {str(r.get('error'))[:300]}" for r in payload["runs"] if r.get("status") != "ok"]
    lines += ["", "## Targets (the CPU report's, measured here on the GPU)", "", "| target | measured | verdict |", "|---|---|---|"]
    # a memory ratio needs two pool sizes; the CPU-time target belongs to the CPU report
    shown = [t for t in summary["targets"] if "CPU time" not in t["target"] and not ("peak RSS" in t["target"] and len(set(sizes)) < 2)]
    lines += [f"| {t['target']} | {t['measured']} | **{t['verdict'] or '–'}** |" for t in shown]
    if failures:
        lines += ["", "## Failed runs", ""] + [f"- {f}" for f in failures]
    md_path.write_text("\n".join(lines) + "\n")


def _analysis(payload: Dict[str, Any], summary: Dict[str, Any]) -> List[str]:
    """Plain-language reading of the numbers (computed, so it follows the data of this run)."""
    out: List[str] = []
    per = summary["per_method"]
    sizes = payload["settings"]["sizes"]

    def runs(method, n):
        return [r for r in payload["runs"] if r["spec"].get("method") == method and r["spec"].get("n") == n and r.get("status") == "ok"]

    def timer(method, n, key):
        return _median([(r.get("timers_s") or {}).get(key, 0.0) for r in runs(method, n)])

    # memory
    for method in ("fw_hard", "fw_soft", "intree_fw_soft", "adamerging"):
        a, b = per.get(method, {}).get(min(sizes), {}).get("peak_rss_gb"), per.get(method, {}).get(max(sizes), {}).get("peak_rss_gb")
        if a and b:
            slope = (b - a) / (max(sizes) - min(sizes))
            out.append(f"- Memory, {METHOD_LABELS[method]}: {a:.2f} GB at n={min(sizes)} → {b:.2f} GB at n={max(sizes)}, "
                       f"{slope * 1000:+.0f} MB per extra model (one checkpoint is {payload['settings'].get('pool_bytes_per_checkpoint', 0) / 1e6:.0f} MB).")
    out.append("  Ours stays flat because checkpoints are streamed one at a time; what it holds is independent of n: the model, θ0 and θt, "
               "the gradient rows (1 for fw_hard; total + one per objective task for fw_soft) and, for fw_soft, the k selected vertices of the inner problem. "
               "The in-tree fw_soft keeps every fine-tuned model in memory; AdaMerging builds a layer-wise wrapper over all n task vectors.")
    # time: fw_soft vs in-tree
    for n in (min(sizes), max(sizes)):
        if not runs("fw_soft", n) or not runs("intree_fw_soft", n):
            continue
        it = per["fw_soft"][n]["iteration_s"]
        grads, fwd = timer("fw_soft", n, "loss_and_grad"), timer("fw_soft", n, "loss_only")
        lmo, asm = timer("fw_soft", n, "lmo_pass"), timer("fw_soft", n, "assemble_selected")
        rest = it - grads - fwd - lmo - asm
        summary_counts = (runs("fw_soft", n)[0].get("fw_summary") or {})
        it2 = per["intree_fw_soft"][n]["iteration_s"]
        g2, l2, in2 = timer("intree_fw_soft", n, "gradient"), timer("intree_fw_soft", n, "lmo_pass"), timer("intree_fw_soft", n, "inner_loop")
        out.append(f"- Time, n={n} (medians): ours fw_soft {it:.1f} s = gradients {grads:.1f} s + forward-only objective evaluations {fwd:.1f} s "
                   f"(descent probe + final loss) + LMO pass {lmo:.1f} s + reading the selected/probed checkpoints {asm:.1f} s + the rest {rest:.1f} s "
                   f"(simplex steps, combining points, bookkeeping); {summary_counts.get('backward_passes', '?')} backward and "
                   f"{summary_counts.get('forward_passes', '?')} forward mini-batch passes. In-tree fw_soft {it2:.1f} s = gradients {g2:.1f} s "
                   f"(one sample at a time) + LMO {l2:.1f} s (cosine against every in-memory model, once per task) + AdaMerging inner loop {in2:.1f} s "
                   f"(its forward/backward passes and weight merges). With a free LMO and free checkpoint reads ours would still take "
                   f"{(grads + fwd) / it2:.2f}× the in-tree iteration: at equal samples and iterations both are dominated by the same "
                   f"forward/backward work, and ours does extra forward-only passes (the descent probe, `probe_step`, evaluates each selected "
                   f"vertex; the inner loop re-evaluates its last iterate), so the 1/3 target cannot be reached by I/O or LMO work.")
    lmo = payload.get("lmo") or {}
    pv = lmo.get("per_vertex_compute_s") or {}

    def pick(prefix):
        return next((v for k, v in pv.items() if k.strip().startswith(prefix)), None)

    one, five = pick("score_vertices 1 row"), pick("score_vertices 5 rows")
    f32, mv = pick("float32 dot"), pick("float32 one matvec")
    rows = {(r["n"], r["cache"]): r for r in summary.get("lmo_rows", [])}
    if five and mv:
        from fusion_bench_fw.frank_wolfe.lmo import BLOCK_GROUP

        floors = []
        for n in sorted({r[0] for r in rows}):
            groups = -(-n // BLOCK_GROUP)  # every group reads every row once
            floors.append(f"n={n}: {(n + groups * 4 + 1) / n:.2f}x with 4 rows, {(n + groups * 5 + 1) / n:.2f}x with 5")
        out.append(
            f"- LMO with several gradient rows (fw_soft), CPU: the pass is block-major (`lmo.py`): per parameter, a group of up to {BLOCK_GROUP} "
            "checkpoints is read slice by slice and multiplied with all rows at once, theta riding along as one more column of the first "
            "group. fw_soft reads its per-task rows only and derives the total row's products from them (column 'FW-soft pass', 4 rows for "
            "4 tasks; 'LMO 5 rows' also reads the total row). Warm, the pass is bound by memory traffic: every group reads its checkpoints' "
            "bytes once plus every row and theta once, so it cannot go below (n + groups x rows + 1) / n of the raw read: "
            + "; ".join(floors) + ". At n=4 the 2x target is out of reach for a 4-task fw_soft by that count alone. For scale, with one "
            f"checkpoint in memory (vertex-major, no block reader): one pass takes {five:.2f} s with 5 rows and {one:.2f} s with 1 row, one "
            f"matvec per block over 5 stacked rows {mv:.2f} s, a bare float32 dot {f32:.2f} s per checkpoint. Cold, the disk dominates.")
    small = rows.get((min(r[0] for r in rows), "cold")) if rows else None
    if small and small.get("lmo_1row_over_read") and small["lmo_1row_over_read"] > 2:
        out.append(f"- The 1-row pass (fw_hard) streams each checkpoint through safetensors' memory map, vertex-major; cold at n={small['n']} "
                   f"it took {small['lmo_1row_over_read']:.2f}x the faster raw read, whose cold times on this VM's disk varied "
                   f"{min(small['read_bytes_all'] + (small.get('read_mmap_all') or [])):.2f}-{max(small['read_bytes_all'] + (small.get('read_mmap_all') or [])):.2f} s "
                   "between repeats and methods: page-fault reads of a memory map against 1 MiB sequential reads. (Asking the kernel to read "
                   "the next checkpoint ahead with posix_fadvise(WILLNEED) made the cold 1-row pass at n=4 4.3x slower here in an A/B test (5.60 s vs 1.29 s), so it is not done.)")
    if runs("fw_hard", max(sizes)):
        val = timer("fw_hard", max(sizes), "validate_pass")
        run_s = per["fw_hard"][max(sizes)]["run_s"]
        out.append(f"- Setup: the checkpoint validation pass (`validate_checkpoints`, an isfinite check over every checkpoint) took {val:.1f} s of "
                   f"fw_hard's {run_s:.1f} s run() at n={max(sizes)}, more than its iteration; it is a second full pass over all n checkpoints per run.")
    return out


def _plot(summary, sizes, png_path: Path, payload) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as error:  # pragma: no cover
        print(f"no plot: {error}")
        return
    per = summary["per_method"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    markers = {"fw_hard": "o", "fw_soft": "s", "intree_fw_soft": "^", "adamerging": "D"}
    for method, by_n in per.items():
        xs = [n for n in sizes if by_n.get(n, {}).get("peak_rss_gb")]
        axes[0].plot(xs, [by_n[n]["peak_rss_gb"] for n in xs], marker=markers.get(method, "x"), label=METHOD_LABELS[method])
        failed = [n for n in sizes if n in by_n and not by_n[n]["runs_ok"]]
        for n in failed:
            value = by_n[n].get("peak_failed_gb")
            if value:
                axes[0].scatter([n], [value], marker="x", color="red", zorder=5)
                axes[0].annotate("killed/OOM", (n, value), textcoords="offset points", xytext=(4, 4), fontsize=8, color="red")
        xs_t = [n for n in sizes if by_n.get(n, {}).get("iteration_s")]
        axes[1].plot(xs_t, [by_n[n]["iteration_s"] for n in xs_t], marker=markers.get(method, "x"), label=METHOD_LABELS[method])
    mem = payload["machine"].get("mem_total_gib")
    if mem:
        axes[0].axhline(mem, color="grey", linestyle="--", linewidth=1)
        axes[0].text(sizes[0], mem, f" machine RAM {mem} GiB", va="bottom", fontsize=8, color="grey")
    axes[0].set_xlabel("models in the pool (n)")
    axes[0].set_ylabel("peak RSS of the run (GB)")
    axes[0].set_title("Peak memory vs n (CLIP ViT-B/32, 350 MB/checkpoint)")
    axes[0].set_ylim(bottom=0)
    axes[1].set_xlabel("models in the pool (n)")
    axes[1].set_ylabel("seconds")
    axes[1].set_title("Wall time of one iteration / step (median)")
    axes[1].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    m = payload["machine"]
    head = str((payload.get("package_snapshot") or {}).get("git_head") or "")[:7]
    fig.suptitle(f"{m.get('cpu_count')} cores ({m.get('cpu_model')}), {m.get('mem_total_gib')} GiB, torch {m.get('torch')}, CPU only, "
                 f"1 iteration / step, {payload['settings'].get('threads', '?')} thread(s)" + (f"; fusion_bench_fw @ {head}" if head else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(str(png_path), dpi=120)
    plt.close(fig)


# ================================================================================================
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/fw_cost_pool", help="pool cache (built once, ~7.6 GB)")
    parser.add_argument("--quick", action="store_true", help="smoke run: n in {2, 4}, 1 repeat, LMO at n=4 only")
    parser.add_argument("--sizes", default="4,8,12,16,20")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats at --repeat-sizes (other n: 1 run)")
    parser.add_argument("--repeat-sizes", default="4,20")
    parser.add_argument("--repeat-methods", default="fw_soft,intree_fw_soft", help="methods timed --repeats times at --repeat-sizes (the time target's pair)")
    parser.add_argument("--ada-repeats", type=int, default=1, help="AdaMerging runs at --repeat-sizes")
    parser.add_argument("--lmo-sizes", default="4,20", help="n for the LMO-vs-read measurement")
    parser.add_argument("--read-sizes", default="", help="n where only the raw read is measured (compare with the in-run LMO timers)")
    parser.add_argument("--lmo-repeats", type=int, default=3)
    parser.add_argument("--lmo5-repeats", type=int, default=3, help="repeats of the 5-row (fw_soft) LMO pass")
    parser.add_argument("--samples-per-task", type=int, default=2)
    parser.add_argument("--inner-steps", type=int, default=3, help="fw_soft inner_steps = in-tree fw_soft ada_iters")
    parser.add_argument("--line-search-evals", type=int, default=4)
    parser.add_argument("--methods", default="fw_hard,fw_soft,intree_fw_soft,intree_fw_hard,adamerging")
    parser.add_argument("--accelerator", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: every method runs on one GPU (Fabric accelerator=cuda; the in-tree methods unpatched)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per child (1: stable timings on a shared machine)")
    parser.add_argument("--skip-lmo", action="store_true")
    parser.add_argument("--ada-skip-gb", type=float, default=18.0)
    parser.add_argument("--mem-guard-gb", type=float, default=21.5, help="kill a child whose RSS passes this")
    parser.add_argument("--min-available-gb", type=float, default=1.5, help="kill a child when the machine's MemAvailable drops below this")
    parser.add_argument("--child-timeout", type=float, default=1200)
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    parser.add_argument("--log-dir", default="/tmp/fw_cost_logs")
    parser.add_argument("--scratch-dir", default="/tmp/fw_cost_runs")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--redo-lmo", action="store_true", help="re-measure only the LMO-vs-read part of the existing result file")
    parser.add_argument("--append-repeats", type=int, default=0, help="add N timing repeats (of --repeat-methods at --repeat-sizes) to the existing result file")
    parser.add_argument("--no-snapshot", action="store_true", help="children import the live tree instead of a frozen copy")
    parser.add_argument("--child-spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_spec:
        child_main(json.loads(args.child_spec))
        return
    parent_main(args)


if __name__ == "__main__":
    main()
