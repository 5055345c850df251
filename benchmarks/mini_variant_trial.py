"""Try a mini-TA20 recipe no builder version has: build it whole, then measure what its card would say.

``mini_fidelity.py`` re-fine-tunes a built pool, which cannot try a change to the tower or to the
pretraining. This script builds the whole pool with ``--set field=value`` changes to the current
version's variant (into ``--build-dir``; reused when a finished build is there), then records one row:
the build's seconds, the card's figures and fidelity verdicts, FusionBench's layer-wise AdaMerging
with the eval tasks' entropy (the card's ``card-adamerging`` figure), and a collapse probe: the 16
irrelevant task vectors summed at lambda 1 (accuracy, entropy, most predicted class's share on the
eval tasks, and the class prompt of any task that the collapsed eval images point to).

    python benchmarks/mini_variant_trial.py --set vision_width=192 --set pretrain_threads=2 [--fine-eval] [--build-dir DIR]
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness.cli import parser as make_parser  # noqa: E402
from harness.machine import command_line, commit_of, describe, one_line  # noqa: E402
from harness.report import fmt, table, write_lines  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "mini_fidelity" / "variant_trials.json"


def collapse_probe(manifest, heads, tasks) -> dict:
    """Eval-task scores of the pretrained tower plus every irrelevant task vector (lambda 1), and the
    nearest class prompt (any task) to the mean of the eval images' embeddings under it."""
    import torch
    import torch.nn.functional as F
    from transformers import CLIPModel, CLIPProcessor, CLIPVisionModel

    from entropy_accuracy import scores
    from fusion_bench_fw.mini.build import _text_head
    from fusion_bench_fw.mini.card import task_arithmetic
    from fusion_bench_fw.mini.tasks import SPECS
    from fusion_bench_fw.mini.training import _embed

    pretrained = CLIPVisionModel.from_pretrained(manifest.pretrained_dir).eval()
    irrelevant = [CLIPVisionModel.from_pretrained(manifest.models[t]) for t in manifest.tasks if t not in manifest.eval_tasks]
    merged = task_arithmetic(pretrained, irrelevant, 1.0)
    clip, processor = CLIPModel.from_pretrained(manifest.pretrained_dir), CLIPProcessor.from_pretrained(manifest.processor_dir)
    prompts = [(t, c) for t in manifest.tasks for c in SPECS[t].classnames]
    texts = torch.cat([_text_head(clip, processor, SPECS[t]).text_embeds for t in manifest.tasks])
    per_task, nearest = [], {}
    for t in manifest.eval_tasks:
        per_task.append(scores(merged, heads[t], tasks[t].test_x, tasks[t].test_y))
        with torch.no_grad():
            direction = F.normalize(_embed(merged, heads[t].projection, tasks[t].test_x).mean(0), dim=0)
        cos, index = (texts @ direction).max(0)
        nearest[t] = f"{prompts[index][0]}: {prompts[index][1]} ({float(cos):.2f})"
    mean = lambda key: sum(s[key] for s in per_task) / len(per_task)  # noqa: E731
    return {"accuracy": mean("accuracy"), "entropy": mean("entropy"), "top_class_share": mean("top_class_share"), "nearest_prompt": nearest}


def same_settings(stored: dict, variant) -> bool:
    """Whether a build's card settings are the variant's; a setting the card lacks predates its field
    and had the field's default (new fields default to the older builds' behaviour)."""
    import dataclasses

    wanted = json.loads(json.dumps(variant.to_dict()))
    defaults = {f.name: f.default for f in dataclasses.fields(variant) if f.default is not dataclasses.MISSING}
    return all(stored.get(k, defaults.get(k)) == v for k, v in wanted.items())


