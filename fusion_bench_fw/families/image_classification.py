"""What the two CLIP-like families share: labelled image batches, and a loss or accuracy from per-task logits.

A subclass says how images are preprocessed (``image_processor``), how the model with merged
``params`` turns images into features (``encoder``) and a task's head turns features into class
logits (``head_logits``); batching, the paper's cross-entropy, AdaMerging's entropy, DF-Merge's
accuracy and forward passes shared by several tasks' batches follow from that alone.
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
    def encoder(self, model: nn.Module) -> Callable:
        """``features(params, images)``: the merged encoder's image features with ``params`` in ``model``."""

    @abstractmethod
    def head_logits(self, features: torch.Tensor, task: str) -> torch.Tensor:
        """Task t's class logits from image features (its fixed head)."""

    def task_logits(self, model: nn.Module) -> Callable:
        """``logits(params, task, images)``: task t's class logits with ``params`` in ``model``."""
        encode = self.encoder(model)
        return lambda params, task, images: self.head_logits(encode(params, images), task)

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

    @staticmethod
    def summed_loss(logits: torch.Tensor, labels: Optional[torch.Tensor], loss: str) -> torch.Tensor:
        if loss == "cross_entropy":
            return F.cross_entropy(logits, labels, reduction="sum")
        return -(logits.softmax(dim=-1) * logits.log_softmax(dim=-1)).sum()

    def batch_loss(self, model: nn.Module, loss: str) -> BatchLoss:
        task_logits = self.task_logits(model)

        def summed_loss(params, task, batch):
            images, labels = batch
            return self.summed_loss(task_logits(params, task, images), labels, loss)

        return summed_loss

    def batch_losses(self, model: nn.Module, loss: str):
        """The tasks share the encoder: one pass over every batch's images, then each task's head."""
        encode = self.encoder(model)

        def losses(params, items):
            features = encode(params, torch.cat([images for _, (images, _) in items]))
            values, start = [], 0
            for task, (images, labels) in items:
                values.append(self.summed_loss(self.head_logits(features[start : start + len(images)], task), labels, loss))
                start += len(images)
            return values

        return losses

    def batch_correct(self, model: nn.Module):
        task_logits = self.task_logits(model)

        def correct(params, task, batch):
            images, labels = batch
            return int((task_logits(params, task, images).argmax(dim=-1) == labels).sum())

        return correct
