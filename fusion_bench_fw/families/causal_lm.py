"""Hugging Face causal language models (FusionBench's ``CausalLMPool``): full fine-tunes and LoRA adapters.

The objective for task t is next-token cross-entropy on the *response* tokens of t's (prompt,
response) train samples: prompt and padding positions are masked out (label -100), each sample's
loss is the mean over its response tokens (so long answers do not outweigh short ones), and the
batch loss is the sum over its samples. A sample is right: its greedy continuation reproduces the
response and then stops, which under teacher forcing is "every response token (and the end token) is
the argmax"; that is the validation accuracy DF-Merge maximises, computed in one forward pass.

Dataset columns: ``prompt``/``response`` (the mini LLM pool), or ``instruction``/``output`` or
``input``/``output`` (Alpaca-style sets); ``input`` beside ``instruction`` is appended to the prompt.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fusion_bench.modelpool import CausalLMPool

from ..objective import BatchLoss, TaskBatches, sample_indices, shard_batches
from .base import ModelFamily

log = logging.getLogger(__name__)

IGNORE = -100  # label of positions the loss skips (prompt, padding), as Hugging Face models use
COLUMN_PAIRS = (("prompt", "response"), ("instruction", "output"), ("input", "output"))


def prompt_response(row) -> Tuple[str, str]:
    """The (prompt, response) text of a dataset row, whichever column convention it uses."""
    for prompt, response in COLUMN_PAIRS:
        if prompt in row and response in row:
            text = row[prompt]
            if prompt == "instruction" and row.get("input"):
                text = f"{text}\n{row['input']}"
            return text, row[response]
    raise ValueError(f"a causal-LM sample needs the columns {' or '.join('/'.join(p) for p in COLUMN_PAIRS)}; got {sorted(row)}")


def pad_id(tokenizer) -> int:
    """The padding id (EOS for tokenizers without a pad token; padded positions are masked anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def prompt_ids(tokenizer, prompt: str) -> List[int]:
    """A prompt's ids after the tokenizer's BOS, if it has one: the same in training and generation."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]


def encode_pairs(tokenizer, pairs: Sequence[Tuple[str, str]], device=None) -> dict:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` for (prompt, response) pairs: the
    prompt (see ``prompt_ids``), then the response and EOS; labels only on the latter."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the pool's tokenizer has no eos_token: FW-Merging's causal-LM objective marks the end of each response with it")
    rows, labels = [], []
    for prompt, response in pairs:
        prompt_part = prompt_ids(tokenizer, prompt)
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt_part + response_ids)
        labels.append([IGNORE] * len(prompt_part) + response_ids)
    width = max(len(r) for r in rows)
    pad = pad_id(tokenizer)
    batch = {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([l + [IGNORE] * (width - len(l)) for l in labels]),
    }
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def sample_response_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's mean CE over its response tokens, from the shifted next-token prediction
    (position i predicts label i+1): the per-sample loss of the objective, training and evaluation."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE
    losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none") * mask
    return losses.sum(1) / mask.sum(1).clamp(min=1)


class CausalLMFamily(ModelFamily):
    name = "causal_lm"
    description = "Hugging Face causal language models (CausalLMPool), full fine-tunes and LoRA adapters"
    losses = ("cross_entropy",)
    loss_splits = {"cross_entropy": "train"}

    def __init__(self, modelpool, fabric, cache_dir=None):
        super().__init__(modelpool, fabric, cache_dir)
        self._tokenizer = None

    @classmethod
    def accepts(cls, modelpool) -> bool:
        return isinstance(modelpool, CausalLMPool)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.modelpool.load_tokenizer()
        return self._tokenizer

    def check_entries_available(self) -> None:
        from ..checkpoint_files import entry_location, local_directory

        location, revision, _ = entry_location(getattr(self.modelpool, "_tokenizer", None))
        if location is not None:
            local_directory("modelpool.tokenizer", location, revision)

    def load_base(self) -> nn.Module:
        pool = self.modelpool
        lazy = getattr(pool, "enable_lazy_loading", False)
        if lazy:  # FusionBench's shipped LLM pools set it; its LazyStateDict is no module to merge into
            log.info("modelpool.enable_lazy_loading=true: the pretrained model is loaded whole (the merge is written into it); "
                     "the fine-tuned checkpoints are streamed tensor by tensor as always")
            pool.enable_lazy_loading = False
        try:
            model = pool.load_pretrained_model()
        finally:
            pool.enable_lazy_loading = lazy
        model.requires_grad_(False).eval()
        return self.fabric.to_device(model)

    def task_batches(self, task: str, loss: str, count: Optional[int], seed: int, batch_size: int) -> TaskBatches:
        raw = self.load_split(task, loss)
        count = self.sample_count(task, len(raw), count)

        def make_batch(indices: List[int]):
            return encode_pairs(self.tokenizer, [prompt_response(raw[i]) for i in indices], self.fabric.device)

        indices = sample_indices(len(raw), count, seed)
        return shard_batches(task, indices, batch_size, make_batch, rank=self.fabric.global_rank, world_size=self.fabric.world_size)

    @staticmethod
    def _logits(model: nn.Module, params, batch) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return functional_call(model, dict(params), args=(), kwargs=inputs).logits

    def batch_loss(self, model: nn.Module, loss: str) -> BatchLoss:
        def summed_loss(params, task, batch):
            return sample_response_losses(self._logits(model, params, batch), batch["labels"]).sum()

        return summed_loss

    def batch_correct(self, model: nn.Module):
        def correct(params, task, batch):
            logits = self._logits(model, params, batch)[:, :-1]
            labels = batch["labels"][:, 1:]
            right = (logits.argmax(-1) == labels) | (labels == IGNORE)
            return int(right.all(dim=1).sum())

        return correct
