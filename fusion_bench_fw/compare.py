"""Comparison harness: every method through FusionBench's own CLI on one pool, one table.

Each method runs as ``fusion_bench method=... modelpool=... taskpool=...`` in a subprocess (the
exact command is recorded), so our numbers and the baselines' come from the same program, taskpool
and evaluation code. Output: JSON, a markdown table in the style of the paper's Table 2 and a PNG
bar chart.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

FUSION_BENCH = str(Path(sys.executable).with_name("fusion_bench"))


def failure_line(stderr: str) -> str:
    """The exception line of a failed run's stderr (Hydra ends it with a hint about HYDRA_FULL_ERROR)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    raised = [line for line in lines if line.split(":")[0].endswith(("Error", "Exception", "Interrupt"))]
    return (raised or lines or ["(no stderr)"])[-1]


@dataclass
class MethodSpec:
    label: str
    overrides: List[str]
    launcher: Optional[List[str]] = None  # instead of the fusion_bench command (same Hydra program)
    report_key: Optional[str] = None  # for methods returning several models: the one whose report is the row


def method_specs(eval_tasks: Sequence[str], *, fw_iters: int, samples_per_task: int, adamerging_steps: int, inner_steps: int, df_merge_steps: Sequence[int] = (10, 50)) -> Dict[str, MethodSpec]:
    """The methods and the settings they run with (paper settings where they apply)."""
    tasks = "[" + ",".join(eval_tasks) + "]"
    on_cpu = not _has_cuda()
    adamerging = ["method=adamerging/clip", f"method.max_steps={adamerging_steps}", "method.batch_size=16", "method.num_workers=0", "method.save_merging_weights=false"]
    adamerging_objective = ["method=adamerging_objective", f"method.objective_tasks={tasks}"] + adamerging[1:]
    return {
        "pretrained": MethodSpec("Pretrained (zero-shot)", ["method=dummy"]),
        "simple_average": MethodSpec("Weight averaging", ["method=simple_average"]),
        "task_arithmetic": MethodSpec("Task arithmetic (0.3)", ["method=task_arithmetic", "method.scaling_factor=0.3"]),
        "ties_merging": MethodSpec("TIES-merging (0.3)", ["method=ties_merging", "method.scaling_factor=0.3"]),
        # FusionBench's default: entropy on the test images of every pool task
        "adamerging_task": MethodSpec("AdaMerging task-wise (entropy: all tasks)", adamerging + ["method.name=clip_task_wise_adamerging"]),
        "adamerging_layer": MethodSpec("AdaMerging layer-wise (entropy: all tasks)", adamerging + ["method.name=clip_layer_wise_adamerging"]),
        # the paper's fair setting (§4.1): entropy on the objective tasks only, every model merged
        "adamerging_task_objective": MethodSpec("AdaMerging task-wise (entropy: objective tasks)", adamerging_objective + ["method.name=clip_task_wise_adamerging"]),
        "adamerging_layer_objective": MethodSpec("AdaMerging layer-wise (entropy: objective tasks)", adamerging_objective + ["method.name=clip_layer_wise_adamerging"]),
        # FusionBench's Concrete subspace merging: a task-arithmetic mask learnt by entropy on the test images of every pool task
        "concrete_ta": MethodSpec(f"Concrete task arithmetic (entropy: all tasks, {adamerging_steps} steps)",
                                  ["method=concrete_subspace/clip_concrete_task_arithmetic", f"method.max_steps={adamerging_steps}",
                                   "method.num_workers=0", f"method.save_interval={adamerging_steps + 1}"]),
        "concrete_ta_objective": MethodSpec(f"Concrete task arithmetic (entropy: objective tasks, {adamerging_steps} steps)",
                                            ["method=concrete_objective", f"method.objective_tasks={tasks}", f"method.max_steps={adamerging_steps}",
                                             f"method.save_interval={adamerging_steps + 1}"]),
        # FusionBench's AdaMerging + Representation Surgery: AdaMerging as above, then per-task feature
        # adapters fitted to each fine-tuned model's features on the same test images; the row is the
        # surgery model (evaluation every surgery_steps + 1 steps: never mid-run)
        "surgery": MethodSpec(f"AdaMerging + Surgery layer-wise (test images of all tasks, {adamerging_steps}+{adamerging_steps} steps)",
                              ["method=surgery/adamerging_surgery", *adamerging[1:], f"method.surgery_steps={adamerging_steps}", f"method.eval_iterations={adamerging_steps + 1}"],
                              report_key="surgery"),
        "surgery_objective": MethodSpec(f"AdaMerging + Surgery layer-wise (test images of objective tasks, {adamerging_steps}+{adamerging_steps} steps)",
                                        ["method=surgery_objective", f"method.objective_tasks={tasks}", *adamerging[1:], f"method.surgery_steps={adamerging_steps}",
                                         f"method.eval_iterations={adamerging_steps + 1}"], report_key="surgery"),
        # FusionBench's data-informed merges: statistics of each model on its own task's train split,
        # so they see 256 images of every pool task (5x the tasks FW-Merging's objective sees on TA20)
        "fisher_merging": MethodSpec("Fisher merging (256 train images of every pool task)", ["method=fisher_merging/clip_fisher_merging", "method.num_fisher_examples=256"]),
        "regmean": MethodSpec("RegMean (256 train images of every pool task)", ["method=regmean/clip_regmean", "method.num_regmean_examples=256"]),
        "regmean_plusplus": MethodSpec("RegMean++ (256 train images of every pool task)", ["method=regmean_plusplus_clip", "method.num_regmean_examples=256"]),
        # the same for GPT-2 text classifiers (FusionBench's gpt2 configs: 256 train rows of every pool task)
        "fisher_merging_gpt2": MethodSpec("Fisher merging (256 train rows of every pool task)", ["method=fisher_merging/gpt2_fisher_merging", "method.num_fisher_examples=256"]),
        "regmean_gpt2": MethodSpec("RegMean (256 train rows of every pool task)", ["method=regmean/gpt2_regmean", "method.num_regmean_examples=256"]),
        "dare_task_arithmetic": MethodSpec("DARE + task arithmetic (drop 0.5, 0.3)", ["method=dare/task_arithmetic", "method.sparsity_ratio=0.5", "method.scaling_factor=0.3"]),
        "dare_ties": MethodSpec("DARE + TIES (drop 0.5, 0.3)", ["method=dare/ties_merging", "method.sparsity_ratio=0.5", "method.scaling_factor=0.3"]),
        # DF-Merge (ours): the same train samples per eval task as FW-Merging, Fisher on 30 of them
        "df_merge": MethodSpec(
            f"DF-Merge (ours; BO {df_merge_steps[0]}+{df_merge_steps[1]}, {samples_per_task} train samples per eval task)",
            ["method=df_merge", f"method.init_points={df_merge_steps[0]}", f"method.n_iter={df_merge_steps[1]}", f"method.samples_per_task={samples_per_task}",
             f"method.fisher_samples_per_task={min(30, samples_per_task)}", f"method.fisher_batch_size={min(30, samples_per_task)}", f"method.objective_tasks={tasks}"],
        ),
        # references, not merges: one tower fine-tuned jointly on the eval tasks (the paper's "traditional MTL")
        "mtl_samples": MethodSpec(f"Multi-task fine-tuning ({samples_per_task} train samples per eval task; not a merge)",
                                  ["method=multitask_finetune", f"method.samples_per_task={samples_per_task}", f"method.objective_tasks={tasks}"]),
        "mtl_full": MethodSpec("Multi-task fine-tuning (whole train splits of the eval tasks; not a merge)",
                               ["method=multitask_finetune", "method.samples_per_task=null", f"method.objective_tasks={tasks}"]),
        "fw_hard": MethodSpec(
            "FW-hard (ours)",
            ["method=fw_hard", f"method.max_iters={fw_iters}", f"method.samples_per_task={samples_per_task}", f"method.objective_tasks={tasks}"],
        ),
        # the paper's setting for language models: layer-wise FW-hard from task arithmetic
        "fw_hard_from_ta": MethodSpec(
            "FW-hard from task arithmetic (ours)",
            ["method=fw_hard", f"method.max_iters={fw_iters}", f"method.samples_per_task={samples_per_task}", f"method.objective_tasks={tasks}", "method.init=task_arithmetic"],
        ),
        "fw_soft": MethodSpec(
            "FW-soft (ours)",
            ["method=fw_soft", f"method.max_iters={fw_iters}", f"method.samples_per_task={samples_per_task}", f"method.inner_steps={inner_steps}", f"method.objective_tasks={tasks}"],
        ),
        # FusionBench's own FW-Merging at the same iterations, samples and inner steps, from the
        # pretrained model; it needs CUDA, so on a CPU its .cuda() calls are made no-ops
        "intree_fw_soft": MethodSpec(
            "In-tree FusionBench fw_soft" + (" (.cuda() made a no-op)" if on_cpu else ""),
            ["method=fw_merging/fw_soft", f"method.max_iters={fw_iters}", f"method.dataset_size={samples_per_task}", f"method.ada_iters={inner_steps}", f"method.tasks={tasks}", "method.init_weight=base"],
            launcher=[sys.executable, "-m", "fusion_bench_fw.intree_on_cpu"] if on_cpu else None,
        ),
    }


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class RunResult:
    method: str
    label: str
    command: str
    seconds: float
    accuracy: Dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None
    commit: Optional[str] = None  # of the code that produced the row (source_commit)


