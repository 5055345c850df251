"""The two training stages of the mini pool: contrastive CLIP pretraining and per-task fine-tuning.

Why this recipe (measured on a prototype of the pool): pretraining where every image's
positive is its class caption gives a pretrained model that is a weak zero-shot classifier on all
tasks at once; fine-tuning the whole vision tower against that model's frozen zero-shot head (as
the real TA20 checkpoints were made) then lifts each task a lot, and the task vectors of twenty such
fine-tunes interfere. Small random shifts keep the short fine-tunes from overfitting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPProcessor, CLIPVisionModel

from .variants import Variant


@dataclass
class TaskTensors:
    """One task's images as normalised pixel tensors (exactly what CLIPProcessor produces)."""

    name: str
    classnames: List[str]
    prompts: List[List[str]]  # prompts[c] = every template applied to class c
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def random_shift(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Translate each image by up to `max_shift` px (edge-replicated), a cheap augmentation."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    return torch.stack(
        [padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offsets.tolist())]
    )


def _lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first 10% of steps, then cosine decay to 5% of the peak."""
    warm = max(1, total // 10)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def _tokenize(processor: CLIPProcessor, texts: Sequence[str]) -> Dict[str, Tensor]:
    return processor.tokenizer(list(texts), return_tensors="pt", padding=True)


def pretrain_share(variant: Variant, task: TaskTensors) -> int:
    """How many of a task's first train images are in the pretraining mix."""
    return pretrain_count(variant, task.name, len(task.train_x))


def pretrain_count(variant: Variant, task: str, n_train: int) -> int:
    """:func:`pretrain_share` by task name and train split size (for scripts that read a built pool)."""
    fraction = variant.pretrain_fraction
    if task in variant.eval_tasks and variant.eval_pretrain_fraction is not None:
        fraction = variant.eval_pretrain_fraction
    return max(1, int(n_train * fraction))


def pretrain_clip(
    clip: CLIPModel,
    processor: CLIPProcessor,
    tasks: Sequence[TaskTensors],
    variant: Variant,
    gen: torch.Generator,
    progress: tqdm | None = None,
) -> CLIPModel:
    """Contrastive pretraining on a slice of every task's training images.

    Each image's positive text is a caption of its own class (a random template each step); the
    in-batch negatives are the captions of the other classes present in the batch. Phrasings of
    the same class are merged into one column, so they are never negatives of each other.
    """
    xs, keys, captions = [], [], []  # captions[key] = list of prompts of that (task, class)
    for t in tasks:
        k = pretrain_share(variant, t)
        xs.append(t.train_x[:k])
        keys.append(t.train_y[:k] + len(captions))
        captions.extend(t.prompts)
    x_all, key_all = torch.cat(xs), torch.cat(keys)
    n_templates = torch.tensor([len(c) for c in captions])
    flat = [p for c in captions for p in c]
    offset = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), n_templates[:-1]]), 0)
    tokens = _tokenize(processor, flat)

    clip.train()
    opt = torch.optim.AdamW(clip.parameters(), lr=variant.pretrain_lr, weight_decay=0.05)
    for step in range(variant.pretrain_steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, variant.pretrain_steps, variant.pretrain_lr)
        idx = torch.randint(0, len(x_all), (variant.pretrain_batch,), generator=gen)
        images = random_shift(x_all[idx], variant.max_shift, gen)
        uniq, target = torch.unique(key_all[idx], return_inverse=True)
        pick = offset[uniq] + (torch.rand(len(uniq), generator=gen) * n_templates[uniq]).long()
        text = {k: v[pick] for k, v in tokens.items()}

        img = F.normalize(clip.get_image_features(pixel_values=images), dim=-1)
        txt = F.normalize(clip.get_text_features(**text), dim=-1)
        logits = clip.logit_scale.exp() * img @ txt.t()  # [B, U]
        loss_i2t = F.cross_entropy(logits, target)
        # text -> image with several positives per text: -log of the softmax mass on them
        positives = F.one_hot(target, len(uniq)).t().bool()  # [U, B]
        lt = logits.t()
        loss_t2i = (lt.logsumexp(1) - lt.masked_fill(~positives, -1e4).logsumexp(1)).mean()
        loss = 0.5 * (loss_i2t + loss_t2i)

        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        if progress is not None:
            progress.set_postfix_str(f"pretrain loss {loss.item():.3f}", refresh=False)
            progress.update(1)
    clip.eval()
    return clip


def vision_tower(clip: CLIPModel) -> CLIPVisionModel:
    """A standalone CLIPVisionModel holding a copy of the CLIP model's vision tower."""
    model = CLIPVisionModel(clip.config.vision_config)
    state = {k: v for k, v in clip.state_dict().items() if k.startswith("vision_model.")}
    model.load_state_dict(state)
    return model.eval()


