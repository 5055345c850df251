"""The stock `fusion_bench` CLI on the mini T5 GLUE pools (full fine-tunes and LoRA adapters), micro variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_algorithms import run_cli

pytestmark = pytest.mark.slow


def pool_args(lora: bool):
    suffix = "_lora16" if lora else ""
    return [f"modelpool=mini-glue-t5_micro{suffix}", "taskpool=mini-glue-t5_micro"]


def run_on_pool(overrides, lora: bool, log_dir: Path, cache_dir: Path) -> dict:
    return run_cli([*overrides, *pool_args(lora)], log_dir, cache_dir, cwd=log_dir.parent)


def test_the_micro_card_has_learnt_tasks_and_interference(t5_micro_card):
    """The pool is worth testing on: every fine-tune (full and LoRA) beats the untuned base by a margin, and
    task arithmetic over the eval-task models beats it over all models (interference)."""
    for task, row in t5_micro_card["tasks"].items():
        assert row["full"] >= row["base"] + 0.5 and row["lora"] >= row["base"] + 0.4, (task, row)
    for kind, rows in t5_micro_card["task_arithmetic"].items():
        assert max(r["relevant"] for r in rows) >= max(r["all"] for r in rows) + 0.2, kind


def test_generation_exact_match_equals_the_cards_teacher_forced_score(t5_micro_dir, t5_micro_card):
    """The taskpool's greedy-generation exact match of each fine-tune equals the card's one-pass count."""
    from fusion_bench_fw.mini_t5.pools import MiniT5GluePool, MiniT5GlueTaskPool

    cache = t5_micro_dir.parent
    taskpool = MiniT5GlueTaskPool("micro", tasks="all", cache_dir=str(cache))
    for lora in (False, True):
        pool = MiniT5GluePool("micro", lora=lora, cache_dir=str(cache))
        for task in ("qa_match", "topic"):
            report = taskpool.evaluate(pool.load_model(task))
            assert report[task]["accuracy"] == pytest.approx(t5_micro_card["tasks"][task]["lora" if lora else "full"], abs=1e-9), (lora, task)


@pytest.mark.parametrize("method,lora,overrides", [
    ("fw_hard", False, ["method.samples_per_task=32", "method.max_iters=5"]),
    ("fw_hard", True, ["method.samples_per_task=32", "method.max_iters=5"]),
    ("fw_soft", True, ["method.max_iters=3", "method.samples_per_task=32", "method.inner_steps=4"]),
])
def test_fw_merging_streams_every_checkpoint_and_keeps_the_objective_tasks(method, lora, overrides, t5_micro_dir, t5_micro_card, tmp_path):
    log_dir = tmp_path / "run"
    report = run_on_pool([f"method={method}", *overrides], lora, log_dir, t5_micro_dir.parent)
    n_tasks = len(t5_micro_card["tasks"])
    eval_tasks = t5_micro_card["eval_tasks"]
    trajectory = json.loads((log_dir / "fw_trajectory.json").read_text())
    summary = trajectory["summary"]
    assert summary["model_family"] == "seq2seq"
    # full: base + every fine-tune on the safetensors reader; LoRA: base on it, each adapter's B@A streamed
    expected = {"safetensors": 1, "pool_loader": 0, "lora_adapter": n_tasks} if lora else {"safetensors": 1 + n_tasks, "pool_loader": 0}
    assert summary["readers"] == expected
    assert trajectory["config"]["objective_tasks_resolved"] == eval_tasks
    kind = "lora" if lora else "full"
    if method == "fw_soft":
        assert set(trajectory["iterations"][0]["selected"]) <= set(eval_tasks) | {"_pretrained_"}
    else:
        chosen = Counter(m for m in trajectory["iterations"][0]["selected"] if m != "_pretrained_")
        assert chosen.most_common(1)[0][0] in eval_tasks, chosen
    ta_all = max(r["all"] for r in t5_micro_card["task_arithmetic"][kind])
    for task in eval_tasks:
        base, tuned = t5_micro_card["tasks"][task]["base"], t5_micro_card["tasks"][task][kind]
        assert set(report[task]) >= {"accuracy", "loss"}
        assert report[task]["accuracy"] >= base + 0.5 * (tuned - base), (task, report[task], base, tuned)
    # and above task arithmetic over all models at its best coefficient
    assert report["average"]["accuracy"] > ta_all, (report["average"], ta_all)


@pytest.mark.parametrize("lora", [False, True])
def test_stock_task_arithmetic_matches_the_pool_card(lora, t5_micro_dir, t5_micro_card, tmp_path):
    """FusionBench's task arithmetic (on the LoRA pool: over PEFT-merged models) scores what the card gives."""
    kind = "lora" if lora else "full"
    row = next(r for r in t5_micro_card["task_arithmetic"][kind] if r["scaling"] == 0.3)
    report = run_on_pool(["method=task_arithmetic", "method.scaling_factor=0.3"], lora, tmp_path / "ta", t5_micro_dir.parent)
    assert report["average"]["accuracy"] == pytest.approx(row["all"], abs=1e-6)


def test_compare_on_the_lora_pool_normalises_by_the_lora_fine_tunes(t5_micro_dir, t5_micro_card, tmp_path):
    """`fusion_bench_fw compare --pool t5-micro-lora`: the normalised score divides by each task's LoRA fine-tune
    (the card's lora column, not the full one)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", FUSION_BENCH_FW_CACHE=str(t5_micro_dir.parent))
    out = tmp_path / "cmp"
    command = [sys.executable, "-m", "fusion_bench_fw.cli", "compare", "--pool", "t5-micro-lora", "--methods", "task_arithmetic", "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = json.loads((out / "compare.json").read_text())
    assert table["eval_tasks"] == t5_micro_card["eval_tasks"]
    ta = table["results"][0]["accuracy"]
    tasks = table["eval_tasks"]
    expected = sum(ta[t] / t5_micro_card["tasks"][t]["lora"] for t in tasks) / len(tasks)
    text = (out / "compare.md").read_text()
    assert f"| {100 * expected:.1f} |" in text
    assert "| Individual fine-tuned (pool card) | " + " | ".join(f"{100 * t5_micro_card['tasks'][t]['lora']:.1f}" for t in tasks) in text


def test_individual_scores_read_the_column_of_the_pools_kind(t5_micro_card):
    from fusion_bench_fw.cli import individual_scores

    tasks = ["topic"]  # full 0.88 vs LoRA 0.525 on the micro card
    assert individual_scores("t5-micro-lora", t5_micro_card, tasks) == {"topic": t5_micro_card["tasks"]["topic"]["lora"]}
    assert individual_scores("t5-micro", t5_micro_card, tasks) == {"topic": t5_micro_card["tasks"]["topic"]["full"]}
    assert t5_micro_card["tasks"]["topic"]["lora"] != t5_micro_card["tasks"]["topic"]["full"]
