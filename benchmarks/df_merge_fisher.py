"""DF-Merge's diagonal Fisher: one backward pass per sample vs per-sample gradients in one vectorised pass.

Every DF-Merge candidate computes the Fisher of every pool model's scaled point on
``fisher_samples_per_task`` samples of every objective task, so this is most of its time. Both ways
compute the same exact empirical Fisher (the script reports their relative L2 difference);
``looped`` is the per-sample path (``SampleGradients`` with vectorisation off, batches of one, as
DF-Merge ran before), ``vmap-B`` takes B samples' gradients together (``torch.func``).
Timed at the pretrained tower of a mini CLIP pool on ``--samples`` train samples of each eval task.

    python benchmarks/df_merge_fisher.py [--variant ta20] [--samples 30] [--batch-sizes 8,30] [--repeats 3]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.cli import parser  # noqa: E402
from harness.machine import command_line, commit_of, describe, one_line  # noqa: E402
from harness.report import fmt, median, table, write_json, write_lines  # noqa: E402


def fisher_seconds(family, model, tasks, samples: int, batch_size: int, vectorised: bool):
    from fusion_bench_fw.baselines.fisher_weighted import diagonal_fisher

    data = [family.task_batches(t, "cross_entropy", samples, k, batch_size) for k, t in enumerate(tasks)]
    merged = set(family.merged_parameters(model))
    params = {name: p.detach() for name, p in model.named_parameters() if name in merged}
    batch_loss = family.batch_loss(model, "cross_entropy")
    start = time.perf_counter()
    fisher = diagonal_fisher(params, batch_loss, [(d.task, d.batches, d.num_samples) for d in data], vectorised=vectorised)
    seconds = time.perf_counter() - start
    return seconds, fisher


def main():
    cli = parser(__doc__)
    cli.add_argument("--variant", default="ta20")
    cli.add_argument("--samples", type=int, default=30, help="samples per eval task (DF-Merge's fisher_samples_per_task)")
    cli.add_argument("--batch-sizes", default="8,30", help="vectorised batch sizes to time")
    cli.add_argument("--repeats", type=int, default=3)
    cli.add_argument("--threads", type=int, default=2)
    cli.add_argument("--out", default=str(ROOT / "benchmarks/results/df_merge_fisher/df_merge_fisher"))
    args = cli.parse_args()

    import torch
    from lightning.fabric import Fabric

    from fusion_bench_fw.families.clip_vision import CLIPVisionFamily
    from fusion_bench_fw.mini.pools import MiniCLIPVisionModelPool

    torch.set_num_threads(args.threads)
    pool = MiniCLIPVisionModelPool(args.variant)
    tasks = list(pool.manifest.eval_tasks)
    family = CLIPVisionFamily(pool, Fabric(accelerator="cpu", devices=1), cache_dir=Path("outputs/benchmarks/df_merge_fisher/cache"))
    model = family.load_base()
    family.prepare(model, tasks)

    ways = [("looped", 1, False)] + [(f"vmap-{b}", int(b), True) for b in args.batch_sizes.split(",")]
    seconds = {name: [] for name, _, _ in ways}
    reference, difference = None, {}
    for _ in range(args.repeats):
        for name, batch_size, vectorised in ways:
            elapsed, fisher = fisher_seconds(family, model, tasks, args.samples, batch_size, vectorised)
            seconds[name].append(elapsed)
            if reference is None:
                reference = fisher
            # over all parameters at once: some entries are exactly 0 in theory (a key bias does not
            # move a softmax) and only rounding noise in practice, so per-tensor ratios mean nothing
            error = sum(float((fisher[k] - reference[k]).square().sum()) for k in reference)
            difference[name] = (error / sum(float(reference[k].square().sum()) for k in reference)) ** 0.5
    looped = median(seconds["looped"])
    rows = [{
        "way": name, "batch_size": batch_size, "seconds": seconds[name], "median_s": median(seconds[name]),
        "speedup_vs_looped": looped / median(seconds[name]), "relative_difference": difference[name],
        "commit": commit_of(), "command": command_line("HF_HUB_OFFLINE=1"),
    } for name, batch_size, _ in ways]
    machine = describe()
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"experiment": "df_merge_fisher", "variant": args.variant, "tasks": tasks, "samples_per_task": args.samples, "machine": machine, "rows": rows})
    write_lines(out.with_suffix(".md"), [
        f"# DF-Merge's diagonal Fisher: looped vs vectorised per-sample gradients (mini pool {args.variant})", "",
        f"Command: `{rows[0]['command']}` (commit {rows[0]['commit']})  ",
        f"Machine: {one_line(machine)}  ",
        f"One Fisher of the pretrained tower on {args.samples} train samples of each of {', '.join(tasks)}; "
        f"{args.repeats} repeats, median [min-max]; {args.threads} threads.", "",
        *table(["way", "samples per pass", "seconds", "speed-up vs looped", "relative difference (L2, all parameters)"],
               [(r["way"], r["batch_size"], f"{fmt(r['median_s'], 2)} [{fmt(min(r['seconds']), 2)}-{fmt(max(r['seconds']), 2)}]", f"{r['speedup_vs_looped']:.1f}x", f"{r['relative_difference']:.1e}") for r in rows]),
    ])
    for r in rows:
        print(f"{r['way']}: {r['median_s']:.2f} s ({r['speedup_vs_looped']:.1f}x), relative difference {r['relative_difference']:.1e}")


if __name__ == "__main__":
    main()