class ZeroShotHead(torch.nn.Module):
    """Frozen visual projection + class text embeddings + logit scale of the pretrained CLIP.

    Computes the same logits as FusionBench's HFCLIPClassifier / CLIPClassificationMixin.
    """

    def __init__(self, clip: CLIPModel, text_embeds: Tensor):
        super().__init__()
        self.projection = torch.nn.Linear(
            clip.visual_projection.in_features, clip.visual_projection.out_features, bias=False
        )
        self.projection.weight.data.copy_(clip.visual_projection.weight.data)
        self.register_buffer("text_embeds", text_embeds.detach().clone())
        self.register_buffer("scale", clip.logit_scale.detach().exp().clone())
        self.requires_grad_(False)

    def forward(self, vision: CLIPVisionModel, pixels: Tensor) -> Tensor:
        return self.scale * _embed(vision, self.projection, pixels) @ self.text_embeds.t()


@dataclass
class Anchor:
    """Generic images (from the pretraining mix) and the pretrained tower's normalised projected
    embeddings of them: the same for every task (one visual projection), so computed once."""

    images: Tensor
    embeds: Tensor

    @classmethod
    @torch.no_grad()
    def of(cls, clip: CLIPModel, images: Tensor, batch: int = 512) -> "Anchor":
        tower = vision_tower(clip).eval()
        embeds = torch.cat([_embed(tower, clip.visual_projection, images[i : i + batch]) for i in range(0, len(images), batch)])
        return cls(images, embeds)


def finetune_vision(
    clip: CLIPModel,
    head: ZeroShotHead,
    task: TaskTensors,
    variant: Variant,
    gen: torch.Generator,
    progress: tqdm | None = None,
    anchor: Anchor | None = None,
) -> CLIPVisionModel:
    """Fine-tune the whole vision tower on one task against the frozen zero-shot head.

    With ``variant.finetune_anchor > 0`` each step also pulls the projected, normalised embeddings
    of a batch of the ``anchor``'s generic images toward the pretrained tower's: the fine-tune keeps
    the pretrained function outside its task, as a fine-tune of a large CLIP does by itself (a tiny
    tower otherwise rewires features every task shares)."""
    model = vision_tower(clip).train()
    trained = [p for name, p in model.named_parameters() if not (variant.finetune_weights_only and is_bias_or_norm(name))]
    opt = torch.optim.AdamW(trained, lr=variant.finetune_lr, weight_decay=0.01)
    anchored = variant.finetune_anchor > 0 and anchor is not None and len(anchor.images) > 0
    n = len(task.train_x)
    for step in range(variant.finetune_steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, variant.finetune_steps, variant.finetune_lr)
        idx = torch.randint(0, n, (variant.finetune_batch,), generator=gen)
        images = random_shift(task.train_x[idx], variant.max_shift, gen)
        loss = F.cross_entropy(head(model, images), task.train_y[idx])
        if anchored:
            a = torch.randint(0, len(anchor.images), (variant.finetune_anchor_batch,), generator=gen)
            drift = (_embed(model, head.projection, anchor.images[a]) - anchor.embeds[a]).pow(2).sum(-1).mean()
            loss = loss + variant.finetune_anchor * drift
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress.set_postfix_str(f"fine-tune {task.name} loss {loss.item():.3f}", refresh=False)
            progress.update(1)
    return model.eval()


def is_bias_or_norm(name: str) -> bool:
    """A bias or a LayerNorm parameter of an HF CLIP vision tower (``pre_layrnorm`` is HF's spelling)."""
    return name.endswith(".bias") or "layer_norm" in name or "layrnorm" in name


def _embed(vision: CLIPVisionModel, projection: torch.nn.Module, pixels: Tensor) -> Tensor:
    """The normalised projected image embedding the zero-shot head compares with its classes."""
    return F.normalize(projection(vision(pixel_values=pixels)[1]), dim=-1)


@torch.no_grad()
def accuracy(vision: CLIPVisionModel, head: ZeroShotHead, x: Tensor, y: Tensor, batch: int = 512) -> float:
    vision.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (head(vision, x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum().item()
    return correct / len(x)


def eval_average(vision: CLIPVisionModel, heads: Dict[str, ZeroShotHead], tasks: Dict[str, TaskTensors], eval_tasks: Sequence[str]) -> float:
    """Mean test accuracy over ``eval_tasks``: the figure every line of the pool card reports."""
    return sum(accuracy(vision, heads[t], tasks[t].test_x, tasks[t].test_y) for t in eval_tasks) / len(eval_tasks)
