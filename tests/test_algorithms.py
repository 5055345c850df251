"""FWHard / FWSoft on the micro CLIP pool: in-process through FusionBench classes, and the stock CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

from fusion_bench_fw import FWHard, FWSoft
from fusion_bench_fw.checkpoints import PoolCheckpoints

pytestmark = pytest.mark.slow

FUSION_BENCH = str(Path(sys.executable).with_name("fusion_bench"))


def run_cli(args, log_dir: Path, cache_dir: Path, cwd: Path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", FUSION_BENCH_FW_CACHE=str(cache_dir))
    command = [FUSION_BENCH, *args, f"path.log_dir={log_dir}", "print_config=false"]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
    return json.loads((log_dir / "program_report.json").read_text())


def merged_params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --- through the stock CLI ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "method,overrides",
    [
        ("fw_soft", ["method.max_iters=2", "method.inner_steps=4", "method.samples_per_task=24"]),
        ("fw_hard", ["method.max_iters=2", "method.samples_per_task=24", "method.line_search_evals=4"]),
    ],
)
def test_cli_runs_and_reports_per_task_accuracy(method, overrides, micro_pool, tmp_path):
    log_dir = tmp_path / "run"
    # run from the repo root: its config/ folder must not hijack fusion_bench's config dir
    repo_root = Path(__file__).resolve().parents[1]
    report = run_cli([f"method={method}", "modelpool=mini-clip_micro", "taskpool=mini-clip_micro", *overrides], log_dir, micro_pool.cache_dir, cwd=repo_root)
    eval_tasks = micro_pool.eval_tasks
    for task in eval_tasks:
        assert 0.0 <= report[task]["accuracy"] <= 1.0
    # a merge of fine-tuned models is far better than chance on these tasks
    assert report["average"]["accuracy"] > micro_pool.chance_level + 0.1

    trajectory = json.loads((log_dir / "fw_trajectory.json").read_text())
    iterations = trajectory["iterations"]
    assert len(iterations) >= 1
    for record in iterations:
        assert isinstance(record["fw_gap"], float)
        # both are descent methods here: FW-soft keeps theta_t in its simplex, FW-hard line-searches
        assert record["loss_after"] <= record["loss_before"] + 1e-6
        # weights are rounded to 6 decimals in the file
        assert sum(record["weights"].values()) == pytest.approx(1.0, abs=1e-4)
    summary = trajectory["summary"]
    assert summary["stop"] in ("converged", "stalled", "max_iters") and summary["stop_reason"].startswith(summary["stop"])
    assert "FW gap" in summary["stop_reason"] and summary["gap_set"]
    # the picture a user checks: objective, gap and merge weights per iteration
    assert (log_dir / "fw_trajectory.png").stat().st_size > 10_000
    assert trajectory["config"]["algorithm"] == ("FWSoft" if method == "fw_soft" else "FWHard")
    # objective_tasks defaults to the taskpool's tasks (the paper's setting), not all 5 pool tasks
    assert trajectory["config"]["objective_tasks_resolved"] == list(eval_tasks)


# --- in process ---------------------------------------------------------------------------------

def test_lmo_selects_the_model_fine_tuned_on_the_objective_task(micro_pool):
    pool = micro_pool.make_modelpool()
    task = micro_pool.eval_tasks[0]
    algorithm = FWHard(max_iters=1, granularity="task", init="pretrained", objective_tasks=[task], samples_per_task=100, line_search_evals=4)
    algorithm.run(pool)
    first = algorithm.fw_state.trajectory[0]
    assert first["selected"] == task
    assert first["fw_gap"] > 0
    # the step moved toward that model: it carries the whole non-pretrained weight
    weights = first["weights"]
    assert weights[task] > 0.05
    assert all(w == 0 for label, w in weights.items() if label not in (task, "_pretrained_"))


def test_soft_per_task_selection_picks_each_objective_tasks_model(micro_pool):
    pool = micro_pool.make_modelpool()
    tasks = micro_pool.eval_tasks[:2]
    algorithm = FWSoft(max_iters=1, objective_tasks=tasks, samples_per_task=100, inner_steps=3)
    algorithm.run(pool)
    assert sorted(algorithm.fw_state.trajectory[0]["selected"]) == sorted(tasks)


def test_soft_line_search_evals_sets_the_fw_steps_forward_passes(micro_pool):
    """FW-soft's golden-section FW step toward the gap's vertex costs exactly line_search_evals forward
    passes; the quadratic one (the default), fewer."""
    task = micro_pool.eval_tasks[0]
    passes = {}
    for search, evals in (("golden", 3), ("golden", 7), ("quadratic", 7)):
        algorithm = FWSoft(max_iters=1, objective_tasks=[task], samples_per_task=16, batch_size=32, inner_steps=2, inner_init="fw_step",
                           probe_step=0, line_search_evals=evals, fw_step_search=search)
        algorithm.run(micro_pool.make_modelpool())
        assert "fw_step_size" in algorithm.fw_state.trajectory[0]  # the FW step ran
        passes[search, evals] = algorithm.fw_summary["forward_passes"]
    assert passes["golden", 7] - passes["golden", 3] == 4  # one batch per evaluation
    assert passes["quadratic", 7] <= passes["golden", 3]  # at most 3 evaluations here


def test_streaming_keeps_at_most_one_checkpoint_resident(micro_pool, monkeypatch):
    """Count live loaded checkpoints through a weakref on each load, via the pool's own loader."""
    pool = micro_pool.make_modelpool()
    alive = []
    peak = {"value": 0, "loads": 0}
    original_load_model = type(pool).load_model

    def counting_load_model(self, name, *args, **kwargs):
        model = original_load_model(self, name, *args, **kwargs)
        if name != "_pretrained_" or peak["loads"] > 0:
            peak["loads"] += 1
            alive[:] = [ref for ref in alive if ref() is not None]
            alive.append(weakref.ref(next(model.parameters())))
            peak["value"] = max(peak["value"], len(alive))
        return model

    monkeypatch.setattr(type(pool), "load_model", counting_load_model)
    algorithm = FWSoft(max_iters=2, samples_per_task=16, inner_steps=2, stream_safetensors=False)
    algorithm.run(pool)
    n_vertices = len(pool.model_names) + 1
    assert peak["loads"] >= 3 * n_vertices  # validation pass + one LMO pass per iteration
    # the k selected checkpoints are copied into the solver; the streamed ones die one by one
    assert peak["value"] <= 2
    assert algorithm.fw_summary["peak_streamed_checkpoints"] == 1
    assert algorithm.fw_summary["readers"] == {"safetensors": 0, "pool_loader": n_vertices}  # stream_safetensors=false


