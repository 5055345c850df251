"""Build one mini pool into a directory: data sets, pretrained CLIP, fine-tuned towers, card, manifest.

Everything is a function of (variant, seed): the data come from numpy generators seeded per task,
torch is seeded for initialisation and uses explicit generators for sampling, and every training
computation runs on a fixed number of threads (fine-tunes on one each, in parallel processes;
the pretraining on ``variant.pretrain_threads``), so the same seed gives
byte-identical data and checkpoints on the same kind of machine, whatever its core count.
This function writes into whatever directory it is given; `cache.ensure_built` gives it a temporary
one and publishes it atomically.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Dict

import datasets
import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image
from tqdm.auto import tqdm
from transformers import CLIPVisionModel

from .card import measure_card, write_card
from .manifest import Manifest
from .finetune_jobs import FinetuneJob, num_workers, run_jobs, scrub_denormals, torch_threads
from .tasks import SPECS, format_template
from .tiny_clip import new_clip, write_processor
from .training import Anchor, TaskTensors, ZeroShotHead, pretrain_clip, pretrain_share, vision_tower
from .variants import BUILDER_VERSION, Variant

_SPLIT_IDS = {"train": 0, "test": 1}


@contextmanager
def _build_settings():
    """One intra-op thread (results depend on the thread count, and a shared machine makes more
    threads slower, see finetune_jobs; the pretraining may fix another count), denormals flushed
    to zero (tiny activations can slow CPU training by an order of magnitude), and no per-split
    progress bars from `datasets`.
    torch has no getter for the denormal flag; it is left off afterwards, its default."""
    threads = torch.get_num_threads()
    bars = datasets.utils.logging.is_progress_bar_enabled()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
        if bars:
            datasets.enable_progress_bars()


def _task_rng(seed: int, task: str, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(task.encode()), _SPLIT_IDS[split]])


def _save_split(images: np.ndarray, labels: np.ndarray, classnames, path: Path):
    """Save as a Hugging Face dataset on disk (`image` as PIL/PNG, `label` as ClassLabel)."""
    pil = [Image.fromarray(a) for a in images]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(classnames))})
    Dataset.from_dict({"image": pil, "label": labels.tolist()}, features=features).save_to_disk(str(path))
    return pil


def _make_task(variant: Variant, seed: int, name: str, out: Path, processor) -> TaskTensors:
    spec = SPECS[name]
    tensors = {}
    for split, n in (("train", variant.n_train), ("test", variant.n_test)):
        images, labels = spec.generate(_task_rng(seed, name, split), n, split)
        pil = _save_split(images, labels, spec.classnames, out / "data" / name / split)
        tensors[split] = (
            processor(images=pil, return_tensors="pt")["pixel_values"],
            torch.from_numpy(labels).long(),
        )
    prompts = [[format_template(t)(c) for t in spec.templates] for c in spec.classnames]
    return TaskTensors(name, list(spec.classnames), prompts, *tensors["train"], *tensors["test"])


def _text_head(clip, processor, spec) -> ZeroShotHead:
    """The zero-shot head exactly as FusionBench builds it (HFCLIPClassifier.set_classification_task)."""
    from fusion_bench.models.hf_clip import HFCLIPClassifier

    classifier = HFCLIPClassifier(clip, processor)
    classifier.set_classification_task(list(spec.classnames), [format_template(t) for t in spec.templates])
    return ZeroShotHead(clip, classifier.zeroshot_weights)


def _dir_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def build_pool(variant: Variant, seed: int, out: Path, version: int = BUILDER_VERSION) -> Manifest:
    """Build the whole pool into `out` (which must be empty or absent) and return its manifest."""
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    steps = variant.pretrain_steps + len(variant.tasks) * variant.finetune_steps
    with _build_settings(), tqdm(total=steps, desc=f"Building mini pool {variant.name} seed {seed}", unit="step") as bar:
        bar.set_postfix_str("generating data")
        processor = write_processor(out / "clip")
        tasks: Dict[str, TaskTensors] = {
            name: _make_task(variant, seed, name, out, processor) for name in variant.tasks
        }

        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        with torch_threads(variant.pretrain_threads):
            clip = pretrain_clip(new_clip(variant, processor), processor, list(tasks.values()), variant, gen, bar)
        scrub_denormals(clip)
        clip.save_pretrained(str(out / "clip"))
        # FusionBench caches zero-shot heads by the CLIP model's path; a name derived from the
        # weights keeps a head computed for other weights from ever being reused.
        clip_dir = out / f"clip-{_dir_digest(out / 'clip')}"
        (out / "clip").rename(clip_dir)

        heads = {name: _text_head(clip, processor, SPECS[name]) for name in variant.tasks}
        anchor = None
        if variant.finetune_anchor > 0:  # v4: the pretraining mix's images, embedded once by the pretrained tower
            anchor = Anchor.of(clip, torch.cat([t.train_x[: pretrain_share(variant, t)] for t in tasks.values()]))
        jobs = [
            FinetuneJob(name, str(clip_dir), heads[name].text_embeds, tasks[name].train_x,
                        tasks[name].train_y, variant, seed, str(out / "models" / name), anchor=anchor)
            for name in variant.tasks
        ]
        bar.set_postfix_str(f"fine-tuning {len(jobs)} tasks on {num_workers(len(jobs))} processes")

        def done(task: str) -> None:
            bar.set_postfix_str(f"fine-tuned {task}")
            bar.update(variant.finetune_steps)

        run_jobs(jobs, done)
        finetuned = {name: CLIPVisionModel.from_pretrained(job.out_dir).eval() for name, job in zip(variant.tasks, jobs)}

        bar.set_postfix_str("measuring the pool card")
        card = measure_card(variant, seed, vision_tower(clip), finetuned, heads, tasks)
        manifest = _manifest(variant, seed, version, clip_dir.name)
    # AdaMerging's figures are added later by `python -m fusion_bench_fw.mini.card_adamerging` (minutes
    # on a CPU, more than the build's own budget); until then the card marks them not measured
    write_card(out, card, time.time() - start)
    manifest.save(out)
    return manifest


def _manifest(variant: Variant, seed: int, version: int, clip_dir: str) -> Manifest:
    return Manifest(
        builder_version=version,
        variant=variant.name,
        seed=seed,
        tasks=list(variant.tasks),
        eval_tasks=list(variant.eval_tasks),
        pretrained_dir=clip_dir,
        processor_dir=clip_dir,
        models={t: f"models/{t}" for t in variant.tasks},
        datasets={t: {s: f"data/{t}/{s}" for s in ("train", "test")} for t in variant.tasks},
        classnames={t: list(SPECS[t].classnames) for t in variant.tasks},
        templates={t: list(SPECS[t].templates) for t in variant.tasks},
    )