def measure(args) -> dict:
    import torch

    from fusion_bench_fw.mini import fidelity
    from fusion_bench_fw.mini.build import build_pool
    from fusion_bench_fw.mini.card_adamerging import eval_task_tensors, layer_wise_adamerging
    from fusion_bench_fw.mini.manifest import load_manifest
    from fusion_bench_fw.mini.training import eval_average
    from fusion_bench_fw.mini.tasks import FINE_EVAL_TASKS
    from fusion_bench_fw.mini.variants import BUILDER_VERSION, get_variant, override

    try:
        variant, changes = override(get_variant(args.variant), args.set)
    except ValueError as error:
        raise SystemExit(f"--set {error}")
    if args.fine_eval:  # the class-rich stand-ins take the eval tasks' places (the pool's order is kept)
        variant = replace(variant, tasks=tuple(FINE_EVAL_TASKS.get(t, t) for t in variant.tasks),
                          eval_tasks=tuple(FINE_EVAL_TASKS[t] for t in variant.eval_tasks))
        changes["fine_eval_tasks"] = 1
    build_dir = Path(args.build_dir or f"/tmp/fw_mini_trials/{args.variant}-" + "-".join(f"{k}{v:g}" for k, v in changes.items()))
    reused = (build_dir / "manifest.json").exists()
    if not reused and build_dir.exists() and any(build_dir.iterdir()):
        raise SystemExit(f"{build_dir} holds an unfinished build (no manifest.json); remove it or pass another --build-dir")
    if not reused:
        build_pool(variant, 0, build_dir)  # the settings are in the card; the manifest names the version they change
    card = json.loads((build_dir / "card.json").read_text())
    if not same_settings(card["settings"], variant):
        raise SystemExit(f"{build_dir} holds a build with other settings; pass another --build-dir")
    manifest = load_manifest(build_dir)
    heads, tasks = eval_task_tensors(manifest)
    torch.set_num_threads(args.threads)
    figures = fidelity.figures_of(card)
    if args.adamerging_steps:
        merged = layer_wise_adamerging(manifest, list(manifest.eval_tasks), args.adamerging_steps)
        figures["adamerging_objective"] = eval_average(merged, heads, tasks, manifest.eval_tasks)
    return {
        "commit": commit_of(ROOT), "command": command_line(), "machine": one_line(describe()),
        "base_version": BUILDER_VERSION, "changes": changes, "build_dir": str(build_dir), "build_reused": reused,
        "build_seconds": card["build_seconds"], "adamerging_steps": args.adamerging_steps, "figures": figures,
        "verdicts": {r["key"]: r["verdict"] for r in fidelity.judge(figures)},
        "collapse": collapse_probe(manifest, heads, tasks), "note": args.note,
    }


def write_report(path: Path) -> None:
    rows = json.loads(path.read_text())["rows"]
    pct = lambda v: fmt(None if v is None else 100 * v)  # noqa: E731
    short = {"PASS": "P", "MISS": "M", "not measured": "-"}
    lines = [
        "# Mini-TA20 recipes tried whole (issue: mini-TA20 fidelity)", "",
        "Eval-task averages (%) of each build: zero-shot, fine-tuned, task arithmetic over the eval tasks' models "
        "(lambda 0.3 / best), over all 20 at 0.3, simple averaging, FusionBench's layer-wise AdaMerging over all 20 "
        "with the eval tasks' entropy; the card's six fidelity verdicts in its order (P pass, M miss, - not measured); "
        "the collapse probe (the 16 irrelevant task vectors at lambda 1: accuracy / entropy in nats / most predicted "
        "class's share). Changes are relative to the current builder version's ta20.", "",
    ]
    lines += table(
        ["#", "changes", "build s", "zero-shot", "fine-tuned", "TA eval 0.3 / best", "TA all 0.3", "average", "AdaMerging", "verdicts", "collapse probe"],
        [[i, ", ".join(f"{k}={v:g}" for k, v in r["changes"].items()) or "none", f"{r['build_seconds']:.0f}",
          pct(r["figures"]["zero_shot"]), pct(r["figures"]["finetuned"]),
          f"{pct(r['figures']['ta_relevant_0.3'])} / {pct(r['figures']['ta_relevant_best'])}", pct(r["figures"]["ta_all_0.3"]),
          pct(r["figures"]["simple_average_all"]), pct(r["figures"].get("adamerging_objective")),
          "".join(short[v] for v in r["verdicts"].values()),
          f"{pct(r['collapse']['accuracy'])} / {r['collapse']['entropy']:.2f} / {r['collapse']['top_class_share']:.2f}"]
         for i, r in enumerate(rows, 1)],
    )
    lines += ["", "Where the collapsed eval images point (nearest class prompt of any pool task, cosine):", ""]
    lines += [f"{i}. " + "; ".join(f"{t} -> {p}" for t, p in r["collapse"]["nearest_prompt"].items()) for i, r in enumerate(rows, 1)]
    lines += ["", "Commands (commit, machine):", ""]
    lines += [f"{i}. `{r['command']}` ({r['commit']}; {r['machine']})" + (f"; build reused from {r['build_dir']}" if r["build_reused"] else "") + (f"; {r['note']}" if r.get("note") else "")
              for i, r in enumerate(rows, 1)]
    write_lines(path.with_suffix(".md"), lines)


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--variant", default="ta20")
    parser.add_argument("--set", action="append", default=[], help="variant field=value (e.g. vision_width=192)")
    parser.add_argument("--fine-eval", action="store_true",
                        help="replace the eval tasks by their class-rich stand-ins (mini/fine_tasks.py: 21-40 classes each)")
    parser.add_argument("--build-dir", help="where the trial pool is built (default /tmp/fw_mini_trials/<variant>-<changes>)")
    parser.add_argument("--adamerging-steps", type=int, default=300, help="0 skips AdaMerging")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for AdaMerging and the probe (the build fixes its own)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--note", default="", help="recorded with the row (e.g. how a reused build was made)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report_only:
        started = time.time()
        row = measure(args)
        row["seconds"] = round(time.time() - started)
        rows = json.loads(out.read_text())["rows"] if out.exists() else []
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": rows + [row]}, indent=1) + "\n")
        print(json.dumps(row, indent=1))
    write_report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
