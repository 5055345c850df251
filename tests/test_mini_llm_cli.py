"""The stock `fusion_bench` CLI on the mini causal-LM pool (micro variant; subprocesses, offline)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from test_algorithms import run_cli

pytestmark = pytest.mark.slow

POOL = ["modelpool=mini-llm_micro", "taskpool=mini-llm_micro"]


def run_on_pool(overrides, log_dir: Path, cache_dir: Path) -> dict:
    """The stock CLI on the micro LLM pool, from outside the repo (our configs via the search-path plugin)."""
    return run_cli([*overrides, *POOL], log_dir, cache_dir, cwd=log_dir.parent)


@pytest.mark.parametrize("method,overrides", [
    ("fw_hard", ["method.max_iters=2", "method.samples_per_task=32", "method.line_search_evals=4"]),
    ("fw_soft", ["method.max_iters=2", "method.samples_per_task=32", "method.inner_steps=4"]),
])
def test_fw_merging_on_the_llm_pool_selects_the_objective_task_first(method, overrides, llm_micro_dir, llm_micro_card, tmp_path):
    log_dir = tmp_path / "run"
    report = run_on_pool([f"method={method}", *overrides], log_dir, llm_micro_dir.parent)
    eval_tasks = llm_micro_card["eval_tasks"]
    assert eval_tasks == ["reverse"]
    # exact match and response CE per task, from our taskpool
    assert set(report["reverse"]) >= {"accuracy", "loss"}
    trajectory = json.loads((log_dir / "fw_trajectory.json").read_text())
    # FW-hard (layer-wise): {model: blocks whose LMO chose it}; FW-soft: one model per objective task
    first = trajectory["iterations"][0]["selected"]
    counts = Counter(first)  # a dict already holds counts
    assert counts.most_common(1)[0][0] == "reverse", first
    assert trajectory["config"]["objective_tasks_resolved"] == ["reverse"]
    # the base model solves nothing (card: 0 %); the merge solves part of the task, as its fine-tune does
    assert llm_micro_card["tasks"]["reverse"]["base"] == 0.0
    assert report["reverse"]["accuracy"] >= 0.5 * llm_micro_card["tasks"]["reverse"]["finetuned"] > 0.05, report


def test_stock_task_arithmetic_matches_the_pool_card(llm_micro_dir, llm_micro_card, tmp_path):
    """FusionBench's task arithmetic over all micro models (the LoRA one merged on load by FusionBench's
    load_peft_causal_lm) scores what the card's own formula over streamed LoRA deltas scores."""
    report = run_on_pool(["method=task_arithmetic", "method.scaling_factor=1.0"], tmp_path / "ta", llm_micro_dir.parent)
    row = next(r for r in llm_micro_card["task_arithmetic"] if r["scaling"] == 1.0)
    one_sample = 1.0 / 48
    assert report["reverse"]["accuracy"] == pytest.approx(row["all"], abs=1.5 * one_sample)
    report = run_on_pool(["method=task_arithmetic", "method.scaling_factor=1.0", "modelpool.tasks=[reverse]"], tmp_path / "ta1", llm_micro_dir.parent)
    assert report["reverse"]["accuracy"] == pytest.approx(row["relevant"], abs=1.5 * one_sample)


def test_a_lazily_loading_pool_merges_as_an_eager_one(llm_micro_dir):
    """FusionBench's shipped LLM pools set enable_lazy_loading: the base is then loaded whole for the merge
    (a LazyStateDict is no module), the fine-tunes streamed as always, and the merge is the same."""
    import lightning as L
    import torch

    from fusion_bench_fw import FWHard
    from fusion_bench_fw.mini_llm.pools import MiniCausalLMPool

    merged = {}
    for lazy in (False, True):
        pool = MiniCausalLMPool(variant="micro", cache_dir=str(llm_micro_dir.parent), enable_lazy_loading=lazy)
        algorithm = FWHard(max_iters=1, objective_tasks=["reverse"], samples_per_task=16, line_search_evals=4)
        algorithm.fabric = L.Fabric(accelerator="cpu", devices=1)
        merged[lazy] = {n: p.detach().clone() for n, p in algorithm.run(pool).named_parameters()}
        assert pool.enable_lazy_loading is lazy  # the pool's setting is left as it was
    assert merged[True].keys() == merged[False].keys()
    assert all(torch.equal(merged[True][n], merged[False][n]) for n in merged[False])
    assert any(not torch.equal(merged[False][n], p) for n, p in MiniCausalLMPool(variant="micro", cache_dir=str(llm_micro_dir.parent))
               .load_pretrained_model().named_parameters())  # the iteration moved the model


def test_lazy_state_dicts_through_the_pool_loader_merge_as_the_streamed_files(llm_micro_dir):
    """With stream_safetensors=false a lazily loading CausalLMPool hands each fine-tune over as a
    LazyStateDict (a mapping, not a module): the reader takes its tensors, and the merge equals the
    one streamed from the safetensors files. Full fine-tunes only: FusionBench 0.2.33's lazy loader
    pops ``pretrained_model_name_or_path`` from a LoRA entry's config, which has none (KeyError)."""
    import lightning as L
    import torch

    from fusion_bench_fw import FWHard
    from fusion_bench_fw.mini_llm.pools import MiniCausalLMPool

    merged, readers = {}, {}
    for stream in (True, False):
        pool = MiniCausalLMPool(variant="micro", cache_dir=str(llm_micro_dir.parent), enable_lazy_loading=True, tasks=["reverse", "add", "copy"])
        algorithm = FWHard(max_iters=1, objective_tasks=["reverse"], samples_per_task=16, line_search_evals=4, stream_safetensors=stream)
        algorithm.fabric = L.Fabric(accelerator="cpu", devices=1)
        merged[stream] = {n: p.detach().clone() for n, p in algorithm.run(pool).named_parameters()}
        readers[stream] = algorithm.fw_summary["readers"]
    assert readers[True]["pool_loader"] == 0 and readers[False]["safetensors"] == 0 and readers[False]["pool_loader"] > 0
    assert all(torch.equal(merged[True][n], merged[False][n]) for n in merged[True])


def test_compare_on_the_llm_pool_writes_its_table_with_the_pool_card_row(llm_micro_dir, llm_micro_card, tmp_path):
    """`fusion_bench_fw compare --pool llm-micro`: the LLM pool's configs, its eval tasks, its card's fine-tuned row."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FUSION_BENCH_FW_CACHE": str(llm_micro_dir.parent)}
    command = [str(Path(sys.executable).with_name("fusion_bench_fw")), "compare", "--pool", "llm-micro", "--methods", "fw_hard,task_arithmetic",
               "--fw-iters", "1", "--samples-per-task", "16", "--out", str(tmp_path / "cmp"), "--strict"]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert payload["eval_tasks"] == ["reverse"] and payload["build"] == llm_micro_dir.name
    assert [r["method"] for r in payload["results"]] == ["fw_hard", "task_arithmetic"]
    assert all(set(r["accuracy"]) == {"reverse"} for r in payload["results"])
    assert "modelpool=mini-llm_micro taskpool=mini-llm_micro" in payload["results"][0]["command"]
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert f"| Individual fine-tuned (pool card) | {100 * llm_micro_card['tasks']['reverse']['finetuned']:.1f} |" in table
