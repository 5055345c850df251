"""Resolving pool entries to files: local dirs, a Hugging Face hub cache (snapshots, refs, shards,
bf16), what falls back to the pool's loader and why, and the offline error."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from fusion_bench_fw.checkpoint_files import POOL_LOADER, STREAMING, CheckpointNotAvailable, resolve_checkpoint, resolve_pool
from fusion_bench_fw.checkpoints import PoolCheckpoints

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _params(seed):
    g = torch.Generator().manual_seed(seed)
    return {"encoder.a.weight": torch.randn(6, 4, generator=g), "encoder.b.weight": torch.randn(5, generator=g), "head.bias": torch.randn(3, generator=g)}


def write_hub_repo(cache, repo_id, params, shards=1, dtype=torch.float32, revision=REVISION, ref="main"):
    """A repo as huggingface_hub lays it out: models--ORG--NAME/{refs/<ref>, snapshots/<revision>/...}
    (files written in the snapshot directly; the real cache symlinks them to blobs/, same to a reader)."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / ref).write_text(revision)
    (snapshot / "config.json").write_text("{}")
    names = list(params)
    if shards == 1:
        save_file({k: v.to(dtype) for k, v in params.items()}, str(snapshot / "model.safetensors"))
        return snapshot
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i::shards]
        save_file({k: params[k].to(dtype) for k in part}, str(snapshot / shard))
        weight_map.update({k: shard for k in part})
    (snapshot / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return snapshot


class Pool:
    def __init__(self, models, loadable=None):
        self._models = models
        self.loadable = loadable or {}
        self.loaded = []

    def load_model(self, name):
        self.loaded.append(name)
        module = torch.nn.Module()
        for key, value in self.loadable[name].items():
            *path, leaf = key.split(".")
            owner = module
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, torch.nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, torch.nn.Parameter(value.clone()))
        return module


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_cache_single_sharded_and_bf16_entries_are_streamed(hub_cache, tmp_path):
    blocks = ["encoder.a.weight", "encoder.b.weight"]
    write_hub_repo(hub_cache, "org/base", _params(0))
    write_hub_repo(hub_cache, "org/sharded-bf16", _params(1), shards=3, dtype=torch.bfloat16)
    pinned = write_hub_repo(hub_cache, "org/pinned", _params(2), shards=2, revision="f" * 40, ref="v1")
    local = tmp_path / "local"
    local.mkdir()
    save_file(_params(3), str(local / "model.safetensors"))
    models = {
        "_pretrained_": "org/base",
        "sharded": "org/sharded-bf16",
        "pinned": DictConfig({"_target_": "transformers.CLIPVisionModel.from_pretrained", "pretrained_model_name_or_path": "org/pinned", "revision": "f" * 40}),
        "local": str(local),
    }
    pool = Pool(models)
    files = resolve_pool(pool, list(models))
    assert {n: f.reader for n, f in files.items()} == {n: STREAMING for n in models}
    assert files["pinned"].weight_map["encoder.a.weight"].parent == pinned
    assert len(set(files["sharded"].weight_map.values())) == 3

    source = PoolCheckpoints(pool, list(models), blocks, files=files)
    assert source.reader_counts() == {STREAMING: 4, POOL_LOADER: 0}
    for i, name in enumerate(models):
        expected = {k: v for k, v in _params(i).items() if k in blocks}
        if name == "sharded":
            expected = {k: v.to(torch.bfloat16).float() for k, v in expected.items()}
        got = source.load(name)
        assert list(got) == blocks and all(got[k].dtype == torch.float32 and torch.equal(got[k], expected[k]) for k in blocks)
    with source.block_reader([0, 1, 2, 3]) as reader:
        stacked = reader.stack("encoder.a.weight", 4, 20)
    assert torch.equal(stacked[1], _params(1)["encoder.a.weight"].to(torch.bfloat16).float().reshape(-1)[4:20])
    assert torch.equal(stacked[2], _params(2)["encoder.a.weight"].reshape(-1)[4:20])
    assert pool.loaded == []