# the code a benchmark number depends on: uncommitted changes here make a commit "+dirty"
CODE_PATHS = ["fusion_bench_fw", "config", "hydra_plugins", "benchmarks/*.py", "benchmarks/harness"]
REPO_ROOT = Path(__file__).resolve().parents[1]


def source_commit(tree: Path = REPO_ROOT) -> str:
    """Short HEAD of the checkout this code runs from, "+dirty" when its code differs from HEAD;
    "unknown" for an installed copy outside a git checkout."""
    git = lambda *a: subprocess.run(["git", "-C", str(tree), *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS) else "")


def run_method(name: str, spec: MethodSpec, *, modelpool: str, taskpool: str, out_dir: Path, extra: Sequence[str] = ()) -> RunResult:
    log_dir = out_dir / "runs" / name
    command = [*(spec.launcher or [FUSION_BENCH]), *spec.overrides, f"modelpool={modelpool}", f"taskpool={taskpool}", f"path.log_dir={log_dir}", "print_config=false", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "stdout.txt").write_text(proc.stdout)
    (log_dir / "stderr.txt").write_text(proc.stderr)
    shown = shlex.join(["python", *command[1:]] if spec.launcher else ["fusion_bench", *command[1:]])
    if proc.returncode != 0:
        return RunResult(name, spec.label, shown, seconds, error=f"exit {proc.returncode}: {failure_line(proc.stderr)}")
    report = json.loads((log_dir / "program_report.json").read_text())
    if spec.report_key is not None:
        report = report[spec.report_key]
    accuracy = {task: float(value["accuracy"]) for task, value in report.items() if isinstance(value, dict) and "accuracy" in value and task != "average"}
    return RunResult(name, spec.label, shown, seconds, accuracy=accuracy)


