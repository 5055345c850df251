"""What the two CLIP-like families share: labelled image batches, and a loss or accuracy from per-task logits.

A subclass says how images are preprocessed (``image_processor``) and how the model with merged
``params`` turns a task's images into class logits (``task_logits``); batching, the paper's
cross-entropy, AdaMerging's entropy and DF-Merge's accuracy follow from that alone.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Callable, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from fusion_bench.dataset import ImageClassificationDataset

from ..objective import BatchLoss, TaskBatches, sample_indices, shard_batches
from .base import ModelFamily


class ImageClassifierFamily(ModelFamily):
    losses = ("cross_entropy", "entropy")

    @property
    @abstractmethod
    def image_processor(self) -> Callable:
        """What turns one dataset image into the model's input tensor."""

    @abstractmethod
    def task_logits(self, model: nn.Module) -> Callable:
        """``logits(params, task, images)``: task t's class logits with ``params`` in ``model``."""

    def task_batches(self, task: str, loss: str, count: Optional[int], seed: int, batch_size: int) -> TaskBatches:
        labelled = self.loss_splits[loss] == "train"
        raw = self.load_split(task, loss)
        count = self.sample_count(task, len(raw), count)
        dataset = ImageClassificationDataset(raw, self.image_processor)

        def make_batch(indices: List[int]):
            items = [dataset[i] for i in indices]
            images = self.fabric.to_device(torch.stack([image for image, _ in items]))
            labels = self.fabric.to_device(torch.as_tensor([label for _, label in items])) if labelled else None
            return images, labels

        indices = sample_indices(len(raw), count, seed)
        return shard_batches(task, indices, batch_size, make_batch, rank=self.fabric.global_rank, world_size=self.fabric.world_size)

    def batch_loss(self, model: nn.Module, loss: str) -> BatchLoss:
        task_logits = self.task_logits(model)

        def summed_loss(params, task, batch):
            images, labels = batch
            logits = task_logits(params, task, images)
            if loss == "cross_entropy":
                return F.cross_entropy(logits, labels, reduction="sum")
            return -(logits.softmax(dim=-1) * logits.log_softmax(dim=-1)).sum()

        return summed_loss

    def batch_correct(self, model: nn.Module):
        task_logits = self.task_logits(model)

        def correct(params, task, batch):
            images, labels = batch
            return int((task_logits(params, task, images).argmax(dim=-1) == labels).sum())

        return correct
