"""Task-vector checkpoints standing in for the task-arithmetic papers' ViT-B-32 (B-16, L-14) on 8 tasks.

FusionBench's ``OpenCLIPVisionModelPool/ViT-B-32_TA8`` reads ``<model_dir>/ViT-B-32/zeroshot.pt``,
``<Task>/finetuned.pt`` and ``head_<Task>.pt``: pickled FusionBench ``ImageEncoder`` and
``ClassificationHead`` modules. This writes them with the real architecture and shapes (open_clip's
ViT-B-32 with QuickGELU, as OpenAI's weights; heads of each task's class count x 512), random
weights (fine-tunes = zero-shot + small noise), so that the real pool config runs offline for cost
and code-path checks, not for accuracy. The datasets it names come from the hub stand-in
(``fusion_bench_fw hub-standin``, whose 20 tasks include these 8)::

    python -m fusion_bench_fw.hub_standin.task_vectors --out DIR/task_vectors_checkpoints [--model ViT-B-32]
    fusion_bench_fw hub-standin --out DIR --tiny --tasks sun397     # the datasets, under HF_HOME=DIR
    HF_HOME=DIR HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 fusion_bench method=fw_soft \\
        modelpool=openclip-ViT-B-32_TA8 modelpool.model_dir=DIR/task_vectors_checkpoints \\
        taskpool=OpenCLIPVisionModelTaskPool/ViT-B-32_TA8 taskpool.model_dir=DIR/task_vectors_checkpoints
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..openclip_checkpoints import build_image_encoder  # noqa: I001  (first: Python 3.11 workaround)
from .data import CONFIG_ROOT

MARKER = "task_vectors_standin.json"


def pool_layout(model: str, model_dir: Path) -> Dict[str, Dict[str, str]]:
    """{"models": {task: pickle path}, "heads": {task: head path}} of FusionBench's <model>_TA8 pool config."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(CONFIG_ROOT / "modelpool" / "OpenCLIPVisionModelPool" / f"{model}_TA8.yaml")
    config.model_dir = str(model_dir)
    models = {task: entry["pickle_path"] for task, entry in OmegaConf.to_container(config.models, resolve=True).items()}
    heads = OmegaConf.to_container(config.classification_heads, resolve=True)
    return {"models": models, "heads": heads}


@torch.no_grad()
def write_task_vectors(out: Path, model: str = "ViT-B-32", tasks: Optional[Sequence[str]] = None, noise: float = 1e-3, seed: int = 0) -> Dict:
    """Write zeroshot.pt, the fine-tunes of ``tasks`` (default: all 8) and every head under ``out``;
    reuses a complete earlier write with the same options, refuses a directory holding anything else."""
    from fusion_bench.models.open_clip import ClassificationHead
    from fusion_bench.tasks.clip_classification import get_classnames_and_templates

    out = Path(out).expanduser().resolve()
    staging = out.with_name(f".{out.name}.partial")  # written here, renamed into place when complete
    layout = pool_layout(model, staging)
    tasks = [t for t in layout["models"] if t != "_pretrained_"] if tasks is None else list(tasks)
    unknown = sorted(set(tasks) - set(layout["models"]))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the {model}_TA8 pool has {', '.join(t for t in layout['models'] if t != '_pretrained_')}")
    params = {"model": model, "tasks": sorted(tasks), "noise": noise, "seed": seed}
    if (out / MARKER).is_file():
        record = json.loads((out / MARKER).read_text())
        if record["params"] == params:
            return {**record, "reused": True}
        raise FileExistsError(f"{out} holds task-vector stand-ins written with {record['params']}, not {params}: use another --out")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty and was not written by this writer: use an empty or new --out")
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted write of this writer
    torch.manual_seed(seed)
    encoder = build_image_encoder(model)
    base = {k: v.clone() for k, v in encoder.state_dict().items()}
    written: List[str] = []

    def save(obj, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path)
        written.append(os.path.relpath(path, staging))

    save(encoder, layout["models"]["_pretrained_"])
    for task in tasks:
        encoder.load_state_dict({k: v + noise * v.std(correction=0).clamp_min(1e-3) * torch.randn_like(v) if v.is_floating_point() else v for k, v in base.items()})
        save(encoder, layout["models"][task])
    width = encoder.model.visual.output_dim
    for task, path in layout["heads"].items():
        classes = len(get_classnames_and_templates(task)[0])
        weights = torch.nn.functional.normalize(torch.randn(classes, width), dim=-1) * 100.0
        save(ClassificationHead(normalize=True, weights=weights), path)
    record = {"params": params, "files": written, "bytes": sum((staging / f).stat().st_size for f in written)}
    (staging / MARKER).write_text(json.dumps(record, indent=1))
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(staging, out)
    return {**record, "reused": False}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusion_bench_fw.hub_standin.task_vectors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the model_dir of the pool config (task_vectors_checkpoints)")
    parser.add_argument("--model", default="ViT-B-32", choices=["ViT-B-32", "ViT-B-16", "ViT-L-14"])
    parser.add_argument("--tasks", default=None, help="comma-separated fine-tunes to write (default: all 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    record = write_task_vectors(Path(args.out), args.model, tasks, seed=args.seed)
    print(json.dumps({k: v for k, v in record.items() if k != "files"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