def test_what_the_streaming_reader_cannot_serve_goes_to_the_pool_loader_with_a_reason(hub_cache, tmp_path):
    blocks = ["encoder.a.weight"]
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    torch.save(_params(4), bin_only / "pytorch_model.bin")
    custom = DictConfig({"_target_": "my_lib.load_and_prune", "pretrained_model_name_or_path": str(bin_only)})
    pool = Pool({"bin": str(bin_only), "custom": custom, "module": torch.nn.Linear(2, 2)}, loadable={"bin": _params(4), "custom": _params(5)})
    files = resolve_pool(pool, ["bin", "custom", "module"])
    assert {n: f.reader for n, f in files.items()} == {"bin": POOL_LOADER, "custom": POOL_LOADER, "module": POOL_LOADER}
    assert "no model.safetensors" in files["bin"].why and "my_lib.load_and_prune" in files["custom"].why and "Linear" in files["module"].why
    source = PoolCheckpoints(pool, ["bin", "custom"], blocks, files=files)
    assert source.reader_counts() == {STREAMING: 0, POOL_LOADER: 2}
    assert torch.equal(source.load("custom")["encoder.a.weight"], _params(5)["encoder.a.weight"]) and pool.loaded == ["custom"]
    # stream_safetensors=false: found, but served by the pool's loader
    write_hub_repo(hub_cache, "org/base", _params(0))
    assert resolve_checkpoint("m", "org/base", streaming=False).why == "method.stream_safetensors=false"


def test_an_entry_missing_offline_names_the_model_the_cache_and_the_fix(hub_cache):
    with pytest.raises(CheckpointNotAvailable) as error:
        resolve_pool(Pool({"sun397": "tanganke/clip-vit-base-patch32_sun397"}), ["sun397"])
    message = str(error.value)
    for part in ("model 'sun397'", "tanganke/clip-vit-base-patch32_sun397", str(hub_cache), "HF_HUB_OFFLINE=1", "huggingface-cli download tanganke/clip-vit-base-patch32_sun397", "mini-clip_TA20"):
        assert part in message, part
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no huggingface_hub traceback attached
    with pytest.raises(CheckpointNotAvailable, match=r"model 'x': /no/such/dir does not exist"):
        resolve_checkpoint("x", "/no/such/dir")


def test_a_sharded_index_naming_a_missing_shard_is_refused(hub_cache):
    snapshot = write_hub_repo(hub_cache, "org/broken", _params(0), shards=2)
    next(snapshot.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointNotAvailable, match="model-00002-of-00002.safetensors"):
        resolve_checkpoint("broken", "org/broken")


def test_stored_dtype_reads_the_shards_headers_and_gives_none_when_it_cannot_say(hub_cache, tmp_path):
    from fusion_bench_fw.checkpoint_files import stored_dtype

    blocks = ["encoder.a.weight", "encoder.b.weight"]
    write_hub_repo(hub_cache, "org/bf16", _params(0), shards=2, dtype=torch.bfloat16)
    write_hub_repo(hub_cache, "org/fp32", _params(1))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    save_file({"encoder.a.weight": _params(2)["encoder.a.weight"].half(), "encoder.b.weight": _params(2)["encoder.b.weight"]}, str(mixed / "model.safetensors"))
    wrapped = tmp_path / "wrapped"  # stored under a prefix, as GPT-2 classifiers store their base model
    wrapped.mkdir()
    save_file({f"transformer.{k}": v.half() for k, v in _params(3).items()}, str(wrapped / "model.safetensors"))
    files = resolve_pool(Pool({"bf16": "org/bf16", "fp32": "org/fp32", "mixed": str(mixed), "wrapped": str(wrapped)}), ["bf16", "fp32", "mixed", "wrapped"])
    assert stored_dtype(files["bf16"], blocks) == torch.bfloat16
    assert stored_dtype(files["fp32"], blocks) == torch.float32
    assert stored_dtype(files["mixed"], blocks) is None
    assert stored_dtype(files["wrapped"], blocks) == torch.float16
    assert stored_dtype(files["fp32"], ["not.a.tensor"]) is None
