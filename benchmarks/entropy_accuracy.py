"""Does low prediction entropy mean high accuracy on a mini CLIP pool? (issue: mini-TA20 fidelity)

AdaMerging picks merging coefficients by minimising the entropy of the merged model's predictions
on unlabelled test images; that only helps where confident predictions are mostly right, as on real
CLIP. This script scores a ladder of merged towers on each eval task with the pool card's zero-shot
heads (the pretrained CLIP's logit scale): accuracy, mean prediction entropy, and the share of the
most predicted class (a degenerate "one class for every image" solution has low entropy and a share
near 1). The ladder: zero-shot, each task's own fine-tune, task arithmetic over the eval tasks' models
and over all models at several lambdas, simple averaging, and FusionBench's layer-wise AdaMerging
with the entropy of the eval tasks (the paper's fair setting; ``--adamerging-steps 0`` skips it).
``--logit-scale`` replaces the pretrained CLIP's logit scale in the heads (entropy only: accuracy
does not depend on it) and, for AdaMerging, in the CLIP model FusionBench loads.
``--refinetune-logit-scale S --work-dir DIR`` first copies the build to DIR, sets its pretrained CLIP's
logit scale to S (a converged real CLIP's is 100; the mini CLIP's pretraining leaves it near its
initial 30) and fine-tunes every task again from it with the build's own settings (minutes), then
measures that copy: fine-tunes trained against sharper logits.

    python benchmarks/entropy_accuracy.py [--variant ta20] [--builder-version 4] [--adamerging-steps 300] [--logit-scale 100]
        [--cache-dir DIR --out PATH]   # a build elsewhere, e.g. an experiment's re-fine-tuned copy
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.cli import parser  # noqa: E402
from harness.machine import command_line, commit_of, describe, one_line  # noqa: E402
from harness.report import fmt, table, write_json, write_lines  # noqa: E402


def scores(vision, head, x, y) -> Dict[str, float]:
    """Accuracy, mean entropy (nats) and the most predicted class's share of one task's test split."""
    import torch

    with torch.no_grad():
        logits = torch.cat([head(vision, x[i : i + 512]) for i in range(0, len(x), 512)])
    probs = logits.softmax(-1)
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())
    predicted = logits.argmax(-1)
    return {
        "accuracy": float((predicted == y).float().mean()),
        "entropy": entropy,
        "top_class_share": float(predicted.bincount(minlength=logits.shape[1]).max()) / len(y),
        "max_entropy": math.log(logits.shape[1]),
    }


def patch_logit_scale(value: float) -> None:
    """Every CLIPModel loaded from now on (FusionBench's heads included) uses this logit scale."""
    import torch
    import transformers

    original = transformers.CLIPModel.from_pretrained.__func__

    def load(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        with torch.no_grad():
            model.logit_scale.fill_(math.log(value))
        return model

    transformers.CLIPModel.from_pretrained = classmethod(load)


def refinetuned_copy(variant_name: str, scale: float, work_dir: Path) -> Path:
    """A copy of the build whose CLIP has logit scale ``scale`` and whose towers are fine-tuned again from it."""
    import shutil

    import torch
    from transformers import CLIPModel, CLIPProcessor

    from fusion_bench_fw.mini.build import _text_head
    from fusion_bench_fw.mini.cache import ensure_built
    from fusion_bench_fw.mini.finetune_jobs import FinetuneJob, run_jobs
    from fusion_bench_fw.mini.manifest import load_manifest
    from fusion_bench_fw.mini.tasks import SPECS
    from fusion_bench_fw.mini.training import Anchor, pretrain_count
    from fusion_bench_fw.mini.variants import get_variant
    from mini_fidelity import _pixels

    source = Path(ensure_built(variant_name))
    copy = work_dir / source.name
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(source, copy)
    manifest, variant = load_manifest(copy), get_variant(variant_name)
    clip_dir = copy / manifest.pretrained_dir
    clip = CLIPModel.from_pretrained(str(clip_dir)).eval()
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(scale))
    clip.save_pretrained(str(clip_dir))
    processor = CLIPProcessor.from_pretrained(str(copy / manifest.processor_dir))
    train = {t: _pixels(processor, copy / manifest.datasets[t]["train"]) for t in manifest.tasks}
    heads = {t: _text_head(clip, processor, SPECS[t]) for t in manifest.tasks}
    anchor = None
    if variant.finetune_anchor > 0:  # as the builder: the pretraining share of every task's train images
        anchor = Anchor.of(clip, torch.cat([x[: pretrain_count(variant, t, len(x))] for t, (x, _) in train.items()]))
    jobs = []
    for t in manifest.tasks:
        shutil.rmtree(copy / "models" / t)
        jobs.append(FinetuneJob(t, str(clip_dir), heads[t].text_embeds, *train[t], variant, 0, str(copy / "models" / t), anchor=anchor))
    run_jobs(jobs)
    return work_dir


def main():
    cli = parser(__doc__)
    cli.add_argument("--variant", default="ta20")
    cli.add_argument("--builder-version", type=int, default=None, help="default: the current builder")
    cli.add_argument("--adamerging-steps", type=int, default=300)
    cli.add_argument("--logit-scale", type=float, default=None, help="default: the pretrained CLIP's")
    cli.add_argument("--cache-dir", default=None, help="the mini pool cache holding the build (default: the standard one)")
    cli.add_argument("--refinetune-logit-scale", type=float, default=None, help="measure a copy fine-tuned again at this logit scale (needs --work-dir)")
    cli.add_argument("--work-dir", default=None, help="where --refinetune-logit-scale writes its copy of the build")
    cli.add_argument("--out", default=None, help="default: benchmarks/results/mini_fidelity/entropy_accuracy[_scaleS]")
    args = cli.parse_args()

    import torch

    from fusion_bench_fw.mini.cache import ensure_built
    from fusion_bench_fw.mini.card import task_arithmetic
    from fusion_bench_fw.mini.card_adamerging import eval_task_tensors, layer_wise_adamerging
    from fusion_bench_fw.mini.manifest import load_manifest
    from transformers import CLIPVisionModel

    if args.logit_scale is not None:
        patch_logit_scale(args.logit_scale)
    if args.refinetune_logit_scale is not None:
        if args.work_dir is None:
            cli.error("--refinetune-logit-scale needs --work-dir (where the re-fine-tuned copy of the build goes)")
        args.cache_dir = str(refinetuned_copy(args.variant, args.refinetune_logit_scale, Path(args.work_dir)))
    manifest = load_manifest(ensure_built(args.variant, cache_dir=args.cache_dir, **({} if args.builder_version is None else {"version": args.builder_version})))
    heads, tasks = eval_task_tensors(manifest)
    eval_tasks: List[str] = list(manifest.eval_tasks)
    pretrained = CLIPVisionModel.from_pretrained(manifest.pretrained_dir).eval()
    finetuned = {t: CLIPVisionModel.from_pretrained(p).eval() for t, p in manifest.models.items()}
    relevant = [finetuned[t] for t in eval_tasks]
    everything = list(finetuned.values())

    ladder: Dict[str, Optional[object]] = {"zero-shot": pretrained, "own fine-tune": None}
    for lam in (0.3, 0.7):
        ladder[f"task arithmetic, {len(relevant)} eval models, lambda {lam}"] = task_arithmetic(pretrained, relevant, lam)
    for lam in (0.1, 0.3, 0.5):
        ladder[f"task arithmetic, all {len(everything)}, lambda {lam}"] = task_arithmetic(pretrained, everything, lam)
    ladder[f"simple average, all {len(everything)}"] = task_arithmetic(pretrained, everything, 1.0 / len(everything))
    if args.adamerging_steps > 0:
        ladder[f"AdaMerging layer-wise, entropy of the eval tasks, {args.adamerging_steps} steps"] = layer_wise_adamerging(manifest, eval_tasks, args.adamerging_steps)

    rows = []
    for label, model in ladder.items():
        per_task = {t: scores(finetuned[t] if model is None else model, heads[t], tasks[t].test_x, tasks[t].test_y) for t in eval_tasks}
        mean = {k: sum(v[k] for v in per_task.values()) / len(per_task) for k in ("accuracy", "entropy", "top_class_share")}
        rows.append({"model": label, "mean": mean, "per_task": per_task})
        print(f"{label}: accuracy {100 * mean['accuracy']:.1f}  entropy {mean['entropy']:.3f}", flush=True)

    scale = float(heads[eval_tasks[0]].scale)
    suffix = "" if args.logit_scale is None else f"_scale{args.logit_scale:g}"
    suffix += "" if args.refinetune_logit_scale is None else f"_refinetuned_scale{args.refinetune_logit_scale:g}"
    out = Path(args.out or ROOT / f"benchmarks/results/mini_fidelity/entropy_accuracy{suffix}")
    payload = {"commit": commit_of(), "command": command_line(), "machine": describe(), "variant": args.variant,
               "build": Path(manifest.card).parent.name, "logit_scale": scale, "rows": rows}
    write_json(out.with_suffix(".json"), payload)
    header = ["model", "accuracy", "entropy (nats)", "top-class share"] + [f"{t}: acc / H / share" for t in eval_tasks]
    body = [[r["model"], fmt(100 * r["mean"]["accuracy"]), fmt(r["mean"]["entropy"], 3), fmt(r["mean"]["top_class_share"], 2)]
            + [f"{100 * r['per_task'][t]['accuracy']:.1f} / {r['per_task'][t]['entropy']:.2f} / {r['per_task'][t]['top_class_share']:.2f}" for t in eval_tasks]
            for r in rows]
    lines = [f"# Entropy vs accuracy on the eval tasks of {payload['build']} (logit scale {scale:.1f})", "",
             f"Command: `{payload['command']}` at {payload['commit']}; machine: {one_line(payload['machine'])}.", "",
             "Means over the eval tasks; entropy of the heads' softmax (maximum: "
             + ", ".join(f"{t} {r:.2f}" for t, r in ((t, rows[0]['per_task'][t]['max_entropy']) for t in eval_tasks)) + ").", ""]
    write_lines(out.with_suffix(".md"), lines + table(header, body))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
