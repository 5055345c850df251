"""The cost benchmarks' pool: the real TA20 pool config on the hub stand-in, its first n models
(``benchmarks/_standin_pool.py``), and ``cost_methods.py`` end to end on a tiny stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import _standin_pool as standin  # noqa: E402


def test_variant_tags_and_adamerging_split():
    assert standin.Variant().tag == "fp32" and standin.Variant("bf16", 2).tag == "bf16_2shards" and standin.Variant(tiny=True).tag == "fp32_tiny"
    assert standin.Variant("bf16", 2, True, 4).cli_args() == ["--shards", "2", "--dtype", "bf16", "--rows", "4", "--tiny"]
    assert standin.ada_split(4, 10) == [3, 3, 2, 2] and standin.ada_split(20, 20) == [1] * 20
    with pytest.raises(ValueError):
        standin.ada_split(4, 3)


def test_the_first_n_models_of_the_real_config_by_hydra_overrides():
    tasks = standin.pool_tasks()
    assert len(tasks) == 20 and tasks[:4] == ["sun397", "stanford-cars", "resisc45", "eurosat"]
    config, overrides, first = standin.compose_modelpool(4, {"sun397": 2, "stanford-cars": 3})
    assert first == tasks[:4] and overrides[0] == "modelpool=clip-vit-base-patch32_TA20"
    assert f"~modelpool.models.{tasks[4]}" in overrides and len(overrides) == 1 + 3 * 16 + 2
    assert list(config.models) == ["_pretrained_", *tasks[:4]] and config.models["stanford-cars"] == "tanganke/clip-vit-base-patch32_stanford-cars"
    assert list(config.train_datasets) == tasks[:4] and list(config.test_datasets) == tasks[:4]
    assert config.test_datasets.sun397.split == "test[:2]" and config.test_datasets["stanford-cars"].split == "test[:3]"
    assert config.test_datasets.resisc45.split == "test" and config.train_datasets.sun397.split == "train"
    _, _, all_of_them = standin.compose_modelpool(20, {})
    assert all_of_them == tasks
    with pytest.raises(ValueError, match="outside the first"):
        standin.selection_overrides(tasks, 2, {"eurosat": "test"}, {"eurosat": 1})


@pytest.mark.slow
def test_cost_methods_on_a_tiny_sharded_standin_reads_every_checkpoint_streaming(tmp_path):
    out = tmp_path / "results" / "methods_cpu_bf16_2shards_tiny_quick"  # the default name of a smoke run, under --work-dir
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "cost_methods.py"), "--quick", "--tiny", "--methods", "fw_hard",
               "--standin-dtype", "bf16", "--standin-shards", "2", "--work-dir", str(tmp_path), "--scratch-dir", str(tmp_path / "runs"),
               "--no-freeze"]
    env = {**{k: v for k, v in os.environ.items() if k not in standin.OVERRIDING}, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    pool = payload["settings"]["pool"]
    assert pool["variant"] == "bf16_2shards_tiny" and pool["files_per_checkpoint"] == 2 and Path(pool["dir"]) == tmp_path / "hf-standin-bf16_2shards_tiny"
    rows = payload["rows"]
    assert [(r["method"], r["n"], r["status"]) for r in rows] == [("fw_hard", 2, "ok"), ("fw_hard", 4, "ok")], [r.get("error") for r in rows]
    for row in rows:
        assert row["pool_models"] == row["n"] and row["readers"] == {"safetensors": row["n"] + 1, "pool_loader": 0}
    summary = (tmp_path / "results" / "standin_cpu_tiny_quick.md").read_text()
    assert "| our runs read all n+1 checkpoints with the streaming safetensors reader (21/21 at n=20) | bf16_2shards_tiny | fw_hard n=2: 3/3, n=4: 5/5 | **PASS** |" in summary


@pytest.mark.slow
def test_cost_llm_on_a_tiny_llama_pool_streams_every_shard_and_judges_the_targets(tmp_path):
    out = tmp_path / "llm_tiny"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "cost_llm.py"), "--tiny", "--sizes", "2,4", "--repeats", "1",
               "--work-dir", str(tmp_path), "--scratch-dir", str(tmp_path / "runs"), "--out", str(out), "--no-freeze"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["settings"]["pool"]["shards"] == 2 and payload["settings"]["pool"]["shape"] == "tiny"
    rows = {(r["method"], r["n"]): r for r in payload["rows"]}
    assert sorted(rows) == [(m, n) for m in ("fw_hard", "task_arithmetic", "ties_merging") for n in (2, 4)]
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    for n in (2, 4):  # ours streamed the base and every fine-tune from their safetensors shards
        assert rows[("fw_hard", n)]["readers"] == {"safetensors": n + 1, "pool_loader": 0}
        assert rows[("fw_hard", n)]["lmo_s"] > 0 and rows[("fw_hard", n)]["read_s"] > 0
    report = out.with_suffix(".md").read_text()
    assert "| fw_hard peak RSS n=4 / n=2 |" in report and "| fw_hard LMO pass / raw read, n=4 |" in report
