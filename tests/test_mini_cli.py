"""The stock `fusion_bench` CLI on the mini pool configs (subprocesses, offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusion_bench_fw.mini.variants import get_variant

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
FUSION_BENCH = str(Path(sys.executable).with_name("fusion_bench"))


def run_fusion_bench(args, cache_dir: Path, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FUSION_BENCH_FW_CACHE": str(cache_dir)}
    result = subprocess.run([FUSION_BENCH, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_composing_the_configs_builds_nothing(tmp_path):
    cache = tmp_path / "cache"
    for modelpool, taskpool in (("mini-clip_TA20", "mini-clip_TA20_all"), ("mini-clip_micro", "mini-clip_micro")):
        out = run_fusion_bench(
            ["method=task_arithmetic", f"modelpool={modelpool}", f"taskpool={taskpool}", "modelpool.num_irrelevant=8", "--cfg", "job"],
            cache, cwd=REPO_ROOT,  # the repo root: its config/ dir is Hydra's primary config dir there
        ).stdout
        assert "fusion_bench_fw.mini.pools.MiniCLIPVisionModelPool" in out and "num_irrelevant: 8" in out
    assert not cache.exists()


def test_task_arithmetic_cli_run_reports_per_task_accuracy(mini_micro_dir, mini_micro_card, tmp_path):
    cache = mini_micro_dir.parent
    log_dir = tmp_path / "logs"
    run_fusion_bench(
        ["method=task_arithmetic", "method.scaling_factor=0.3", "modelpool=mini-clip_micro",
         "taskpool=mini-clip_micro", f"path.log_dir={log_dir}"],
        cache, cwd=tmp_path,  # elsewhere: the configs come in through our SearchPathPlugin
    )
    report = json.loads((log_dir / "program_report.json").read_text())
    eval_tasks = mini_micro_card["eval_tasks"]
    assert set(eval_tasks) <= set(report)
    accuracies = [report[t]["accuracy"] for t in eval_tasks]
    assert report["average"]["accuracy"] == pytest.approx(sum(accuracies) / len(accuracies))
    # the CLI's TaskArithmeticAlgorithm over all micro models == the card's formula at lambda 0.3
    expected = mini_micro_card["task_arithmetic"]["all"]["by_lambda"]["0.3"]
    one_image = 1.0 / get_variant("micro").n_test
    for t in eval_tasks:
        assert report[t]["accuracy"] == pytest.approx(expected[t], abs=1.5 * one_image), t


def test_compare_merges_a_second_invocation_and_runs_the_in_tree_fw_soft_on_cpu(mini_micro_dir, tmp_path):
    """`fusion_bench_fw compare --merge` keeps the methods of an earlier table; the in-tree FusionBench
    fw_soft (which calls .cuda() unconditionally) runs through the CPU launcher and is labelled so."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FUSION_BENCH_FW_CACHE": str(mini_micro_dir.parent)}
    compare = [str(Path(sys.executable).with_name("fusion_bench_fw")), "compare", "--pool", "micro", "--out", str(tmp_path / "cmp"), "--strict",
               "--fw-iters", "1", "--inner-steps", "2", "--samples-per-task", "8"]
    for methods, merge in (("task_arithmetic", []), ("intree_fw_soft", ["--merge"])):
        result = subprocess.run([*compare, "--methods", methods, *merge], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["method"] for r in payload["results"]] == ["task_arithmetic", "intree_fw_soft"]
    assert len(payload["commands"]) == 2 and all(not r["error"] for r in payload["results"])
    in_tree = payload["results"][1]
    assert in_tree["command"].startswith("python -m fusion_bench_fw.intree_on_cpu method=fw_merging/fw_soft")
    assert "(.cuda() made a no-op)" in in_tree["label"] and 0 < sum(in_tree["accuracy"].values())
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "Task arithmetic (0.3)" in table and "In-tree FusionBench fw_soft" in table
