"""Build (once) the on-disk pool of ``cost_methods.py`` and ``cost_lmo.py``: real CLIP ViT-B/32 shapes, random weights.

Layout under ``work_dir``::

    processor/                  char-level CLIPTokenizer + 224x224 CLIPImageProcessor (offline)
    models/pretrained/          CLIPModel (vision + text tower, ~605 MB)
    models/ft_00 .. ft_19/      CLIPVisionModel = pretrained vision tower + seeded noise (~350 MB)
    data/train/<task>/          16 labelled images, objective tasks only (datasets.save_to_disk)
    data/test_k<k>/<task>/      k images per objective task (in-tree fw_soft's AdaMerging inner loop
                                reads test data: k = the FW samples per task, so equal samples)
    data/ada_s<S>_n<n>/<task>/  AdaMerging's test sets for a pool of n: max(S, n) images in all,
                                split as evenly as possible over the n tasks (>= 1 each), so one
                                AdaMerging step sees (about) the same S samples as one FW gradient
    build.json                  what was built (the build is skipped when it matches)

Accuracy is irrelevant here: the checkpoints exist to have the real sizes and the real
architecture; every task is 10 random classes of random images.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

NUM_MODELS = 20
NUM_CLASSES = 10
TRAIN_PER_TASK = 16
OBJECTIVE_TASKS = 4
IMAGE_SIZE = 224  # processor size; stored images are smaller and get resized, like real data
STORED_IMAGE = 64
MAX_TEXT_LEN = 77
NOISE_STD = 1e-3
BUILD_VERSION = 1


def task_names(count: int = NUM_MODELS) -> List[str]:
    return [f"cost_task_{i:02d}" for i in range(count)]


def model_name(index: int) -> str:
    return f"ft_{index:02d}"


def classnames(task: str) -> List[str]:
    return [f"class {k} of {task.replace('_', ' ')}" for k in range(NUM_CLASSES)]


def templates():
    return [lambda c: f"a photo of a {c}."]


def register_tasks(tasks: Sequence[str]) -> None:
    """Class names + templates in FusionBench's CLIP template factory.

    fusion-bench 0.2.33: ``CLIPTemplateFactory.register_dataset`` is broken (inverted assert, key
    'temolates'), so the mapping is written directly.
    """
    from fusion_bench.tasks.clip_classification import CLIPTemplateFactory

    for task in tasks:
        CLIPTemplateFactory._dataset_mapping[task] = {"classnames": classnames(task), "templates": templates()}


def clip_config(tokenizer):
    """openai/clip-vit-base-patch32's CLIPConfig, written out by hand (token ids from our tokenizer)."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=8,
            max_position_embeddings=MAX_TEXT_LEN,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            num_channels=3,
            image_size=224,
            patch_size=32,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=512,
        ),
        projection_dim=512,
        logit_scale_init_value=2.6592,
    )


def write_processor(directory: Path):
    """Char-level tokenizer (as fusion_bench_fw.mini.tiny_clip) + a 224x224 image processor."""
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    directory.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=MAX_TEXT_LEN)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(str(directory))
    return CLIPProcessor.from_pretrained(str(directory))


