"""The mini OpenCLIP pool's card: each checkpoint on its task, task arithmetic relevant vs all, and
the same figures from the mini CLIP card the pool was converted from (they must agree)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import torch
from datasets import load_from_disk

from fusion_bench.dataset import ImageClassificationDataset

from ..mini.card import _summary  # the task-arithmetic curve's summary, as on the mini CLIP card
from ..mini.fidelity import LAMBDA as DEFAULT_LAMBDA

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # holds DEFAULT_LAMBDA


def test_tensors(build_dir: Path, manifest, processor, tasks) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for task in tasks:
        dataset = ImageClassificationDataset(load_from_disk(str(Path(build_dir) / manifest.datasets_dir / task / "test")), processor)
        items = [dataset[i] for i in range(len(dataset))]
        out[task] = torch.stack([x for x, _ in items]), torch.as_tensor([y for _, y in items])
    return out


@torch.no_grad()
def accuracy(encoder, head, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    correct = sum(int((head(encoder(images[i:i + batch])).argmax(-1) == labels[i:i + batch]).sum()) for i in range(0, len(labels), batch))
    return correct / len(labels)


def visual_state(encoder) -> Dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in encoder.state_dict().items() if k.startswith("model.visual.")}


def task_arithmetic(base: Mapping[str, torch.Tensor], finetuned: List[Mapping[str, torch.Tensor]], scaling: float) -> Dict[str, torch.Tensor]:
    return {k: v + scaling * sum(f[k] - v for f in finetuned) for k, v in base.items()}


@torch.no_grad()
def measure_openclip_card(build_dir: Path, manifest, source_card: Mapping) -> Dict:
    from ..openclip_checkpoints import read_pickle

    root = Path(build_dir) / manifest.checkpoints_root / manifest.model_name
    encoder = read_pickle(root / "zeroshot.pt").eval()
    base = visual_state(encoder)
    finetuned = {t: visual_state(read_pickle(root / t / "finetuned.pt")) for t in manifest.tasks}
    heads = {t: read_pickle(root / f"head_{t}.pt").eval() for t in manifest.tasks}
    data = test_tensors(build_dir, manifest, encoder.val_preprocess, manifest.tasks)

    def scores(state, tasks) -> Dict[str, float]:
        encoder.load_state_dict(state, strict=False)
        accs = {t: accuracy(encoder, heads[t], *data[t]) for t in tasks}
        accs["average"] = sum(accs.values()) / len(tasks)
        return accs

    per_task = {t: {"zero_shot": scores(base, [t])[t], "finetuned": scores(finetuned[t], [t])[t], "eval": t in manifest.eval_tasks,
                    "source_zero_shot": source_card["tasks"][t]["zero_shot"], "source_finetuned": source_card["tasks"][t]["finetuned"]}
                for t in manifest.tasks}
    groups = {"relevant": manifest.eval_tasks, "all": manifest.tasks}
    curves = {g: {f"{lam:g}": scores(task_arithmetic(base, [finetuned[t] for t in models], lam), manifest.eval_tasks) for lam in GRID}
              for g, models in groups.items()}
    average = scores(task_arithmetic(base, list(finetuned.values()), 1.0 / len(manifest.tasks)), manifest.eval_tasks)["average"]
    encoder.load_state_dict(base, strict=False)
    mean = lambda key: sum(per_task[t][key] for t in manifest.eval_tasks) / len(manifest.eval_tasks)  # noqa: E731

    return {
        "variant": manifest.variant, "seed": manifest.seed, "model_name": manifest.model_name, "source_build": manifest.source_build,
        "tasks": per_task, "eval_tasks": manifest.eval_tasks,
        "eval_average": {"zero_shot": mean("zero_shot"), "finetuned": mean("finetuned")},
        "task_arithmetic": {g: {"models": list(models), **_summary(curves[g])} for g, models in groups.items()},
        "simple_average_all": average,
        "max_abs_difference_from_source": max(abs(r[k] - r[f"source_{k}"]) for r in per_task.values() for k in ("zero_shot", "finetuned")),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def card_markdown(card: Mapping, seconds: float) -> str:
    ta = card["task_arithmetic"]
    lines = [
        f"# Mini OpenCLIP pool card: {card['variant']} (seed {card['seed']}, `{card['model_name']}`)",
        "",
        f"Converted from the mini CLIP build `{card['source_build']}` in {seconds:.0f} s. Accuracies (%) on each task's "
        "test split, evaluated on the OpenCLIP checkpoints (ImageEncoder + ClassificationHead); the source columns are "
        "the mini CLIP card's figures for the same towers.",
        "",
        "| task | eval | zero-shot | fine-tuned | source zero-shot | source fine-tuned |",
        "|---|---|---|---|---|---|",
    ]
    for t, r in card["tasks"].items():
        lines.append(f"| {t} | {'yes' if r['eval'] else ''} | {_pct(r['zero_shot'])} | {_pct(r['finetuned'])} "
                     f"| {_pct(r['source_zero_shot'])} | {_pct(r['source_finetuned'])} |")
    ea = card["eval_average"]
    lines += [
        "",
        f"Largest difference from the source card: {_pct(card['max_abs_difference_from_source'])} points.",
        f"Eval-task average: zero-shot {_pct(ea['zero_shot'])}, fine-tuned {_pct(ea['finetuned'])}; "
        f"simple average of all {len(ta['all']['models'])} models {_pct(card['simple_average_all'])}.",
        "",
        f"| task arithmetic over | lambda={DEFAULT_LAMBDA:g} | best lambda | best |",
        "|---|---|---|---|",
    ]
    for group in ("relevant", "all"):
        r = ta[group]
        lines.append(f"| {len(r['models'])} {'eval-task models' if group == 'relevant' else 'models'} | {_pct(r['at_default'])} | {r['best_lambda']:g} | {_pct(r['best'])} |")
    holds = ta["all"]["best"] < ta["relevant"]["best"]
    lines += ["", f"Interference (task arithmetic over all models below over the eval-task models, best lambda each): {'holds' if holds else 'FAILS'}.", ""]
    return "\n".join(lines)


def write_card(build_dir: Path, card: Dict, seconds: float) -> None:
    card = {**card, "build_seconds": round(seconds, 1)}
    (Path(build_dir) / "card.json").write_text(json.dumps(card, indent=2))
    (Path(build_dir) / "card.md").write_text(card_markdown(card, seconds))
