"""A local causal-LM pool at a real small-LLM shape, for the cost benchmark (``cost_llm.py``).

Shape: SmolLM2-135M's Llama configuration (576 wide, 30 layers, 9 attention / 3 key-value heads,
MLP 1536, vocabulary 49152, tied embeddings; 135 M parameters, 270 MB in bf16). Random weights: the
pretrained model is a seeded initialization, fine-tune i is it plus a seeded random task vector
(1e-3 of each tensor's std), all saved by ``save_pretrained`` in bf16 as 2 safetensors shards with
an index, as hub checkpoints of this size come. The first 3 fine-tunes are named after 3 tasks of
the mini LLM pool (their train splits are the objective's samples, tokenized by its byte-level
tokenizer, whose 260 ids fit the vocabulary); the others are irrelevant models ``other_XX``.
Written once per ``--work-dir`` (a ``COMPLETE`` marker); a half-written pool is rewritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

SHAPE = dict(  # SmolLM2-135M (HuggingFaceTB/SmolLM2-135M config.json)
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=100000.0,
)
SHAPE_NAME = "SmolLM2-135M"
TINY = dict(SHAPE, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
SHAPES = {SHAPE_NAME: SHAPE, "tiny": TINY}  # tiny: the same code paths in seconds (tests, smoke runs)
SHARD_SIZES = {SHAPE_NAME: "150MB", "tiny": "150KB"}  # 270 MB (tiny: 240 KB) in bf16 -> 2 shards
OBJECTIVE_TASKS = ("reverse", "add", "lookup")
VERSION = 1


def names(n: int) -> List[str]:
    return list(OBJECTIVE_TASKS[:n]) + [f"other_{i:02d}" for i in range(len(OBJECTIVE_TASKS), n)]


def ensure_pool(root: Path, n_max: int, shape: str = SHAPE_NAME) -> Dict:
    """Write (or find) the pool of ``n_max`` fine-tunes of ``shape`` under ``root``; its description."""
    root = Path(root)
    marker = root / "COMPLETE"
    config = SHAPES[shape]
    wanted = {"version": VERSION, "shape": config, "n_max": n_max}
    if marker.exists():
        found = json.loads(marker.read_text())
        if {**found, "n_max": n_max} == wanted and found["n_max"] >= n_max:
            return describe(root, found["n_max"], shape)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fusion_bench_fw.mini_llm.tasks import pretraining_corpus, write_datasets
    from fusion_bench_fw.mini_llm.tokenizer import build_tokenizer

    write_datasets(root / "data", OBJECTIVE_TASKS, 64, 8, seed=0)
    build_tokenizer(pretraining_corpus(2000, 0), root / "tokenizer", 260)
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**config, bos_token_id=1, eos_token_id=2, pad_token_id=0)).to(torch.bfloat16)
    base.save_pretrained(root / "base", max_shard_size=SHARD_SIZES[shape])
    theta0 = {key: p.detach().float().clone() for key, p in base.named_parameters()}  # a tied lm_head is not listed twice
    generator = torch.Generator().manual_seed(1)
    for name in names(n_max):
        with torch.no_grad():
            for key, param in base.named_parameters():
                scale = 1e-3 * float(theta0[key].std().clamp(min=1e-3)) if theta0[key].numel() > 1 else 1e-3
                param.copy_(theta0[key] + torch.randn(param.shape, generator=generator) * scale)
        base.save_pretrained(root / "models" / name, max_shard_size=SHARD_SIZES[shape])
    marker.write_text(json.dumps(wanted))
    return describe(root, n_max, shape)


def describe(root: Path, n_max: int, shape: str = SHAPE_NAME) -> Dict:
    files = sorted((root / "models" / names(1)[0]).glob("*.safetensors"))
    return {"shape": shape, "config": SHAPES[shape], "dtype": "bfloat16", "shards": len(files), "n_max": n_max,
            "bytes_per_checkpoint": sum(f.stat().st_size for f in files), "objective_tasks": list(OBJECTIVE_TASKS), "root": str(root)}


def weight_files(root: Path, n: int) -> List[Path]:
    return [f for name in names(n) for f in sorted((Path(root) / "models" / name).glob("*.safetensors"))]


def make_modelpool(root: Path, n: int):
    """FusionBench's ``CausalLMPool`` over the pretrained model and the first n fine-tunes, loading bf16."""
    from omegaconf import DictConfig

    from fusion_bench.modelpool import CausalLMPool

    root = Path(root)
    models = {"_pretrained_": str(root / "base"), **{name: str(root / "models" / name) for name in names(n)}}
    train = {t: {"_target_": "datasets.load_from_disk", "dataset_path": str(root / "data" / t / "train")} for t in OBJECTIVE_TASKS[:n]}
    return CausalLMPool(DictConfig(models), tokenizer=str(root / "tokenizer"), model_kwargs=DictConfig({"torch_dtype": "bfloat16"}),
                        train_datasets=DictConfig(train))