def machine_description() -> Dict[str, str]:
    import torch

    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = float("nan")
    return {
        "platform": platform.platform(),
        "cpu_cores": str(os.cpu_count()),
        "memory_gib": f"{memory_gib:.1f}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": str(torch.cuda.is_available()),
    }


def normalised_score(accuracy: Mapping[str, float], reference: Mapping[str, float], tasks: Sequence[str]) -> float:
    """The paper's normalised score: accuracy on each task over that task's own fine-tune's, averaged."""
    return sum(accuracy[t] / reference[t] for t in tasks) / len(tasks)


def markdown_table(results: Sequence[RunResult], tasks: Sequence[str], extra_rows: Sequence[tuple] = (),
                   normalise_by: Optional[Mapping[str, float]] = None) -> str:
    """One row per method; with ``normalise_by`` (each task's fine-tuned accuracy) a normalised-score column."""
    norm = normalise_by is not None and all(normalise_by.get(t) for t in tasks)
    header = "| Method | " + " | ".join(tasks) + " | Avg. |" + (" Norm. |" if norm else "") + " Time (s) |"
    lines = [header, "|" + "---|" * (len(tasks) + 3 + int(norm))]
    norm_cell = lambda accuracy: f" {100 * normalised_score(accuracy, normalise_by, tasks):.1f} |" if norm else ""  # noqa: E731
    for label, accuracy in extra_rows:
        cells = [f"{100 * accuracy[t]:.1f}" if t in accuracy else "-" for t in tasks]
        complete = all(t in accuracy for t in tasks)
        avg = sum(accuracy[t] for t in tasks) / len(tasks) if complete else None
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'-' if avg is None else f'{100 * avg:.1f}'} |"
                     + (norm_cell(accuracy) if complete else (" - |" if norm else "")) + " - |")
    for result in results:
        if result.error:
            lines.append(f"| {result.label} | " + " | ".join("-" for _ in tasks) + f" | failed: {result.error[:60]} |" + (" - |" if norm else "") + f" {result.seconds:.0f} |")
            continue
        cells = [f"{100 * result.accuracy.get(t, float('nan')):.1f}" for t in tasks]
        avg = average(result, tasks)
        lines.append(f"| {result.label} | " + " | ".join(cells) + f" | **{100 * avg:.1f}** |" + norm_cell(result.accuracy) + f" {result.seconds:.0f} |")
    return "\n".join(lines)


def average(result: RunResult, tasks: Sequence[str]) -> float:
    return sum(result.accuracy[t] for t in tasks) / len(tasks)


def bar_chart(results: Sequence[RunResult], tasks: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if not r.error]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(ok), 3.6))
    values = [100 * average(r, tasks) for r in ok]
    bars = ax.bar(range(len(ok)), values, color=["#c0392b" if r.method.startswith("fw_") else "#7f8c8d" for r in ok])
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(ok)), [textwrap.fill(r.label, 16) for r in ok], fontsize=7)
    ax.set_ylabel("avg. accuracy on eval tasks (%)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
