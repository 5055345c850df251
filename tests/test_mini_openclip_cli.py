"""The mini OpenCLIP pool through the stock ``fusion_bench`` CLI: FusionBench's OpenCLIP pool and
taskpool classes, task-vector pickles streamed from their safetensors copies, and merges that equal
the same merges on the Hugging Face mini pool the checkpoints were converted from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_algorithms import run_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
POOL = ["modelpool=mini-openclip_micro", "taskpool=mini-openclip_micro"]


@pytest.fixture(scope="module")
def openclip_micro(openclip_micro_dir):
    return openclip_micro_dir, json.loads((openclip_micro_dir / "card.json").read_text())


def test_build_is_the_mini_clip_pool_in_task_vector_layout(openclip_micro, mini_micro_card):
    build_dir, card = openclip_micro
    root = build_dir / "task_vectors_checkpoints" / card["model_name"]
    assert (root / "zeroshot.pt").is_file()
    for task in card["tasks"]:
        assert (root / task / "finetuned.pt").is_file() and (root / f"head_{task}.pt").is_file()
    # every tower, evaluated through open_clip, scores what the Hugging Face tower scored on the card
    assert card["max_abs_difference_from_source"] == 0.0
    for task, row in card["tasks"].items():
        assert row["finetuned"] == mini_micro_card["tasks"][task]["finetuned"]
    # merging stays meaningful: fine-tuning gains, and irrelevant models hurt task arithmetic
    assert card["eval_average"]["finetuned"] - card["eval_average"]["zero_shot"] > 0.2
    assert card["task_arithmetic"]["all"]["best"] < card["task_arithmetic"]["relevant"]["best"]


def _trajectory(log_dir: Path) -> dict:
    return json.loads((log_dir / "fw_trajectory.json").read_text())


@pytest.mark.parametrize("method", ["fw_hard", "fw_soft"])
def test_fw_streams_every_pickle_and_merges_the_objective_tasks(method, openclip_micro, micro_cache_dir, tmp_path):
    _, card = openclip_micro
    extra = ["method.inner_steps=8"] if method == "fw_soft" else []
    report = run_cli([f"method={method}", *POOL, "method.max_iters=4", "method.samples_per_task=48", *extra],
                     tmp_path / "run", micro_cache_dir, cwd=REPO)
    summary = _trajectory(tmp_path / "run")["summary"]
    assert summary["model_family"] == "openclip_vision"
    assert summary["readers"] == {"safetensors": 6, "pool_loader": 0}
    assert summary["peak_streamed_checkpoints"] <= 1
    eval_tasks = card["eval_tasks"]
    assert _trajectory(tmp_path / "run")["config"]["objective_tasks_resolved"] == eval_tasks  # the taskpool's tasks
    # the first step goes to the objective tasks' own models, and they carry the merge
    first = _trajectory(tmp_path / "run")["iterations"][0]["selected"]
    assert set(first) <= set(eval_tasks), first
    weights = summary["weights"]
    assert sum(weights[t] for t in eval_tasks) > sum(w for t, w in weights.items() if t not in eval_tasks and t != "_pretrained_")
    for task in eval_tasks:  # measured: fw_hard 28.5 / 50.5, fw_soft 35.5 / 43.5 against zero-shot 22.0 / 39.0
        assert report[task]["accuracy"] > card["tasks"][task]["zero_shot"] + 0.03, (task, report[task])


def test_task_wise_fw_hard_equals_the_same_run_on_the_hugging_face_pool(openclip_micro, micro_cache_dir, tmp_path):
    common = ["method=fw_hard", "method.granularity=task", "method.max_iters=4", "method.samples_per_task=48"]
    ours = run_cli([*common, *POOL], tmp_path / "openclip", micro_cache_dir, cwd=REPO)
    hf = run_cli([*common, "modelpool=mini-clip_micro", "taskpool=mini-clip_micro"], tmp_path / "hf", micro_cache_dir, cwd=REPO)
    a, b = _trajectory(tmp_path / "openclip")["summary"], _trajectory(tmp_path / "hf")["summary"]
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-5)
    assert a["weights"] == pytest.approx(b["weights"], abs=1e-5)
    for task in openclip_micro[1]["eval_tasks"]:
        assert ours[task]["accuracy"] == pytest.approx(hf[task]["accuracy"], abs=0.011)  # within 2 of 200 test images


def test_stock_task_arithmetic_loads_the_pickles_and_equals_the_card(openclip_micro, micro_cache_dir, tmp_path):
    _, card = openclip_micro
    report = run_cli(["method=task_arithmetic", "method.scaling_factor=0.3", *POOL], tmp_path / "ta", micro_cache_dir, cwd=REPO)
    expected = card["task_arithmetic"]["all"]["by_lambda"]["0.3"]
    for task in card["eval_tasks"]:
        assert report[task]["accuracy"] == pytest.approx(expected[task], abs=1e-6)
