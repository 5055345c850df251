"""The model repos of the stand-in, laid out as huggingface_hub leaves a download in its cache.

``HubRepo`` mirrors the cache layout readers rely on (``snapshot_download(local_files_only=True)``,
``from_pretrained`` offline): files live in ``blobs/`` (LFS files named by sha256, others by their
git blob sha1, as the hub names them) and are symlinked from ``snapshots/<revision>/``, and
``refs/main`` names the revision.

The weights are random but have the real ViT-B/32 shapes (or tiny ones for tests). transformers'
random init leaves every linear bias and LayerNorm shift at exactly zero, which real CLIP weights
never are; those tensors get seeded values (``fill_zero_tensors``), else they would stay zero in every
fine-tune and any cosine score (FusionBench's FW-Merging LMO) would divide by a zero norm. The
fine-tunes are the pretrained vision tower plus a seeded perturbation of ~5% of each tensor's norm,
so they sit where real fine-tunes sit for the distance screen (``max_relative_distance``). The real CLIP BPE
vocabulary cannot be downloaded, so the tokenizer is byte-level (``mini/tiny_clip.py``) plus one BPE
merge chain per word suffix of every pool task's prompts: each prompt word becomes one token, which
keeps the longest prompt (GTSRB's, 98 letters) within CLIP's 77 positions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from huggingface_hub.file_download import repo_folder_name
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast, CLIPVisionModel

from ..mini.tiny_clip import _SPECIALS, _base_vocab, _letter_tokenizer, _words

VOCAB_SIZE, MAX_POSITIONS, IMAGE_SIZE, PATCH_SIZE = 49408, 77, 224, 32  # openai/clip-vit-base-patch32
SHAPES = {  # the towers' widths and depths; "vit-b-32" are transformers' CLIPConfig defaults (the real model)
    "vit-b-32": dict(text=(512, 2048, 12, 8), vision=(768, 3072, 12, 12), projection_dim=512),
    "tiny": dict(text=(32, 64, 2, 2), vision=(32, 64, 2, 2), projection_dim=16),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FINETUNE_RELATIVE_NORM = 0.05
ZERO_FILL_STD = 0.02  # std of the values given to tensors the random init leaves at zero (CLIP's init std for weights)
_LFS_SUFFIXES = (".safetensors", ".parquet", ".bin", ".arrow")


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256() if path.suffix in _LFS_SUFFIXES else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


class HubRepo:
    """One repo folder (``models--ORG--NAME`` / ``datasets--ORG--NAME``) of a hub cache."""

    def __init__(self, hub_dir: Path, repo_id: str, revision: str, repo_type: str = "model"):
        self.root = Path(hub_dir) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
        self.revision = revision
        self.snapshot = self.root / "snapshots" / revision

    def add_file(self, relative: str, source: Path) -> None:
        """Move ``source`` into blobs/ and link it from the snapshot as ``relative``."""
        blob = self.root / "blobs" / _file_hash(source)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(blob))
        link = self.snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))

    def add_directory(self, directory: Path) -> "HubRepo":
        for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
            self.add_file(path.relative_to(directory).as_posix(), path)
        (self.root / "refs").mkdir(parents=True, exist_ok=True)
        (self.root / "refs" / "main").write_text(self.revision)
        return self


def _suffix_merges(words: Iterable[tuple]) -> List[tuple]:
    """For each word s1..sn: merges (s_{n-1}, s_n</w>), (s_{n-2}, s_{n-1}s_n</w>), ... Every merge's
    right side ends a word, so in any word only its last pair can match and the chain runs to one token."""
    merges: Dict[tuple, None] = {}
    for word in words:
        for k in range(len(word) - 2, -1, -1):
            merges[(word[k], "".join(word[k + 1 :]))] = None
    return list(merges)


def write_processor(directory: Path, prompts: List[str]) -> CLIPProcessor:
    """Save a CLIPProcessor (fast byte-level tokenizer + the real ViT-B/32 image processor) and
    check, reloaded, that every prompt fits CLIP's positions and vocabulary."""
    with tempfile.TemporaryDirectory() as scratch:
        merges = _suffix_merges(_words(_letter_tokenizer(Path(scratch)), prompts))
        vocab = _base_vocab()
        for a, b in merges:
            vocab.setdefault(a + b, len(vocab))
        for special in _SPECIALS:
            vocab[special] = len(vocab)  # the specials take the top ids, as in CLIP's vocabulary
        if len(vocab) > VOCAB_SIZE:
            raise ValueError(f"the prompts need {len(vocab)} tokens, more than CLIP's {VOCAB_SIZE}")
        (Path(scratch) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (Path(scratch) / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        tokenizer = CLIPTokenizerFast(str(Path(scratch) / "vocab.json"), str(Path(scratch) / "merges.txt"), model_max_length=MAX_POSITIONS)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(directory))
    processor = CLIPProcessor.from_pretrained(str(directory))
    ids = processor.tokenizer(prompts)["input_ids"]
    longest = max(ids, key=len)
    if len(longest) > MAX_POSITIONS or max(map(max, ids)) >= VOCAB_SIZE:
        raise ValueError(f"a prompt tokenizes to {len(longest)} ids (max id {max(map(max, ids))}): over CLIP's limits")
    return processor


def clip_config(shape: str, processor: CLIPProcessor) -> CLIPConfig:
    def tower(widths):
        hidden, intermediate, layers, heads = widths
        return dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads)

    spec, tok = SHAPES[shape], processor.tokenizer
    return CLIPConfig(
        text_config=dict(tower(spec["text"]), vocab_size=VOCAB_SIZE, max_position_embeddings=MAX_POSITIONS,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(tower(spec["vision"]), image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        projection_dim=spec["projection_dim"],
    )


def _shard_size(state_dict, shards: int) -> int:
    """The smallest max_shard_size (bytes) for which huggingface_hub's splitter (the one
    save_pretrained uses) makes at most ``shards`` files; the count only falls as the size grows."""
    count = lambda size: len(split_torch_state_dict_into_shards(state_dict, max_shard_size=size).filename_to_tensors)
    low, high = 1, sum(t.numel() * t.element_size() for t in state_dict.values())
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(middle) > shards else (low, middle)
    if count(low) != shards:
        raise ValueError(f"these tensors cannot be split into exactly {shards} shards")
    return low


def save_model(model: torch.nn.Module, directory: Path, dtype: str, shards: int) -> None:
    """save_pretrained in safetensors, cast to ``dtype`` (config.json records it), in ``shards`` files."""
    model = model.to(DTYPES[dtype])
    extra = {"max_shard_size": _shard_size(model.state_dict(), shards)} if shards > 1 else {}
    model.save_pretrained(str(directory), safe_serialization=True, **extra)
    written = len(list(Path(directory).glob("*.safetensors")))
    if written != shards:
        raise RuntimeError(f"save_pretrained wrote {written} safetensors files in {directory}, not {shards}")


def fill_zero_tensors(model: torch.nn.Module, seed: int) -> List[str]:
    """Seeded N(0, ZERO_FILL_STD) values for every all-zero parameter (biases, LayerNorm shifts); their names."""
    generator = torch.Generator().manual_seed(seed + 7919)
    filled = []
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * ZERO_FILL_STD)
                filled.append(name)
    return filled


def finetune_state(base: Dict[str, torch.Tensor], seed: int) -> Dict[str, torch.Tensor]:
    """``base`` with seeded noise of FINETUNE_RELATIVE_NORM x each tensor's norm (in expectation)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in base.items():
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
        out[name] = tensor + noise * (FINETUNE_RELATIVE_NORM * tensor.norm() / max(tensor.numel(), 1) ** 0.5)
    return out


def write_model_repos(hub_dir: Path, scratch: Path, *, pretrained_repo: str, finetune_repos: Dict[str, str], revisions: Dict[str, str],
                      prompts: List[str], shape: str, dtype: str, shards: int, seed: int, check_space=None) -> None:
    """The pretrained CLIPModel + processor repo and one CLIPVisionModel repo per fine-tune."""
    staged = scratch / "pretrained"
    processor = write_processor(staged, prompts)
    config = clip_config(shape, processor)
    torch.manual_seed(seed)
    clip = CLIPModel(config).eval()
    fill_zero_tensors(clip, seed)
    vision = CLIPVisionModel(config.vision_config).eval()
    base = {k: v.detach().clone() for k, v in clip.vision_model.state_dict().items()}
    if check_space is not None:
        size = DTYPES[dtype].itemsize
        check_space(size * (sum(p.numel() for p in clip.parameters()) + len(finetune_repos) * sum(p.numel() for p in vision.parameters())))
    save_model(clip, staged, dtype, shards)
    del clip
    HubRepo(hub_dir, pretrained_repo, revisions[pretrained_repo]).add_directory(staged)
    vision = vision.to(DTYPES[dtype])
    for index, (task, repo_id) in enumerate(finetune_repos.items()):
        staged = scratch / f"finetune-{index}"
        # the seed depends on the task's name, so a subset of tasks gets the same weights
        vision.vision_model.load_state_dict(finetune_state(base, seed * 1_000_003 + int(hashlib.sha1(task.encode()).hexdigest()[:8], 16)))
        save_model(vision, staged, dtype, shards)
        HubRepo(hub_dir, repo_id, revisions[repo_id]).add_directory(staged)
