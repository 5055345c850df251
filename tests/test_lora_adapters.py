"""LoRA fine-tunes streamed as FW vertices: base + scale * B @ A must equal PEFT's own merged weights."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from omegaconf import DictConfig

from fusion_bench.modelpool import CausalLMPool

from fusion_bench_fw.checkpoint_files import LORA, POOL_LOADER, reader_counts, resolve_pool
from fusion_bench_fw.checkpoints import PoolCheckpoints

PEFT_LOADER = "fusion_bench.modelpool.causal_lm.load_peft_causal_lm"


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def lora_entry(base_dir, adapter_dir):
    return {"_target_": PEFT_LOADER, "base_model_path": str(base_dir), "peft_model_path": str(adapter_dir), "torch_dtype": "float32",
            "merge_and_unload": True, "is_trainable": False}


@pytest.fixture
def lora_pool(tmp_path):
    """A base tiny Llama and two adapters (plain and rsLoRA, random non-zero factors), plus PEFT's merges of them."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    tiny_llama().save_pretrained(tmp_path / "base")
    merged = {}
    for name, rslora in (("plain", False), ("rs", True)):
        model = get_peft_model(LlamaForCausalLM.from_pretrained(tmp_path / "base"), LoraConfig(
            r=4, lora_alpha=8, use_rslora=rslora, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
        model.save_pretrained(tmp_path / name)
        merged[name] = {k: v.detach().clone() for k, v in model.merge_and_unload().named_parameters()}
    models = {"_pretrained_": str(tmp_path / "base"), **{name: lora_entry(tmp_path / "base", tmp_path / name) for name in merged}}
    return CausalLMPool(DictConfig(models), tokenizer=None), merged, tmp_path


def test_lora_vertex_equals_the_peft_merged_model(lora_pool):
    pool, merged, _ = lora_pool
    blocks = list(merged["plain"])
    source = PoolCheckpoints(pool, ["plain", "rs"], blocks)
    assert source.reader_counts() == {"safetensors": 0, "pool_loader": 0, LORA: 2}
    base = dict(tiny_llama().named_parameters())
    for name in ("plain", "rs"):
        params = source.load(name)
        changed = [b for b in blocks if not torch.equal(params[b], base[b])]
        assert changed and all(("q_proj" in b or "v_proj" in b or "down_proj" in b) for b in changed)
        for block in blocks:
            torch.testing.assert_close(params[block], merged[name][block], rtol=1e-5, atol=1e-6)


def test_a_lora_vertex_on_the_pretrained_files_starts_from_theta0_in_memory(lora_pool):
    """With the pretrained parameters given (as FWHard/FWSoft give them), no adapter re-reads the base
    from disk, and every vertex is the same as when it does."""
    pool, merged, tmp_path = lora_pool
    blocks = list(merged["plain"])
    files = resolve_pool(pool, ["_pretrained_", "plain", "rs"])
    theta0 = PoolCheckpoints(pool, ["_pretrained_"], blocks, files=files).load("_pretrained_")
    from_disk = PoolCheckpoints(pool, ["plain", "rs"], blocks, files=files)
    from_memory = PoolCheckpoints(pool, ["plain", "rs"], blocks, files=files, base=(theta0, files["_pretrained_"]))
    for name in ("plain", "rs"):
        a, b = from_disk.load(name), from_memory.load(name)
        assert all(torch.equal(a[k], b[k]) for k in blocks)
    assert (from_disk.base_reads, from_memory.base_reads) == (2, 0)
    assert all(torch.equal(theta0[k], dict(tiny_llama().named_parameters())[k]) for k in blocks)  # the deltas went into copies
    # parameters from other files than the adapters' base: the base is read from disk
    elsewhere = replace(files["_pretrained_"], weight_map={k: tmp_path / "another.safetensors" for k in files["_pretrained_"].weight_map})
    other = PoolCheckpoints(pool, ["plain"], blocks, files=files, base=(theta0, elsewhere))
    other.load("plain")
    assert other.base_reads == 1


def test_the_rslora_scale_differs_from_plain(lora_pool):
    """rsLoRA scales by alpha / sqrt(r), plain LoRA by alpha / r: a reader ignoring the flag fails one of the two."""
    pool, _, _ = lora_pool
    files = resolve_pool(pool, ["plain", "rs"])
    assert files["plain"].adapter.scale == pytest.approx(8 / 4) and files["rs"].adapter.scale == pytest.approx(8 / 2)


def test_pool_loader_gives_the_same_vertex(lora_pool):
    """FusionBench's own load_peft_causal_lm (what the baselines load) and our streamed delta agree."""
    pool, merged, _ = lora_pool
    blocks = list(merged["plain"])
    streamed = PoolCheckpoints(pool, ["plain"], blocks).load("plain")
    through_pool = PoolCheckpoints(pool, ["plain"], blocks, prefer_safetensors=False)
    assert through_pool.reader_of("plain") == POOL_LOADER
    loaded = through_pool.load("plain")
    for block in blocks:
        torch.testing.assert_close(streamed[block], loaded[block], rtol=1e-5, atol=1e-6)


def test_an_adapter_with_dora_goes_to_the_pool_loader_with_the_reason(lora_pool, caplog):
    pool, _, tmp_path = lora_pool
    config_path = tmp_path / "plain" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "use_dora": True}))
    with caplog.at_level("INFO"):
        files = resolve_pool(pool, ["plain", "rs"])
    assert reader_counts(files) == {"safetensors": 0, "pool_loader": 1, LORA: 1}
    assert "use_dora" in files["plain"].why and "'plain'" in caplog.text
