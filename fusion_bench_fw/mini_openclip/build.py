"""Build the offline mini OpenCLIP pool: mini-TA20's towers, written as task-vector checkpoints.

The pool is the mini CLIP pool (``fusion_bench_fw.mini``: contrastively pretrained tower, one
fine-tune per task, real digits and procedural images) re-expressed in the format of the task
arithmetic papers, so that OpenCLIP code paths run on models that merge like mini-TA20's and a merge
on either format can be checked against the other. Layout (FusionBench's ``task_vectors_checkpoints``)::

    task_vectors_checkpoints/<model>/zeroshot.pt           # pickled ImageEncoder (pretrained)
    task_vectors_checkpoints/<model>/<task>/finetuned.pt   # pickled ImageEncoder per fine-tune
    task_vectors_checkpoints/<model>/head_<task>.pt        # pickled ClassificationHead (zero-shot)
    open_clip_config/<model>.json                          # the architecture, for open_clip.add_model_config
    datasets/<task>/{train,test}                           # HF datasets (image, label), copied from mini-TA20

Heads are FusionBench's zero-shot heads of the pretrained CLIP (normalised, template-averaged text
embeddings) times its logit scale, with input normalisation: the same logits as FusionBench's CLIP
taskpool computes on the Hugging Face pool.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..mini.cache import ensure_built
from ..mini.manifest import Manifest
from ..mini.tasks import format_template
from ..mini.variants import BUILDER_VERSION as SOURCE_BUILDER_VERSION
from .convert import open_clip_config, visual_state_dict, write_open_clip_config

BUILDER_VERSION = 1
MANIFEST_FILE = "openclip_manifest.json"


@dataclass(frozen=True)
class OpenCLIPVariant:
    name: str
    source: str  # the mini CLIP variant whose towers are converted
    n_tasks: Optional[int]  # the first n tasks of the source order (eval tasks first); None = all


VARIANTS: Dict[str, OpenCLIPVariant] = {
    "ta8": OpenCLIPVariant("ta8", source="ta20", n_tasks=8),  # the 4 eval tasks + 4 others, as ViT-B-32_TA8 has 8
    "micro": OpenCLIPVariant("micro", source="micro", n_tasks=None),  # 5 tasks, 2 eval; for tests and CI
}


@dataclass
class OpenCLIPManifest:
    variant: str
    seed: int
    model_name: str
    tasks: List[str]
    eval_tasks: List[str]
    source_build: str  # the mini CLIP build converted
    checkpoints_root: str = "task_vectors_checkpoints"
    config_dir: str = "open_clip_config"
    datasets_dir: str = "datasets"
    card: str = "card.json"

    def save(self, build_dir: Path) -> None:
        (Path(build_dir) / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, build_dir: Path) -> "OpenCLIPManifest":
        return cls(**json.loads((Path(build_dir) / MANIFEST_FILE).read_text()))


def get_variant(name: str) -> OpenCLIPVariant:
    if name not in VARIANTS:
        raise ValueError(f"unknown mini OpenCLIP variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def model_name_of(variant: str) -> str:
    return f"mini-ViT-P8-{variant}"


def register_open_clip_config(build_dir: Path, manifest: OpenCLIPManifest) -> None:
    """Teach open_clip the pool's architecture name (entries ``{model_name, pickle_path}`` build by it)."""
    import open_clip

    if manifest.model_name not in open_clip.list_models():
        open_clip.add_model_config(str(Path(build_dir) / manifest.config_dir / f"{manifest.model_name}.json"))


def _zero_shot_heads(clip, processor, source: Manifest, tasks: List[str]):
    """task -> FusionBench ClassificationHead with the pretrained CLIP's zero-shot weights."""
    from fusion_bench.models.hf_clip import HFCLIPClassifier
    from fusion_bench.models.open_clip import ClassificationHead

    classifier = HFCLIPClassifier(clip, processor)
    scale = clip.logit_scale.detach().exp()
    heads = {}
    for task in tasks:
        classifier.set_classification_task(source.classnames[task], [format_template(t) for t in source.templates[task]])
        heads[task] = ClassificationHead(normalize=True, weights=classifier.zeroshot_weights.detach() * scale)
    return heads


def build_openclip_pool(variant_name: str, seed: int, out: Path, cache_dir=None) -> None:
    """Write the pool into ``out`` (a fresh directory); the card last."""
    variant = get_variant(variant_name)
    source_dir = ensure_built(variant.source, seed, cache_dir, SOURCE_BUILDER_VERSION)  # trains: outside no_grad
    started = time.perf_counter()  # the card's seconds: the conversion, not the source build
    with torch.no_grad():
        _convert(variant, seed, out, Path(source_dir), started)


def _convert(variant: OpenCLIPVariant, seed: int, out: Path, source_dir: Path, started: float) -> None:
    from transformers import CLIPModel, CLIPProcessor, CLIPVisionModel

    from ..openclip_checkpoints import build_image_encoder
    from .card import measure_openclip_card, write_card

    source = Manifest.load(source_dir)
    tasks = list(source.tasks[: variant.n_tasks] if variant.n_tasks else source.tasks)
    manifest = OpenCLIPManifest(variant.name, seed, model_name_of(variant.name), tasks,
                                [t for t in source.eval_tasks if t in tasks], source_build=source_dir.name)
    out.mkdir(parents=True)
    clip = CLIPModel.from_pretrained(source.pretrained_dir).eval()
    processor = CLIPProcessor.from_pretrained(source.processor_dir)
    vision = clip.config.vision_config
    write_open_clip_config(out / manifest.config_dir, manifest.model_name, open_clip_config(vision, clip.config.projection_dim))
    register_open_clip_config(out, manifest)

    root = out / manifest.checkpoints_root / manifest.model_name
    encoder = build_image_encoder(manifest.model_name)
    projection = clip.visual_projection.weight

    def save_encoder(hf_vision_state, path: Path) -> None:
        encoder.model.visual.load_state_dict(visual_state_dict(hf_vision_state, projection, vision.num_hidden_layers))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(encoder, path)  # a whole pickled module, as the task-vectors checkpoints are

    save_encoder(clip.vision_model.state_dict(prefix="vision_model."), root / "zeroshot.pt")
    for task in tasks:
        save_encoder(CLIPVisionModel.from_pretrained(source.models[task]).state_dict(), root / task / "finetuned.pt")
    for task, head in _zero_shot_heads(clip, processor, source, tasks).items():
        torch.save(head, root / f"head_{task}.pt")
    for task in tasks:
        for split, path in source.datasets[task].items():
            shutil.copytree(path, out / manifest.datasets_dir / task / split)
    manifest.save(out)
    card = measure_openclip_card(out, manifest, source_card=json.loads(Path(source.card).read_text()))
    write_card(out, card, time.perf_counter() - started)


def ensure_openclip_built(variant: str = "micro", seed: int = 0, cache_dir=None) -> Path:
    """The directory of a finished mini OpenCLIP build, building it (and the mini CLIP pool it converts) if needed."""
    from ..mini.cache import cache_root, is_complete_marker, publish_build

    get_variant(variant)
    name = f"openclip-{variant}-v{BUILDER_VERSION}-seed{int(seed)}"
    marker = {"builder": "mini_openclip", "version": BUILDER_VERSION, "variant": variant, "seed": int(seed)}
    return publish_build(cache_root(cache_dir), name, marker, lambda path: is_complete_marker(path, marker) and (path / MANIFEST_FILE).is_file(),
                         lambda partial: build_openclip_pool(variant, int(seed), partial, cache_dir))
