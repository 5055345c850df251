"""LoRA fine-tunes (PEFT adapters) as FW vertices, streamed: theta_i = theta_0 + scale * B @ A per adapted weight.

A pool lists a LoRA fine-tune the way FusionBench loads one, through
``fusion_bench.modelpool.causal_lm.load_peft_causal_lm`` or, for seq2seq pools (its
``flan-t5-base_glue_lora16``), ``fusion_bench.modelpool.seq2seq_lm.modelpool.load_lora_model``: both
take ``base_model_path`` and ``peft_model_path`` and merge the adapter for the baselines, which load
it whole. We read the adapter directory
ourselves: ``adapter_config.json`` for the scale and ``adapter_model.safetensors`` for the low-rank
factors, and form each adapted weight's delta when that weight is read, so a vertex never costs more
than the base weights it replaces. Adapter features that are not a plain low-rank delta of existing
weights (DoRA, trained biases, ``modules_to_save``, per-module rank/alpha patterns) go to the pool's
loader instead, with the reason in the log.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch
from safetensors import safe_open

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_LOADER_SUFFIX = "load_peft_causal_lm"  # FusionBench's loader of a causal LM + a PEFT adapter
SEQ2SEQ_PEFT_LOADER = "fusion_bench.modelpool.seq2seq_lm.modelpool.load_lora_model"  # ... of a seq2seq LM + adapter
PEFT_LOADERS = (PEFT_LOADER_SUFFIX, SEQ2SEQ_PEFT_LOADER)  # what a LoRA entry's _target_ ends with
_PREFIX = "base_model.model."  # PEFT's prefix of the wrapped model's names in a saved adapter


@dataclass(frozen=True)
class LoraAdapter:
    """One saved adapter: ``factors`` maps a base weight name (as in ``named_parameters()``) to the
    adapter file's (A, B) tensor names; delta = scale * B @ A (transposed for fan-in-fan-out layers)."""

    directory: Path
    scale: float
    fan_in_fan_out: bool
    factors: Mapping[str, Tuple[str, str]] = field(default_factory=dict)

    def deltas(self, names, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
        """The deltas of the adapted weights among ``names``, in ``dtype`` (products in float32 at least)."""
        wanted = [n for n in names if n in self.factors]
        out: Dict[str, torch.Tensor] = {}
        if not wanted:
            return out
        compute = torch.promote_types(dtype, torch.float32)
        with safe_open(str(self.directory / ADAPTER_WEIGHTS), framework="pt") as handle:
            for name in wanted:
                a_key, b_key = self.factors[name]
                delta = handle.get_tensor(b_key).to(compute) @ handle.get_tensor(a_key).to(compute)
                out[name] = (delta.t() if self.fan_in_fan_out else delta).mul_(self.scale).to(dtype)
        return out


def read_adapter(directory: Path) -> Tuple[Optional[LoraAdapter], str]:
    """(the adapter, "") or (None, why it is not streamed) for a PEFT adapter directory."""
    config_path, weights = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights.is_file():
        return None, f"{directory} has no {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        return None, f"its adapter is {config.get('peft_type')}, not LoRA"
    unsupported = [key for key in ("use_dora", "modules_to_save", "rank_pattern", "alpha_pattern", "trainable_token_indices") if config.get(key)]
    if config.get("bias", "none") != "none":
        unsupported.append(f"bias={config['bias']}")
    if unsupported:
        return None, f"its adapter uses {', '.join(unsupported)}, which is not a plain low-rank delta"
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    with safe_open(str(weights), framework="pt") as handle:
        keys = list(handle.keys())
    factors: Dict[str, Tuple[str, str]] = {}
    for key in keys:
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                return None, f"its adapter file holds {key!r}, which is not a LoRA factor"
            continue
        module = key[: -len(".lora_A.weight")]
        b_key = module + ".lora_B.weight"
        if b_key not in keys:
            return None, f"its adapter file has {key!r} but no {b_key!r}"
        factors[(module[len(_PREFIX):] if module.startswith(_PREFIX) else module) + ".weight"] = (key, b_key)
    return LoraAdapter(directory, scale, bool(config.get("fan_in_fan_out")), factors), ""
