"""The pool card's AdaMerging figures: FusionBench's own layer-wise AdaMerging run on the finished build.

Two runs over every model of the pool, differing only in the tasks whose unlabeled test images feed
the entropy: the eval tasks (the paper's fair setting) and all tasks (FusionBench's default). The
merged towers are scored with the card's zero-shot heads, like every other card figure.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import torch

import lightning as L
from lightning.fabric.loggers import TensorBoardLogger
from omegaconf import DictConfig

from .manifest import Manifest, load_manifest
from .training import TaskTensors, ZeroShotHead, eval_average

# FusionBench's CLIP AdaMerging settings (config/method/adamerging/clip.yaml), fewer steps on a CPU
SETTINGS = dict(optimizer="adam", lr=1e-3, init_values=0.3, clamp_weights=False, tie_weights=True, strict=False, devices=1,
                batch_size=16, num_workers=0, fast_dev_run=False, save_merging_weights=False, weights=None)


def _modelpool(manifest: Manifest):
    """FusionBench's CLIPVisionModelPool over a loaded manifest (absolute paths): every model, every test split."""
    from fusion_bench.modelpool import CLIPVisionModelPool

    from .pools import _datasets
    from .registry import register_tasks

    register_tasks(manifest.classnames, manifest.templates)
    models = {"_pretrained_": manifest.pretrained_dir, **manifest.models}
    return CLIPVisionModelPool(DictConfig(models), test_datasets=_datasets(manifest, list(manifest.tasks), "test"), processor=manifest.processor_dir)


def layer_wise_adamerging(manifest: Manifest, objective_tasks: Optional[Sequence[str]], steps: int, seed: int = 0):
    """The merged CLIPVisionModel of FusionBench's layer-wise AdaMerging (entropy on ``objective_tasks``; None = all).

    ``seed`` fixes the order its shuffled test loaders draw batches in (torch's global generator, restored
    afterwards): unseeded, the same build gave 27.5, 27.6 and 28.4."""
    from ..baselines.adamerging import objective_adamerging

    with tempfile.TemporaryDirectory() as scratch, torch.random.fork_rng():  # scratch: FusionBench's head cache and hyperparameter log
        torch.manual_seed(seed)
        algorithm = objective_adamerging("clip_layer_wise_adamerging", objective_tasks, max_steps=steps, cache_dir=scratch, **SETTINGS)
        # what the fusion_bench program hands it: a Fabric with a logger (layer-wise logs its hyperparameters)
        algorithm.fabric = algorithm._fabric = L.Fabric(accelerator="cpu", devices=1, loggers=TensorBoardLogger(scratch, name="adamerging"))
        return algorithm.run(_modelpool(manifest)).eval()


def adamerging_figures(manifest: Manifest, heads: Mapping[str, ZeroShotHead], tasks: Mapping[str, TaskTensors], steps: int, seed: int = 0) -> Dict:
    eval_tasks = list(manifest.eval_tasks)
    out = {"steps": steps, "seed": seed, "method": "FusionBench CLIPLayerWiseAdaMergingAlgorithm", **{k: v for k, v in SETTINGS.items() if k in ("lr", "init_values", "batch_size")}}
    for key, objective in (("adamerging_objective", eval_tasks), ("adamerging_all", None)):
        merged = layer_wise_adamerging(manifest, objective, steps, seed=seed)
        out[key] = eval_average(merged, heads, tasks, eval_tasks)
    return out


def eval_task_tensors(manifest: Manifest):
    """The card's zero-shot heads and test tensors of the eval tasks, rebuilt from a finished build."""
    from datasets import load_from_disk
    from transformers import CLIPModel, CLIPProcessor

    from .build import _text_head
    from .tasks import SPECS

    clip, processor = CLIPModel.from_pretrained(manifest.pretrained_dir), CLIPProcessor.from_pretrained(manifest.processor_dir)
    heads, tasks = {}, {}
    for t in manifest.eval_tasks:
        heads[t] = _text_head(clip, processor, SPECS[t])
        data = load_from_disk(manifest.datasets[t]["test"])
        x = processor(images=list(data["image"]), return_tensors="pt")["pixel_values"]
        tasks[t] = TaskTensors(t, [], [], x[:0], x[:0], x, torch.tensor(data["label"]))
    return heads, tasks


def add_to_card(build_dir, steps: int, command: str) -> Dict:
    """Measure AdaMerging on a finished build and rewrite its card.json / card.md with the figures and verdicts."""
    from .card import write_card

    manifest = load_manifest(build_dir)
    card_path = Path(manifest.card)
    card = json.loads(card_path.read_text())
    heads, tasks = eval_task_tensors(manifest)
    # seeded by the pool's seed, so one build and one command give one card
    card["adamerging"] = {**adamerging_figures(manifest, heads, tasks, steps, seed=manifest.seed), "command": command}
    write_card(card_path.parent, card, card["build_seconds"])  # judges the criteria again, now with AdaMerging's figures
    return json.loads(card_path.read_text())
