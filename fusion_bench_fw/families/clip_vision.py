"""Hugging Face CLIP vision towers (FusionBench's ``CLIPVisionModelPool``), classified zero-shot.

The merged model is the vision tower; task t's logits are FusionBench's zero-shot head of t (text
embeddings of its class names) against the projected image embedding, as FusionBench's CLIP
taskpool evaluates. ``cross_entropy`` reads labelled train samples (the paper's objective),
``entropy`` unlabelled test samples (AdaMerging's).
"""

from __future__ import annotations

import logging
from typing import Sequence

from torch import nn
from torch.func import functional_call

from fusion_bench.mixins.clip_classification import CLIPClassificationMixin
from fusion_bench.modelpool import CLIPVisionModelPool
from fusion_bench.utils import cache_utils

from .image_classification import ImageClassifierFamily

log = logging.getLogger(__name__)


class _ZeroShotHeads(CLIPClassificationMixin):
    """FusionBench's zero-shot heads and logits, outside any algorithm class."""

    def __init__(self, modelpool, fabric):
        self.modelpool = modelpool
        self.fabric = fabric
        # the mixin keeps heads in a class attribute shared by every instance: keep ours apart
        self.zeroshot_weights = {}


class CLIPVisionFamily(ImageClassifierFamily):
    name = "clip_vision"
    description = "Hugging Face CLIP vision towers (CLIPVisionModelPool)"

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

    @property
    def image_processor(self):
        return self.heads.clip_processor

    def encoder(self, model: nn.Module):
        dtype = next(model.parameters()).dtype

        def features(params, images):
            # the tower's pooled output, in its compute dtype (method.compute_dtype); FusionBench's
            # projection and text heads stay fp32
            return functional_call(model, dict(params), (images.to(dtype),))[1].float()

        return features

    def head_logits(self, features, task):
        # FusionBench's zero-shot head on given image embeddings (it skips its own tower call)
        return self.heads.compute_logits(None, None, task, image_embeds=features)
