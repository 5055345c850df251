"""Hugging Face CLIP vision towers (FusionBench's ``CLIPVisionModelPool``), classified zero-shot.

The merged model is the vision tower; task t's logits are FusionBench's zero-shot head of t (text
embeddings of its class names) against the projected image embedding, as FusionBench's CLIP
taskpool evaluates. ``cross_entropy`` reads labelled train samples (the paper's objective),
``entropy`` unlabelled test samples (AdaMerging's).
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fusion_bench.dataset import CLIPDataset
from fusion_bench.mixins.clip_classification import CLIPClassificationMixin
from fusion_bench.modelpool import CLIPVisionModelPool
from fusion_bench.utils import cache_utils

from ..objective import BatchLoss, TaskBatches, sample_indices, shard_batches
from .base import ModelFamily

log = logging.getLogger(__name__)


class _ZeroShotHeads(CLIPClassificationMixin):
    """FusionBench's zero-shot heads and logits, outside any algorithm class."""

    def __init__(self, modelpool, fabric):
        self.modelpool = modelpool
        self.fabric = fabric
        # the mixin keeps heads in a class attribute shared by every instance: keep ours apart
        self.zeroshot_weights = {}


class CLIPVisionFamily(ModelFamily):
    name = "clip_vision"
    description = "Hugging Face CLIP vision towers (CLIPVisionModelPool)"
    losses = ("cross_entropy", "entropy")

    def __init__(self, modelpool, fabric, cache_dir=None):
        super().__init__(modelpool, fabric, cache_dir)
        self.heads = _ZeroShotHeads(modelpool, fabric)

    @classmethod
    def accepts(cls, modelpool) -> bool:
        return isinstance(modelpool, CLIPVisionModelPool)

    def check_entries_available(self) -> None:
        from ..checkpoint_files import entry_location, local_directory

        location, revision, _ = entry_location(getattr(self.modelpool, "_processor", None))
        if location is not None:  # a path or repo id; a config the pool instantiates is its own business
            local_directory("modelpool.processor", location, revision)

    def prepare(self, model: nn.Module, tasks: Sequence[str]) -> None:
        # FusionBench caches zero-shot heads on disk keyed by (task, model name) only; keep this run's
        # heads in the run's own directory so two pools with the same model names never mix
        if self.cache_dir is not None:
            cache_utils.set_default_cache_dir(self.cache_dir)
        self.heads.setup_zero_shot_classification_head(task_names=list(tasks))

    def task_batches(self, task: str, loss: str, count: Optional[int], seed: int, batch_size: int) -> TaskBatches:
        labelled = self.loss_splits[loss] == "train"
        raw = self.load_split(task, loss)
        count = self.sample_count(task, len(raw), count)
        dataset = CLIPDataset(raw, self.heads.clip_processor)

        def make_batch(indices: List[int]):
            items = [dataset[i] for i in indices]
            images = self.fabric.to_device(torch.stack([image for image, _ in items]))
            labels = self.fabric.to_device(torch.as_tensor([label for _, label in items])) if labelled else None
            return images, labels

        indices = sample_indices(len(raw), count, seed)
        return shard_batches(task, indices, batch_size, make_batch, rank=self.fabric.global_rank, world_size=self.fabric.world_size)

    def _task_logits(self, model: nn.Module):
        """``logits(params, task, images)``: task t's zero-shot logits with ``params`` in the tower."""
        compute_logits = self.heads.compute_logits
        dtype = next(model.parameters()).dtype

        def logits(params, task, images):
            def tower(pixel_values):
                # the tower runs in its compute dtype (method.compute_dtype); FusionBench's projection and text heads stay fp32
                return None, functional_call(model, dict(params), (pixel_values.to(dtype),))[1].float()

            return compute_logits(tower, images, task)

        return logits

    def batch_loss(self, model: nn.Module, loss: str) -> BatchLoss:
        task_logits = self._task_logits(model)

        def summed_loss(params, task, batch):
            images, labels = batch
            logits = task_logits(params, task, images)
            if loss == "cross_entropy":
                return F.cross_entropy(logits, labels, reduction="sum")
            return -(logits.softmax(dim=-1) * logits.log_softmax(dim=-1)).sum()

        return summed_loss

    def batch_correct(self, model: nn.Module):
        task_logits = self._task_logits(model)

        def correct(params, task, batch):
            images, labels = batch
            return int((task_logits(params, task, images).argmax(dim=-1) == labels).sum())

        return correct
