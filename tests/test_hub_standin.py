"""The hub stand-in: FusionBench's real TA20 CLIP pool and our fw4 taskpool configs, unchanged, run
offline on a local Hugging Face cache written under the real repo ids (tiny towers, 2 bf16 shards)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusion_bench_fw.checkpoint_files import STREAMING, reader_counts, resolve_pool
from fusion_bench_fw.hub_standin import StandinExists, main, write_hub_standin
from fusion_bench_fw.hub_standin.data import CONFIG_ROOT
from fusion_bench_fw.safetensors_slices import read_header

pytestmark = pytest.mark.slow

OPTIONS = dict(shape="tiny", shards=2, dtype="bf16", rows_per_split=4)
REPO_ROOT = Path(__file__).resolve().parents[1]
FUSION_BENCH = str(Path(sys.executable).with_name("fusion_bench"))
CONFIG = ["method=fw_soft", "modelpool=clip-vit-base-patch32_TA20", "taskpool=clip-vit-base-patch32_fw4"]
EVAL_TASKS = ["sun397", "stanford-cars", "gtsrb", "dtd"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    torch.set_num_threads(1)
    return write_hub_standin(tmp_path_factory.mktemp("hf_home"), **OPTIONS)


def offline_env(out) -> dict:
    """The summary's env, one CPU thread (the CLI competes for 2 cores; oversubscribed torch threads
    made it ~10x slower), and no HF_*_CACHE that would override HF_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HUGGINGFACE_HUB_CACHE")}
    return {**env, **out["env"], "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def snapshot_of(root: Path) -> Path:
    return root / "snapshots" / (root / "refs" / "main").read_text()


def test_layout_is_the_hub_cache_layout(standin):
    out = Path(standin["out"])
    assert len(standin["models"]) == 21 and len(standin["datasets"]) == 20
    for repo_id in standin["models"]:
        root = out / "hub" / f"models--{repo_id.replace('/', '--')}"
        snapshot = snapshot_of(root)
        files = sorted(p.name for p in snapshot.iterdir())
        assert {"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} <= set(files)
        for path in snapshot.iterdir():  # relative symlinks into blobs/, as huggingface_hub makes them
            assert path.is_symlink() and not os.path.isabs(os.readlink(path)) and path.resolve().parent == (root / "blobs").resolve()
        shard = snapshot / "model-00001-of-00002.safetensors"
        assert shard.resolve().name == hashlib.sha256(shard.read_bytes()).hexdigest()  # LFS blobs are named by sha256
        weight_map = json.loads((snapshot / "model.safetensors.index.json").read_text())["weight_map"]
        assert set(weight_map.values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
        header = {**read_header(shard), **read_header(snapshot / "model-00002-of-00002.safetensors")}
        assert set(header) == set(weight_map) and {entry.dtype for entry in header.values()} == {torch.bfloat16}
        assert json.loads((snapshot / "config.json").read_text())["dtype"] == "bfloat16"
        if repo_id == "openai/clip-vit-base-patch32":  # the full CLIPModel with the processor
            assert {"preprocessor_config.json", "tokenizer.json", "vocab.json", "merges.txt"} <= set(files)
            assert any(k.startswith("text_model.") for k in weight_map) and "visual_projection.weight" in weight_map
        else:
            assert all(k.startswith("vision_model.") for k in weight_map)
    sun397 = snapshot_of(out / "hub" / "datasets--tanganke--sun397")
    assert {"data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet", "README.md"} <= {p.relative_to(sun397).as_posix() for p in sun397.rglob("*") if p.is_file()}
    prepared = out / "datasets" / "tanganke___sun397" / "default" / "0.0.0" / sun397.name
    assert {"dataset_info.json", "sun397-train.arrow", "sun397-test.arrow"} <= {p.name for p in prepared.iterdir()}
    assert (out / "datasets" / "svhn" / "cropped_digits").is_dir() and not (out / ".hub_standin-staging").exists()


def test_no_tensor_is_all_zero(standin):
    """Random init leaves biases and LayerNorm shifts at 0; a zero tensor would stay zero in every
    fine-tune, and FusionBench's FW-Merging LMO (cosine per tensor) would divide by its zero norm."""
    from safetensors.torch import load_file

    out = Path(standin["out"])
    for repo_id in standin["models"][:2]:  # the pretrained CLIPModel and one fine-tune
        snapshot = snapshot_of(out / "hub" / f"models--{repo_id.replace('/', '--')}")
        tensors = {k: v for shard in sorted(snapshot.glob("*.safetensors")) for k, v in load_file(str(shard)).items()}
        assert tensors and [k for k, v in tensors.items() if not v.any()] == [], repo_id


def test_same_options_reuse_other_options_and_foreign_caches_are_refused(standin, tmp_path, capsys):
    out = Path(standin["out"])
    again = write_hub_standin(out, **{**OPTIONS, "tasks": list(reversed(standin["params"]["tasks"]))})
    assert again["reused"] and again["models"] == standin["models"]
    assert main(["--out", str(out), "--tiny", "--shards", "2", "--dtype", "bf16", "--rows", "4"]) == 0 and "reused" in capsys.readouterr().out
    from fusion_bench_fw.cli import main as fusion_bench_fw  # the same writer behind `fusion_bench_fw hub-standin`

    assert fusion_bench_fw(["hub-standin", "--out", str(out), "--tiny", "--shards", "2", "--dtype", "bf16", "--rows", "4"]) == 0
    assert "reused" in capsys.readouterr().out
    with pytest.raises(StandinExists, match="already holds a hub stand-in"):
        write_hub_standin(out, **{**OPTIONS, "seed": 1})
    assert main(["--out", str(out), "--tiny", "--dtype", "fp16"]) == 2
    # a directory holding another cache's copy of one of the repos: refused before anything is written
    foreign = tmp_path / "hf_home" / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots"
    foreign.mkdir(parents=True)
    with pytest.raises(StandinExists, match="was not written by this writer"):
        write_hub_standin(tmp_path / "hf_home", **OPTIONS)
    assert foreign.is_dir() and sorted(p.name for p in (tmp_path / "hf_home").iterdir()) == ["hub"]


def test_an_interrupted_write_is_redone_and_a_subset_of_tasks_written(tmp_path):
    out = tmp_path / "hf_home"
    # a crash while moving: the marker lists the repo folders this writer had started to move in
    half_moved = out / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots" / "stale"
    half_moved.mkdir(parents=True)
    (out / "hub_standin.json").write_text(json.dumps({"state": "moving", "paths": ["hub/models--openai--clip-vit-base-patch32"]}))
    (out / ".hub_standin-staging" / "scratch").mkdir(parents=True)
    assert main(["--out", str(out), "--tiny", "--tasks", "dtd,gtsrb", "--rows", "2"]) == 0
    summary = json.loads((out / "hub_standin.json").read_text())["summary"]
    assert summary["models"] == ["openai/clip-vit-base-patch32", "tanganke/clip-vit-base-patch32_gtsrb", "tanganke/clip-vit-base-patch32_dtd"]
    assert not half_moved.exists() and not (out / ".hub_standin-staging").exists()
    snapshot = snapshot_of(out / "hub" / "models--tanganke--clip-vit-base-patch32_dtd")
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]


def test_real_pool_config_resolves_every_entry_to_the_streaming_reader(standin, monkeypatch):
    from huggingface_hub import constants
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    # huggingface_hub reads HF_HOME at import: point the already-imported constants at the stand-in
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(standin["out"]) / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with initialize_config_dir(str(CONFIG_ROOT), version_base=None):
        config = compose("fabric_model_fusion", overrides=CONFIG)
    pool = instantiate(config.modelpool)
    assert type(pool).__name__ == "CLIPVisionModelPool" and len(pool.model_names) == 20
    resolved = resolve_pool(pool, ["_pretrained_", *pool.model_names])
    assert reader_counts(resolved) == {STREAMING: 21, "pool_loader": 0}
    for item in resolved.values():
        assert len(set(item.weight_map.values())) == 2 and all(Path(f).is_file() for f in item.weight_map.values())


DATASETS_SCRIPT = """
import json, sys
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from fusion_bench.tasks.clip_classification import get_classnames
from fusion_bench_fw.hub_standin.data import CONFIG_ROOT
with initialize_config_dir(str(CONFIG_ROOT), version_base=None):
    config = compose("fabric_model_fusion", overrides=sys.argv[1:])
pool, found = instantiate(config.modelpool), {}
for task in pool.train_dataset_names:
    for split, load in (("train", pool.load_train_dataset), ("test", pool.load_test_dataset)):
        ds = load(task)
        found[f"{task}/{split}"] = dict(rows=len(ds), columns=ds.column_names, image=type(ds.features["image"]).__name__,
                                        names_ok=ds.features["label"].names == list(get_classnames(task)), mode=ds[0]["image"].convert("RGB").mode)
print("RESULT" + json.dumps(dict(found=found, taskpool=list(config.taskpool.test_datasets))))
"""


def test_every_dataset_config_of_the_pool_loads_offline(standin):
    result = subprocess.run([sys.executable, "-c", DATASETS_SCRIPT, *CONFIG], cwd=REPO_ROOT, env=offline_env(standin), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    payload = json.loads(result.stdout.split("RESULT", 1)[1])
    assert payload["taskpool"] == EVAL_TASKS and len(payload["found"]) == 40
    for name, found in payload["found"].items():
        assert found == dict(rows=4, columns=["image", "label"], image="Image", names_ok=True, mode="RGB"), name


def test_exact_command_runs_offline_end_to_end(standin, tmp_path):
    log_dir = tmp_path / "run"
    overrides = ["method.max_iters=1", "method.samples_per_task=2", "method.inner_steps=1", "taskpool.dataloader_kwargs.num_workers=0"]
    command = [FUSION_BENCH, *CONFIG, *overrides, f"path.log_dir={log_dir}", "print_config=false"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=offline_env(standin), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
    report = json.loads((log_dir / "program_report.json").read_text())
    for task in EVAL_TASKS:
        assert 0.0 <= report[task]["accuracy"] <= 1.0
    summary = json.loads((log_dir / "fw_trajectory.json").read_text())["summary"]
    assert summary["readers"] == {"safetensors": 21, "pool_loader": 0}
    # the pool loads the bf16 checkpoints as float32; the merge runs in the dtype they are stored in
    assert summary["compute_dtype"] == "bfloat16"
    # the perturbed towers sit where fine-tunes sit (~0.05 of the base's norm): none is screened out
    assert summary["screened"] == {} and all(0.02 < d < 0.1 for name, d in summary["relative_distances"].items() if name != "_pretrained_")