def test_fast_safetensors_path_matches_pool_loader(micro_pool):
    pool = micro_pool.make_modelpool()
    model = pool.load_pretrained_model()
    blocks = [name for name, _ in model.named_parameters()]
    name = pool.model_names[0]
    fast = PoolCheckpoints(pool, [name], blocks).load(name)
    slow = PoolCheckpoints(pool, [name], blocks, prefer_safetensors=False).load(name)
    assert set(fast) == set(slow) == set(blocks)
    assert all(torch.equal(fast[b], slow[b]) for b in blocks)
    assert not torch.equal(fast[blocks[-1]], dict(model.named_parameters())[blocks[-1]])


def test_merged_model_is_the_pools_model_type_and_matches_the_bookkeeping(micro_pool):
    pool = micro_pool.make_modelpool()
    algorithm = FWHard(max_iters=2, granularity="layer", init="pretrained", samples_per_task=16, line_search_evals=4)
    merged = algorithm.run(pool)
    assert type(merged) is type(pool.load_model(pool.model_names[0]))
    weights = algorithm.fw_state.weights  # [blocks, labels]
    labels = ["_pretrained_"] + list(pool.model_names)
    vertices = [merged_params(pool.load_model(label)) for label in labels]
    for b, (name, value) in enumerate(merged_params(merged).items()):
        rebuilt = sum(float(weights[b, v]) * vertices[v][name] for v in range(len(labels)))
        assert torch.allclose(rebuilt, value, atol=1e-5), name