def _image_dataset(count: int, seed: int):
    import numpy as np
    import datasets
    from datasets import ClassLabel, Dataset, Features, Image

    datasets.disable_progress_bars()

    rng = np.random.default_rng(seed)
    from PIL import Image as PILImage

    images = [PILImage.fromarray(rng.integers(0, 256, (STORED_IMAGE, STORED_IMAGE, 3), dtype=np.uint8)) for _ in range(count)]
    labels = [int(i % NUM_CLASSES) for i in range(count)]
    features = Features({"image": Image(), "label": ClassLabel(num_classes=NUM_CLASSES)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def ada_split(n: int, total: int) -> List[int]:
    """Per-task test-set sizes for AdaMerging over n tasks: ``total`` samples in all, as even as possible."""
    base, extra = divmod(total, n)
    sizes = [base + (1 if i < extra else 0) for i in range(n)]
    if min(sizes) < 1:
        raise ValueError(f"cannot split {total} samples over {n} tasks")
    return sizes


def build(work_dir: Path, log=print) -> Dict:
    """Create everything that is missing; cheap when the pool is already there."""
    work_dir = Path(work_dir)
    manifest_path = work_dir / "build.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest.get("version") != BUILD_VERSION:
        manifest = {"version": BUILD_VERSION}

    tasks = task_names()
    processor_dir = work_dir / "processor"
    models_dir = work_dir / "models"
    data_dir = work_dir / "data"

    import torch

    if not manifest.get("models_done"):
        from transformers import CLIPModel, CLIPVisionConfig, CLIPVisionModel

        log(f"[pool] writing processor and pretrained CLIP ViT-B/32 (random weights) under {work_dir}")
        processor = write_processor(processor_dir)
        torch.manual_seed(0)
        config = clip_config(processor.tokenizer)
        pretrained = CLIPModel(config)
        pretrained.save_pretrained(str(models_dir / "pretrained"), safe_serialization=True)
        vision_state = {k[len("vision_model."):]: v for k, v in pretrained.state_dict().items() if k.startswith("vision_model.")}
        vision_config = CLIPVisionConfig(**config.vision_config.to_dict())
        del pretrained
        for i in range(NUM_MODELS):
            target = models_dir / model_name(i)
            if (target / "model.safetensors").exists():
                continue
            model = CLIPVisionModel(vision_config)
            model.vision_model.load_state_dict(vision_state)
            generator = torch.Generator().manual_seed(1000 + i)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=generator) * NOISE_STD)
            model.save_pretrained(str(target), safe_serialization=True)
            log(f"[pool] wrote {target.name} ({i + 1}/{NUM_MODELS})")
            del model
        manifest["models_done"] = True
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(manifest, indent=1))

    if not manifest.get("data_done"):
        log("[pool] writing train datasets")
        for t, task in enumerate(tasks[:OBJECTIVE_TASKS]):
            _image_dataset(TRAIN_PER_TASK, seed=10 * t).save_to_disk(str(data_dir / "train" / task))
        manifest["data_done"] = True
        manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def build_in_child(work_dir: Path, env: Dict[str, str]) -> None:
    """``build`` in a child process, so the caller stays small (it only starts measured children)."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import _cost_pool; _cost_pool.build({str(work_dir)!r})"
    if subprocess.run([sys.executable, "-c", code], env=env).returncode != 0:
        sys.exit("building the cost pool failed")


def ensure_test_sets(work_dir: Path, k: int) -> Path:
    """data/test_k<k>/<task> with k images for each objective task."""
    root = Path(work_dir) / "data" / f"test_k{k}"
    if not (root / "_done").exists():
        for t, task in enumerate(task_names()[:OBJECTIVE_TASKS]):
            _image_dataset(k, seed=10 * t + 1).save_to_disk(str(root / task))
        (root / "_done").write_text("ok")
    return root


def ensure_ada_sets(work_dir: Path, total: int, n: int) -> Path:
    """data/ada_s<total>_n<n>/<task>: AdaMerging's per-task test sets, max(total, n) images in all."""
    root = Path(work_dir) / "data" / f"ada_s{total}_n{n}"
    if not (root / "_done").exists():
        for t, (task, size) in enumerate(zip(task_names(n), ada_split(n, max(total, n)))):
            _image_dataset(size, seed=10 * t + 1).save_to_disk(str(root / task))
        (root / "_done").write_text("ok")
    return root


def checkpoint_files(work_dir: Path, n: int) -> List[Path]:
    return [Path(work_dir) / "models" / model_name(i) / "model.safetensors" for i in range(n)]


def modelpool_config(work_dir: Path, n: int, test_root: Path) -> Dict:
    """A CLIPVisionModelPool config for the first n fine-tuned models; test datasets from ``test_root``."""
    work_dir = Path(work_dir)
    tasks = task_names(n)
    models = {"_pretrained_": str(work_dir / "models" / "pretrained")}
    models.update({task: str(work_dir / "models" / model_name(i)) for i, task in enumerate(tasks)})

    def dataset(path: Path):
        return {"_target_": "datasets.load_from_disk", "dataset_path": str(path)}

    return {
        "models": models,
        "train_datasets": {task: dataset(work_dir / "data" / "train" / task) for task in tasks[:OBJECTIVE_TASKS]},
        "test_datasets": {task: dataset(Path(test_root) / task) for task in tasks if (Path(test_root) / task).exists()},
        "processor": str(work_dir / "processor"),
    }


def make_modelpool(work_dir: Path, n: int, test_root: Path):
    from omegaconf import OmegaConf

    from fusion_bench.modelpool import CLIPVisionModelPool

    config = OmegaConf.create(modelpool_config(work_dir, n, test_root))
    return CLIPVisionModelPool(
        models=config.models,
        train_datasets=config.train_datasets,
        test_datasets=config.test_datasets,
        processor=config.processor,
    )
