"""GPT-2 text classifiers with one head per task (FusionBench's GLUE pools, ``GPT2ForSequenceClassificationPool``).

The merged model is the GPT-2 backbone (``GPT2Model``). Each task keeps its own classification head
(``score``), read from its fine-tuned checkpoint and never merged or averaged. Task t's loss is the
cross-entropy of t's head on the merged backbone's features at the last non-padding token, i.e. the
model FusionBench's ``GPT2TextClassificationTaskPool`` scores t with (it puts the merged backbone
into t's classifier). Samples are the pool's tokenized GLUE rows (``input_ids``, ``attention_mask``,
``label``); ``entropy`` (AdaMerging's objective) reads unlabelled test rows where the pool has them.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fusion_bench.modelpool.huggingface_gpt2_classification import GPT2ForSequenceClassificationPool

from ..objective import BatchLoss, TaskBatches, sample_indices, shard_batches
from .base import ModelFamily

log = logging.getLogger(__name__)

BACKBONE = "transformer"  # the backbone's attribute in GPT2ForSequenceClassification


def row_label(row) -> int:
    """A row's class: GLUE's ``label`` column, or ``labels`` as Hugging Face collators name it."""
    if "label" in row:
        return int(row["label"])
    if "labels" in row:
        return int(row["labels"])
    raise ValueError(f"a text-classification sample needs a 'label' column; got {sorted(row)}")


def tokenized_batch(rows: Sequence[dict], device=None) -> Dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask``/``labels`` of tokenized rows, without the positions no row
    attends to at the end: FusionBench's GLUE rows are padded to 512 tokens, and GPT-2 is causal, so
    dropping trailing padding changes no logit of the token the head reads (the last non-padding one)."""
    input_ids = torch.as_tensor([list(row["input_ids"]) for row in rows])
    attention = torch.as_tensor([list(row["attention_mask"]) for row in rows])
    attended = attention.any(dim=0).nonzero()
    width = int(attended[-1]) + 1 if len(attended) else input_ids.shape[1]
    batch = {"input_ids": input_ids[:, :width], "attention_mask": attention[:, :width],
             "labels": torch.as_tensor([row_label(row) for row in rows])}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


class GPT2ClassificationFamily(ModelFamily):
    name = "gpt2_classification"
    description = "GPT-2 text classifiers with a head per task (GPT2ForSequenceClassificationPool, FusionBench's gpt-2_glue)"
    losses = ("cross_entropy", "entropy")

    def __init__(self, modelpool, fabric, cache_dir=None):
        super().__init__(modelpool, fabric, cache_dir)
        self.classifiers: Dict[str, nn.Module] = {}

    @classmethod
    def accepts(cls, modelpool) -> bool:
        return isinstance(modelpool, GPT2ForSequenceClassificationPool)

    def check_entries_available(self) -> None:
        from ..checkpoint_files import local_directory

        tokenizer = getattr(self.modelpool, "_tokenizer", None)
        location = tokenizer.get("pretrained_model_name_or_path") if hasattr(tokenizer, "get") else tokenizer
        if isinstance(location, str):
            local_directory("modelpool.tokenizer", location)

    def prepare(self, model: nn.Module, tasks: Sequence[str]) -> None:
        """Task t's classifier: its fine-tuned head around *this* backbone (shared, not copied)."""
        reference = next(model.parameters())
        for task in tasks:
            if task in self.classifiers:
                continue
            classifier = self.modelpool.load_classifier(task)
            setattr(classifier, BACKBONE, model)  # drops the fine-tuned backbone the head came with
            classifier.requires_grad_(False).eval()
            classifier.score.to(device=reference.device, dtype=reference.dtype)
            if classifier.config.pad_token_id is None:
                raise ValueError(
                    f"model {task!r}: its config has no pad_token_id, so GPT2ForSequenceClassification cannot find the last "
                    f"token of a padded batch; set pad_token_id in the checkpoint's config.json to the tokenizer's pad token id"
                )
            self.classifiers[task] = classifier

    def task_batches(self, task: str, loss: str, count: Optional[int], seed: int, batch_size: int) -> TaskBatches:
        raw = self.load_split(task, loss)
        count = self.sample_count(task, len(raw), count)

        def make_batch(indices: List[int]):
            return tokenized_batch([raw[i] for i in indices], self.fabric.device)

        indices = sample_indices(len(raw), count, seed)
        return shard_batches(task, indices, batch_size, make_batch, rank=self.fabric.global_rank, world_size=self.fabric.world_size)

    def _logits(self, params, task: str, batch) -> torch.Tensor:
        classifier = self.classifiers[task]
        weights = {f"{BACKBONE}.{name}": value for name, value in params.items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return functional_call(classifier, weights, args=(), kwargs=inputs).logits.float()

    def batch_loss(self, model: nn.Module, loss: str) -> BatchLoss:
        def summed_loss(params, task, batch):
            logits = self._logits(params, task, batch)
            if loss == "cross_entropy":
                return F.cross_entropy(logits, batch["labels"], reduction="sum")
            return -(logits.softmax(dim=-1) * logits.log_softmax(dim=-1)).sum()

        return summed_loss

    def batch_correct(self, model: nn.Module):
        def correct(params, task, batch):
            return int((self._logits(params, task, batch).argmax(dim=-1) == batch["labels"]).sum())

        return correct
