"""OpenCLIP image encoders (FusionBench's ``OpenCLIPVisionModelPool``), the task-vector papers' format.

The merged model is FusionBench's ``ImageEncoder`` (``model.encode_image``); task t's logits are the
pool's classification head ``head_<t>.pt`` (normalised zero-shot text embeddings times the logit
scale) on the image embedding, as ``OpenCLIPVisionModelTaskPool`` evaluates. Only the image path's
parameters (``model.visual.*``) are merged: what is left of the text tower gets no gradient and is
the same in every fine-tune. Samples go through the encoder's ``val_preprocess`` (the train
transform's random crops would make the objective noisy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from torch import nn
from torch.func import functional_call

from ..checkpoint_files import is_openclip_pool
from ..frank_wolfe.params import ParamDict
from .image_classification import ImageClassifierFamily

VISUAL_PREFIX = "model.visual."


class OpenCLIPVisionFamily(ImageClassifierFamily):
    name = "openclip_vision"
    description = "OpenCLIP image encoders with per-task heads (OpenCLIPVisionModelPool)"

    def __init__(self, modelpool, fabric, cache_dir=None):
        super().__init__(modelpool, fabric, cache_dir)
        self.heads: Dict[str, nn.Module] = {}
        self.processor = None

    @classmethod
    def accepts(cls, modelpool) -> bool:
        return is_openclip_pool(modelpool)

    def check_entries_available(self) -> None:
        heads = self.modelpool._classification_heads or {}
        for task, head in heads.items():
            if isinstance(head, (str, Path)) and not Path(str(head)).expanduser().is_file():
                raise FileNotFoundError(f"modelpool.classification_heads.{task}: {head} does not exist; fix the path (its model_dir)")

    def load_base(self) -> nn.Module:
        from ..openclip_pool import pickled_encoder, remember_processors

        name = "_pretrained_" if self.modelpool.has_pretrained else self.modelpool.model_names[0]
        # read the pickle ourselves: the stock pool's loader cannot (openclip_checkpoints explains)
        model = pickled_encoder(self.modelpool, name)
        if model is None:
            model = self.modelpool.load_model(name)
            remember_processors(self.modelpool, model)
        self.processor = getattr(model, "val_preprocess", None) or self.modelpool.test_processor
        model.requires_grad_(False).eval()
        return self.fabric.to_device(model)

    def merged_parameters(self, model: nn.Module) -> List[str]:
        names = [name for name, _ in model.named_parameters() if name.startswith(VISUAL_PREFIX)]
        if not names:
            raise ValueError(f"the pretrained {type(model).__name__} has no {VISUAL_PREFIX}* parameters: not an OpenCLIP ImageEncoder")
        return names

    def prepare(self, model: nn.Module, tasks: Sequence[str]) -> None:
        available = set(self.modelpool._classification_heads or {})
        missing = [task for task in tasks if task not in available]
        if missing:
            raise ValueError(f"objective task(s) {missing} have no classification head in modelpool.classification_heads "
                             f"(it has {sorted(available)}); add head_<task>.pt entries or change method.objective_tasks")
        for task in tasks:
            head = self.modelpool.load_classification_head(task)
            self.heads[task] = self.fabric.to_device(head.float().requires_grad_(False).eval())

    @property
    def image_processor(self):
        return self.processor

    def encoder(self, model: nn.Module):
        dtype = next(model.parameters()).dtype

        def features(params, images):
            # the encoder runs in its compute dtype (method.compute_dtype); the heads stay fp32
            return functional_call(model, dict(params), (images.to(dtype),)).float()

        return features

    def head_logits(self, features, task):
        return self.heads[task](features)

    def merged_model(self, model: nn.Module, theta) -> nn.Module:
        # FusionBench's OpenCLIP taskpool wraps the model with fabric.setup_module, and under DDP that
        # refuses a module with no trainable parameter: hand it back trainable, as the pool loads it
        return super().merged_model(model, theta).requires_grad_(True)

    def read_merged_checkpoint(self, path: Path, model: nn.Module, block_names: Sequence[str]) -> ParamDict:
        """A merged encoder saved by FusionBench (a pickle or state dict file)."""
        from ..openclip_checkpoints import read_pickle, state_dict_of

        return self.matching_parameters(path, state_dict_of(read_pickle(Path(path)), f"init checkpoint {str(path)!r}"), model, block_names)
