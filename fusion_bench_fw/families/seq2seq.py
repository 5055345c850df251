"""Text-to-text models (T5, Flan-T5; FusionBench's ``Seq2SeqLMPool``): full fine-tunes and LoRA adapters.

The whole encoder-decoder is merged. Task t's loss is the cross-entropy of the target tokens given
the input (teacher forcing): each sample's mean over its target tokens, summed over the batch, as
for causal LMs. A sample is right when every target token (its end token included) is the argmax,
which is what greedy generation would produce. Rows are what FusionBench's flan-T5 GLUE loader
writes (``input_ids``, ``attention_mask``, ``labels`` with -100 on padding, padded to a fixed length;
the padding is cut off per batch) or text (``input_text``/``target_text``), tokenized here.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import torch
from hydra.utils import instantiate
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fusion_bench.modelpool import Seq2SeqLMPool

from ..objective import BatchLoss, TaskBatches, sample_indices, shard_batches
from .base import ModelFamily
from .causal_lm import IGNORE

log = logging.getLogger(__name__)


def load_seq2seq_tokenizer(config):
    """The tokenizer a Seq2SeqLMPool config names (a repo id / directory, or a ``_target_`` config).

    Workaround: FusionBench 0.2.33's ``Seq2SeqLMPool.load_tokenizer`` calls
    ``isinstance(self._tokenizer, *args)`` and so raises ``TypeError`` when called without
    arguments, so we instantiate the pool's ``tokenizer`` config ourselves, the way its other pools do."""
    if config is None:
        raise ValueError("the Seq2SeqLMPool has no tokenizer: set modelpool.tokenizer (e.g. {_target_: transformers.AutoTokenizer.from_pretrained, "
                         "pretrained_model_name_or_path: google/flan-t5-base})")
    if isinstance(config, str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(config)
    return instantiate(config)


def _trimmed(rows: List[List[int]], keep) -> torch.Tensor:
    """Rows as one tensor, cut after the last column where any row has a value ``keep`` accepts."""
    tensor = torch.as_tensor(rows)
    used = keep(tensor).any(dim=0).nonzero()
    return tensor[:, : int(used[-1]) + 1] if len(used) else tensor


def text_to_text_batch(rows: Sequence[dict], tokenizer, device=None) -> Dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask``/``labels`` of a batch of rows (see the module docstring)."""
    if all("input_ids" in row and "labels" in row for row in rows):
        attention = _trimmed([list(row["attention_mask"]) for row in rows], lambda t: t != 0)
        input_ids = torch.as_tensor([list(row["input_ids"])[: attention.shape[1]] for row in rows])
        labels = _trimmed([list(row["labels"]) for row in rows], lambda t: t != IGNORE)
        labels = labels.masked_fill(labels == tokenizer.pad_token_id, IGNORE)  # rows padded with pad, not -100
    elif all("input_text" in row and "target_text" in row for row in rows):
        inputs = tokenizer([row["input_text"] for row in rows], padding=True, return_tensors="pt")
        targets = tokenizer([row["target_text"] for row in rows], padding=True, return_tensors="pt")
        input_ids, attention = inputs["input_ids"], inputs["attention_mask"]
        labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, IGNORE)
    else:
        raise ValueError(f"a text-to-text sample needs the columns input_ids/attention_mask/labels or input_text/target_text; got {sorted(rows[0])}")
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def target_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's mean CE over its target tokens (labels != -100)."""
    mask = labels != IGNORE
    losses = F.cross_entropy(logits.float().transpose(1, 2), labels.clamp(min=0), reduction="none") * mask
    return losses.sum(1) / mask.sum(1).clamp(min=1)


class Seq2SeqFamily(ModelFamily):
    name = "seq2seq"
    description = "Hugging Face text-to-text models (Seq2SeqLMPool: T5, Flan-T5), full fine-tunes and LoRA adapters"
    losses = ("cross_entropy",)
    loss_splits = {"cross_entropy": "train"}

    def __init__(self, modelpool, fabric, cache_dir=None):
        super().__init__(modelpool, fabric, cache_dir)
        self._tokenizer = None

    @classmethod
    def accepts(cls, modelpool) -> bool:
        return isinstance(modelpool, Seq2SeqLMPool)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_seq2seq_tokenizer(getattr(self.modelpool, "_tokenizer", None))
        return self._tokenizer

    def check_entries_available(self) -> None:
        from ..checkpoint_files import entry_location, local_directory

        location, revision, _ = entry_location(getattr(self.modelpool, "_tokenizer", None))
        if location is not None:
            local_directory("modelpool.tokenizer", location, revision)

    def task_batches(self, task: str, loss: str, count: Optional[int], seed: int, batch_size: int) -> TaskBatches:
        raw = self.load_split(task, loss)
        count = self.sample_count(task, len(raw), count)

        def make_batch(indices: List[int]):
            return text_to_text_batch([raw[i] for i in indices], self.tokenizer, self.fabric.device)

        indices = sample_indices(len(raw), count, seed)
        return shard_batches(task, indices, batch_size, make_batch, rank=self.fabric.global_rank, world_size=self.fabric.world_size)

    @staticmethod
    def _logits(model: nn.Module, params, batch) -> torch.Tensor:
        # labels make the model build the decoder inputs (shifted right, -100 -> pad) itself
        return functional_call(model, dict(params), args=(), kwargs=dict(batch)).logits

    def batch_loss(self, model: nn.Module, loss: str) -> BatchLoss:
        def summed_loss(params, task, batch):
            return target_losses(self._logits(model, params, batch), batch["labels"]).sum()

        return summed_loss

    def batch_correct(self, model: nn.Module):
        def correct(params, task, batch):
            labels = batch["labels"]
            right = (self._logits(model, params, batch).argmax(-1) == labels) | (labels == IGNORE)
            return int(right.all(dim=1).sum())

        return correct