def test_compute_dtype_runs_the_merge_in_that_dtype(micro_pool):
    """bf16 math on an fp32 pool: theta and the streamed checkpoints are bf16, the merged model comes
    back in the pool's fp32 (for its taskpool) holding bf16 values, the convex combination its
    weights say up to bf16 rounding."""
    pool = micro_pool.make_modelpool()
    algorithm = FWHard(max_iters=1, granularity="layer", samples_per_task=8, line_search_evals=3, compute_dtype="bfloat16")
    merged = algorithm.run(pool)
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    assert all(torch.equal(p, p.to(torch.bfloat16).float()) for p in merged.parameters())  # computed in bf16
    assert algorithm.fw_summary["readers"] == {"safetensors": len(pool.model_names) + 1, "pool_loader": 0}
    labels = ["_pretrained_"] + list(pool.model_names)
    vertices = [merged_params(pool.load_model(label)) for label in labels]
    weights = algorithm.fw_state.weights
    for b, (name, value) in enumerate(merged_params(merged).items()):
        rebuilt = sum(float(weights[b, v]) * vertices[v][name] for v in range(len(labels)))
        assert torch.allclose(rebuilt, value, atol=2e-2, rtol=2e-2), name
    with pytest.raises(ValueError, match=r"invalid compute_dtype='bf16': use null .* bfloat16"):
        FWSoft(compute_dtype="bf16")


def test_invalid_options_fail_at_construction_listing_allowed_values():
    with pytest.raises(ValueError, match="granularity='block'.*task, layer"):
        FWSoft(granularity="block")
    with pytest.raises(ValueError, match="merge_fn='dare'.*convex, ties"):
        FWHard(merge_fn="dare")
    with pytest.raises(ValueError, match="step_size must be in"):
        FWHard(step_rule="constant", step_size=-0.5)
    with pytest.raises(ValueError, match="init='/nonexistent/ckpt'"):
        FWSoft(init="/nonexistent/ckpt")
    with pytest.raises(ValueError, match="objective_tasks='eval'.*'taskpool'"):
        FWSoft(objective_tasks="eval")
    with pytest.raises(ValueError, match="lmo_block_group must be >= 1"):
        FWHard(lmo_block_group=0)
    with pytest.raises(ValueError, match="max_relative_distance must be > 0"):
        FWHard(max_relative_distance=0)
    with pytest.raises(ValueError, match="min_rel_decrease must be >= 0"):
        FWSoft(min_rel_decrease=-1)
    with pytest.raises(ValueError, match="inner_init='middle'.*uniform, fw_step, current"):
        FWSoft(inner_init="middle")


def test_taskpool_tasks_without_train_split_are_named_before_data_work(micro_pool, tmp_path):
    """objective_tasks=taskpool, but the model pool holds only one of the taskpool's tasks."""
    kept, dropped = micro_pool.eval_tasks[0], micro_pool.eval_tasks[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", FUSION_BENCH_FW_CACHE=str(micro_pool.cache_dir))
    command = [FUSION_BENCH, "method=fw_soft", "modelpool=mini-clip_micro", f"modelpool.tasks=[{kept}]",
               "taskpool=mini-clip_micro", f"path.log_dir={tmp_path}", "print_config=false"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert f"the taskpool's task(s) ['{dropped}'] have no train dataset" in result.stderr
    assert "method.objective_tasks" in result.stderr
    assert not (tmp_path / "fw_trajectory.json").exists()


def test_objective_task_without_dataset_is_reported_with_the_available_ones(micro_pool):
    pool = micro_pool.make_modelpool()
    with pytest.raises(ValueError, match=r"\['no-such-task'\] have no train dataset.*available"):
        FWSoft(objective_tasks=["no-such-task"]).run(pool)


def test_topk_larger_than_pool_is_rejected(micro_pool):
    pool = micro_pool.make_modelpool()
    with pytest.raises(ValueError, match="topk=99 is larger than the number of LMO candidates"):
        FWSoft(topk=99).run(pool)


@pytest.mark.parametrize("keep", [True, False])
def test_runs_keep_freed_memory_only_when_asked(micro_pool, monkeypatch, keep):
    import fusion_bench_fw.algorithms as algorithms

    calls = []
    monkeypatch.setattr(algorithms, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(ValueError, match="no-such-task"):  # stops before data work, after the setting
        FWHard(objective_tasks=["no-such-task"], keep_freed_memory=keep).run(micro_pool.make_modelpool())
    assert calls == ([1] if keep else [])
