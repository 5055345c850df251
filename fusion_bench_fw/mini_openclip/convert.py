"""A Hugging Face CLIP vision tower as an OpenCLIP ``VisionTransformer``: the same function, other names.

Both are OpenAI's ViT: patch conv, class token, learned positions, pre-LN blocks with QuickGELU MLPs,
a final LayerNorm on the class token and a linear projection. Only the layout differs: OpenCLIP packs
q/k/v into one ``in_proj`` of ``nn.MultiheadAttention`` and stores the projection transposed as
``proj``; Hugging Face keeps the projection outside the tower (``CLIPModel.visual_projection``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping

import torch

HF_VISION_PREFIX = "vision_model."

_BLOCK = {  # Hugging Face encoder layer -> OpenCLIP residual block, for the parameters that map one to one
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def open_clip_config(vision_config, projection_dim: int) -> Dict:
    """An open_clip model config (``add_model_config`` JSON) with the tower's architecture; the text
    side is a minimal placeholder: the task-vectors ``ImageEncoder`` drops the text transformer."""
    width, heads = vision_config.hidden_size, vision_config.num_attention_heads
    if vision_config.hidden_act != "quick_gelu":
        raise ValueError(f"only QuickGELU towers map onto OpenCLIP's OpenAI ViT (got hidden_act={vision_config.hidden_act!r})")
    return {
        "embed_dim": projection_dim,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": vision_config.image_size,
            "layers": vision_config.num_hidden_layers,
            "width": width,
            "head_width": width // heads,
            "mlp_ratio": vision_config.intermediate_size / width,
            "patch_size": vision_config.patch_size,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 16, "width": 32, "heads": 2, "layers": 1},
    }


def write_open_clip_config(directory: Path, model_name: str, config: Dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{model_name}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def visual_state_dict(hf_vision: Mapping[str, torch.Tensor], visual_projection: torch.Tensor, layers: int) -> Dict[str, torch.Tensor]:
    """OpenCLIP ``visual.*`` names (without the ``visual.`` prefix) -> tensors, from a Hugging Face
    vision tower's state dict (``vision_model.*`` names) and ``visual_projection.weight``."""
    hf = {name[len(HF_VISION_PREFIX):]: tensor for name, tensor in hf_vision.items() if name.startswith(HF_VISION_PREFIX)}
    out = {
        "class_embedding": hf["embeddings.class_embedding"],
        "conv1.weight": hf["embeddings.patch_embedding.weight"],
        "positional_embedding": hf["embeddings.position_embedding.weight"],
        "ln_pre.weight": hf["pre_layrnorm.weight"],
        "ln_pre.bias": hf["pre_layrnorm.bias"],
        "ln_post.weight": hf["post_layernorm.weight"],
        "ln_post.bias": hf["post_layernorm.bias"],
        "proj": visual_projection.t(),
    }
    for i in range(layers):
        source, target = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{target}attn.in_proj_{kind}"] = torch.cat([hf[f"{source}self_attn.{p}_proj.{kind}"] for p in "qkv"], dim=0)
            for hf_name, oc_name in _BLOCK.items():
                out[f"{target}{oc_name}.{kind}"] = hf[f"{source}{hf_name}.{kind}"]
    return {name: tensor.detach().clone().contiguous() for name, tensor in out.items()}
