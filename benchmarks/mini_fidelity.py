"""Does a mini pool merge like real CLIP? Re-fine-tune a built pool's tasks with other settings and
measure the fidelity figures of its card, without rebuilding the pretrained model.

Real CLIP ViT-B/32: task arithmetic over 4 relevant fine-tunes recovers ~60% of the zero-shot ->
fine-tuned gap (task vectors small and nearly orthogonal). This script keeps a built pool's
pretrained CLIP, data and zero-shot heads, fine-tunes the chosen tasks again with a changed schedule
(``--set finetune_lr=1e-4 --set finetune_steps=100``) and reports, on the eval tasks: zero-shot,
fine-tuned, task arithmetic over the eval tasks' models (every lambda of the grid, best, share of
the gap recovered) and, with ``--tasks all``, over every model (interference), plus the task
vectors' relative norms and pairwise cosines. One JSON row per run in ``--out``.

    python benchmarks/mini_fidelity.py --set finetune_lr=1e-4 [--tasks eval|all] [--pool ta20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import load_from_disk
from transformers import CLIPModel, CLIPProcessor, CLIPVisionModel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from fusion_bench_fw.mini import ensure_built  # noqa: E402
from fusion_bench_fw.mini.build import _text_head  # noqa: E402
from fusion_bench_fw.mini.card import task_arithmetic  # noqa: E402
from fusion_bench_fw.mini.finetune_jobs import FinetuneJob, run_jobs  # noqa: E402
from fusion_bench_fw.mini.manifest import load_manifest  # noqa: E402
from fusion_bench_fw.mini.tasks import SPECS  # noqa: E402
from fusion_bench_fw.mini.training import Anchor, accuracy, pretrain_count, vision_tower  # noqa: E402
from fusion_bench_fw.mini.variants import BUILDER_VERSION, get_variant, override  # noqa: E402
from harness.machine import command_line, commit_of  # noqa: E402

GRID = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def _pixels(processor, path: Path):
    data = load_from_disk(str(path))
    return processor(images=list(data["image"]), return_tensors="pt")["pixel_values"], torch.tensor(data["label"]).long()


def _task_vector_stats(pretrained, models):
    base = {k: v.flatten() for k, v in pretrained.state_dict().items()}
    base_norm = torch.cat(list(base.values())).norm()
    vectors = {t: torch.cat([m.state_dict()[k].flatten() - base[k] for k in base]) for t, m in models.items()}
    names = list(vectors)
    cosines = [float(torch.nn.functional.cosine_similarity(vectors[a], vectors[b], dim=0)) for i, a in enumerate(names) for b in names[i + 1 :]]
    return {
        "relative_norms": {t: round(float(v.norm() / base_norm), 4) for t, v in vectors.items()},
        "mean_abs_cosine": round(sum(abs(c) for c in cosines) / max(1, len(cosines)), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="ta20")
    parser.add_argument("--builder-version", type=int, default=BUILDER_VERSION, help="the built pool whose pretrained CLIP, data and settings are the base (default: the current builder; v3 and v4 share all but the fine-tuning, so the committed v3 rows used 3)")
    parser.add_argument("--tasks", choices=("eval", "all"), default="eval")
    parser.add_argument("--set", action="append", default=[], help="variant field=value for the fine-tuning (e.g. finetune_lr=1e-4)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mini_fidelity" / "mini_fidelity.json"))
    parser.add_argument("--anchor-from", choices=("all", "procedural"), default="all", help="tasks whose pretraining images form the anchor set (procedural: not the 8 digit tasks)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the markdown table from the JSON, run nothing")
    args = parser.parse_args()
    if args.report_only:
        write_table(Path(args.out))
        return 0

    build = Path(ensure_built(args.pool, seed=0, version=args.builder_version))
    manifest = load_manifest(build)
    variant = get_variant(args.pool, args.builder_version)
    build_variant = variant  # the pretraining mix the build used; the anchor takes its images from it
    try:
        variant, changes = override(variant, args.set)
    except ValueError as error:
        raise SystemExit(f"--set {error}")
    eval_tasks = list(manifest.eval_tasks)
    tasks = eval_tasks if args.tasks == "eval" else list(manifest.tasks)

    started = time.time()
    torch.set_num_threads(1)
    clip_dir = build / manifest.pretrained_dir
    clip = CLIPModel.from_pretrained(str(clip_dir)).eval()
    processor = CLIPProcessor.from_pretrained(str(build / manifest.processor_dir))
    heads = {t: _text_head(clip, processor, SPECS[t]) for t in tasks}
    data = {t: {s: _pixels(processor, build / manifest.datasets[t][s]) for s in ("train", "test")} for t in tasks}
    anchor = None
    if variant.finetune_anchor > 0:  # the pretraining mix: the first pretrain_fraction of every pool task's train split
        sources = [t for t in manifest.tasks if args.anchor_from == "all" or not t.startswith("digit")]
        anchor = Anchor.of(clip, torch.cat([_pixels(processor, build / manifest.datasets[t]["train"])[0][: pretrain_count(build_variant, t, variant.n_train)] for t in sources]))
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [FinetuneJob(t, str(clip_dir), heads[t].text_embeds, *data[t]["train"], variant, 0, str(Path(tmp) / t), anchor=anchor) for t in tasks]
        run_jobs(jobs)
        models = {t: CLIPVisionModel.from_pretrained(str(Path(tmp) / t)).eval() for t in tasks}
    pretrained = vision_tower(clip).eval()

    def average(model) -> float:
        return sum(accuracy(model, heads[t], *data[t]["test"]) for t in eval_tasks) / len(eval_tasks)

    def per_task(model_of) -> dict:
        return {t: accuracy(model_of(t), heads[t], *data[t]["test"]) for t in eval_tasks}

    before, after = per_task(lambda t: pretrained), per_task(lambda t: models[t])
    alone = per_task(lambda t: task_arithmetic(pretrained, [models[t]], 0.3))  # each vector alone at 0.3
    zero_shot = sum(before.values()) / len(eval_tasks)
    finetuned = sum(after.values()) / len(eval_tasks)
    relevant = {lam: average(task_arithmetic(pretrained, [models[t] for t in eval_tasks], lam)) for lam in GRID}
    best = max(relevant, key=relevant.get)
    row = {
        "commit": commit_of(ROOT), "command": command_line(), "pool": args.pool, "builder_version": args.builder_version, "changes": {**changes, **({"anchor_from": args.anchor_from} if variant.finetune_anchor > 0 else {})}, "tasks": args.tasks,
        "zero_shot": round(100 * zero_shot, 2), "finetuned": round(100 * finetuned, 2),
        "ta_relevant": {f"{k:g}": round(100 * v, 2) for k, v in relevant.items()},
        "ta_relevant_best_lambda": best,
        "recovered_at_best": round((relevant[best] - zero_shot) / (finetuned - zero_shot), 3),
        # saturation: the share of each eval task's own fine-tuning gain its vector alone gives at 0.3
        "own_gain_at_0.3": {t: round((alone[t] - before[t]) / max(1e-9, after[t] - before[t]), 3) for t in eval_tasks},
        **_task_vector_stats(pretrained, {t: models[t] for t in eval_tasks}),
        "seconds": round(time.time() - started, 1),
    }
    if args.tasks == "all":
        every = {lam: average(task_arithmetic(pretrained, list(models.values()), lam)) for lam in GRID[:4]}
        row["ta_all"] = {f"{k:g}": round(100 * v, 2) for k, v in every.items()}
        row["ta_all_0.3"] = round(100 * every[0.3], 2)
        row["simple_average_all"] = round(100 * average(task_arithmetic(pretrained, list(models.values()), 1.0 / len(models))), 2)
    print(json.dumps(row))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    out.write_text(json.dumps({"rows": rows + [row]}, indent=1))
    write_table(out)
    return 0


def write_table(path: Path) -> None:
    """The markdown table beside the JSON: one line per run, each with its commit; commands below."""
    rows = json.loads(path.read_text())["rows"]
    lines = [
        "# Mini pool fidelity: re-fine-tuned tasks of a built pool", "",
        "Eval-task averages (%): zero-shot, fine-tuned, task arithmetic (TA) over the eval tasks' models at lambda 0.3 and at the best "
        "lambda, the share of the zero-shot -> fine-tuned gap TA recovers at the best lambda, TA over every model at 0.3 and simple "
        "averaging (runs with `--tasks all`), the task vectors' mean |cosine|.", "",
        "| # | commit | changes | zero-shot | fine-tuned | TA eval 0.3 | TA eval best (lambda) | recovered | TA all 0.3 | average all | mean abs cos | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        best = r["ta_relevant_best_lambda"]
        lines.append(
            f"| {i} | {r['commit']} | {', '.join(f'{k}={v:g}' if isinstance(v, (int, float)) else f'{k}={v}' for k, v in r['changes'].items()) or 'the build (v3)'} | {r['zero_shot']} | {r['finetuned']} "
            f"| {r['ta_relevant']['0.3']} | {r['ta_relevant'][f'{best:g}']} ({best:g}) | {100 * r['recovered_at_best']:.1f}% "
            f"| {r.get('ta_all_0.3', '')} | {r.get('simple_average_all', '')} | {r['mean_abs_cosine']} | {r['seconds']:.0f} |"
        )
    lines += ["", "Commands:", ""] + [f"{i}. `{r['command']}`" for i, r in enumerate(rows, 1)]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
