"""``fusion_bench_fw``: benchmark commands around the stock ``fusion_bench`` CLI.

    fusion_bench_fw compare [--pool ta20|micro|llm-ta16|glue-ta8|t5-ta8|t5-ta8-lora|openclip-ta8|...] [--methods a,b,...] [--out DIR]
    fusion_bench_fw build [--variant ta20|micro|llm-ta16|glue-ta8|t5-ta8|openclip-ta8|...] [--seed N]
    fusion_bench_fw card-adamerging [--pool ta20|micro] [--steps N]
    fusion_bench_fw hub-standin --out DIR [--shards K] [--dtype bf16] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

# pool name -> (modelpool config, taskpool config); "llm-" pools are the mini causal-LM pools, "glue-"
# the mini GPT-2 text-classification pools, "t5-" the mini T5 text-to-text GLUE pools ("-lora": LoRA adapters),
# "openclip-" the mini OpenCLIP task-vector pools
POOLS = {"ta20": ("mini-clip_TA20", "mini-clip_TA20"), "micro": ("mini-clip_micro", "mini-clip_micro"),
         "llm-ta16": ("mini-llm_TA16", "mini-llm_TA16"), "llm-micro": ("mini-llm_micro", "mini-llm_micro"),
         "glue-ta8": ("mini-glue_TA8", "mini-glue_TA8"), "glue-micro": ("mini-glue_micro", "mini-glue_micro"),
         "t5-ta8": ("mini-glue-t5_TA8", "mini-glue-t5_TA8"), "t5-ta8-lora": ("mini-glue-t5_TA8_lora16", "mini-glue-t5_TA8"),
         "t5-micro": ("mini-glue-t5_micro", "mini-glue-t5_micro"), "t5-micro-lora": ("mini-glue-t5_micro_lora16", "mini-glue-t5_micro"),
         "openclip-ta8": ("mini-openclip_TA8", "mini-openclip_TA8"), "openclip-micro": ("mini-openclip_micro", "mini-openclip_micro")}
DEFAULT_METHODS = (
    "fw_soft,fw_hard,intree_fw_soft,simple_average,task_arithmetic,ties_merging,dare_task_arithmetic,dare_ties,adamerging_task,adamerging_layer,"
    "adamerging_task_objective,adamerging_layer_objective,concrete_ta,concrete_ta_objective,surgery,surgery_objective,fisher_merging,regmean,regmean_plusplus,df_merge,mtl_samples,mtl_full,pretrained"
)
# the stock merges that run on a causal-LM pool (the others are CLIP-only in FusionBench or here)
LLM_METHODS = "fw_soft,fw_hard,simple_average,task_arithmetic,ties_merging,dare_task_arithmetic,dare_ties,pretrained"
# on a GPT-2 classification pool: FusionBench's GPT-2 Fisher merging and RegMean besides the data-free merges
GLUE_METHODS = "fw_soft,fw_hard,fw_hard_from_ta,simple_average,task_arithmetic,ties_merging,fisher_merging_gpt2,regmean_gpt2,pretrained"
# on a T5 pool: the data-free merges (FusionBench 0.2.33 has Fisher merging and RegMean for CLIP and GPT-2 only)
T5_METHODS = "fw_soft,fw_hard,fw_hard_from_ta,simple_average,task_arithmetic,ties_merging,dare_task_arithmetic,dare_ties,pretrained"
# FusionBench's DARE keeps only parameters with requires_grad, and its load_lora_model returns merged models with
# none (PEFT froze the base before merging), so DARE has nothing to merge on a LoRA pool (measured: "State dict at
# index 0 is empty"; DARE+TIES 0.5 %) - left out there
T5_LORA_METHODS = "fw_soft,fw_hard,fw_hard_from_ta,simple_average,task_arithmetic,ties_merging,pretrained"
# on an OpenCLIP pool: FusionBench's data-free merges (its AdaMerging, Fisher and RegMean configs are for HF CLIP)
OPENCLIP_METHODS = "fw_soft,fw_hard,fw_hard_from_ta,simple_average,task_arithmetic,ties_merging,dare_task_arithmetic,dare_ties,pretrained"


def default_methods(pool: str) -> str:
    if pool.startswith("t5-") and pool.endswith("-lora"):
        return T5_LORA_METHODS
    for prefix, methods in (("llm-", LLM_METHODS), ("glue-", GLUE_METHODS), ("t5-", T5_METHODS), ("openclip-", OPENCLIP_METHODS)):
        if pool.startswith(prefix):
            return methods
    return DEFAULT_METHODS


def text_pool_builder(pool: str):
    """(builder function, variant) of a mini text pool name, or None for a CLIP pool."""
    if pool.startswith("llm-"):
        from .mini_llm.build import ensure_llm_built

        return ensure_llm_built, pool[len("llm-"):]
    if pool.startswith("glue-"):
        from .mini_glue.build import ensure_glue_built

        return ensure_glue_built, pool[len("glue-"):]
    if pool.startswith("t5-"):
        from .mini_t5.build import ensure_t5_built

        return ensure_t5_built, pool[len("t5-"):].removesuffix("-lora")
    return None


def individual_scores(pool: str, card: dict, eval_tasks) -> dict:
    """Each eval task's own fine-tune's accuracy, from the pool card (T5 cards hold a full and a LoRA column)."""
    if "tasks" not in card:
        return {}
    column = ("lora" if pool.endswith("-lora") else "full") if pool.startswith("t5-") else "finetuned"
    return {t: card["tasks"][t][column] for t in eval_tasks}


def pool_build(pool: str, seed: int):
    """(build directory, eval tasks, pool card) of a mini pool, building it first if needed."""
    if pool.startswith("openclip-"):
        from .mini_openclip.build import OpenCLIPManifest, ensure_openclip_built

        build_dir = ensure_openclip_built(pool[len("openclip-"):], seed=seed)
        return build_dir, list(OpenCLIPManifest.load(build_dir).eval_tasks), json.loads((build_dir / "card.json").read_text())
    text_pool = text_pool_builder(pool)
    if text_pool is not None:
        from .mini_llm.manifest import LLMManifest as TextPoolManifest

        ensure, variant = text_pool
        build_dir = ensure(variant, seed=seed)
        return build_dir, list(TextPoolManifest.load(build_dir).eval_tasks), json.loads((build_dir / "card.json").read_text())
    from .mini import ensure_built
    from .mini.manifest import load_manifest

    build_dir = ensure_built(pool, seed=seed)
    manifest = load_manifest(build_dir)
    return build_dir, list(manifest.eval_tasks), json.loads(Path(manifest.card).read_text())


def cmd_build(args) -> int:
    print(pool_build(args.variant, args.seed)[0])
    return 0


def cmd_card_adamerging(args) -> int:
    """Add FusionBench layer-wise AdaMerging's figures (and their verdicts) to a built pool's card."""
    from .mini import ensure_built
    from .mini.card_adamerging import add_to_card

    build_dir = ensure_built(args.pool, seed=args.seed)
    command = f"fusion_bench_fw card-adamerging --pool {args.pool} --seed {args.seed} --steps {args.steps}"
    card = add_to_card(build_dir, args.steps, command)
    print(build_dir / "card.md")
    for row in card["fidelity"]:
        print(f"{row['verdict']:>12}  {row['criterion']}")
    return 0


def cmd_compare(args) -> int:
    from .compare import bar_chart, machine_description, markdown_table, method_specs, run_method, source_commit

    build_dir, eval_tasks, card = pool_build(args.pool, args.seed)
    modelpool, taskpool = POOLS[args.pool]
    specs = method_specs(eval_tasks, fw_iters=args.fw_iters, samples_per_task=args.samples_per_task, adamerging_steps=args.adamerging_steps, inner_steps=args.inner_steps,
                         df_merge_steps=(args.df_merge_init_points, args.df_merge_iters))
    methods = args.methods or default_methods(args.pool)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in specs]
    if unknown:
        print(f"unknown method(s) {unknown}; choose from {', '.join(specs)}", file=sys.stderr)
        return 2
    out = Path(args.out or f"benchmarks/results/compare_{args.pool.replace('-', '_')}")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    commit = source_commit()
    for name in names:
        print(f"[compare] running {name} ...", flush=True)
        result = run_method(name, specs[name], modelpool=modelpool, taskpool=taskpool, out_dir=out, extra=args.override)
        result.commit = commit
        status = result.error or ", ".join(f"{t}={100 * result.accuracy.get(t, float('nan')):.1f}" for t in eval_tasks)
        print(f"[compare] {name}: {status} ({result.seconds:.0f} s)", flush=True)
        results.append(result)
    command = "fusion_bench_fw " + " ".join(sys.argv[1:])
    commands = [command]
    if args.merge and (out / "compare.json").exists():
        # an earlier table in the same folder: its methods not re-run now are kept, in their order
        from .compare import RunResult

        earlier = json.loads((out / "compare.json").read_text())
        fresh = {r.method: r for r in results}
        kept = [fresh.pop(r["method"], None) or RunResult(**r) for r in earlier["results"]]
        results = kept + list(fresh.values())
        commands = earlier.get("commands", [earlier["command"]]) + commands
    individual = individual_scores(args.pool, card, eval_tasks)
    # GLUE-like pools report the paper's normalised score (accuracy over each task's own fine-tune) beside the average
    normalise_by = individual if args.pool.startswith(("glue-", "t5-")) and individual else None
    table = markdown_table(results, eval_tasks, extra_rows=[("Individual fine-tuned (pool card)", individual)] if individual else [],
                           normalise_by=normalise_by)
    title = f"mini-{args.pool} pool ({build_dir.name}): accuracy on its {len(eval_tasks)} eval tasks"
    machine = machine_description()
    (out / "compare.json").write_text(json.dumps({"command": command, "commands": commands, "machine": machine, "pool": args.pool, "build": build_dir.name, "eval_tasks": eval_tasks, "results": [asdict(r) for r in results]}, indent=1))
    shown = "\n\n".join(f"Command: `{c}`" for c in commands)
    by_commit: dict = {}
    for r in results:
        by_commit.setdefault(r.commit or "not recorded", []).append(r.label)
    shown += "\n\nCommit: " + ("; ".join(f"{c} ({', '.join(labels)})" for c, labels in by_commit.items()) if len(by_commit) > 1 else f"{next(iter(by_commit))} (every row)")
    (out / "compare.md").write_text(f"# {title}\n\n{shown}\n\nMachine: {machine}\n\n{table}\n")
    if any(not r.error for r in results):
        bar_chart(results, eval_tasks, out / "compare.png", title)
    print(table)
    failed = [r.method for r in results if r.error]
    if args.require:
        better, worse = args.require.split(">")
        by_name = {r.method: r for r in results}
        from .compare import average

        a, b = average(by_name[better], eval_tasks), average(by_name[worse], eval_tasks)
        print(f"[compare] requirement {better} ({100 * a:.1f}) > {worse} ({100 * b:.1f}): {'OK' if a > b else 'FAILED'}")
        if not a > b:
            return 1
    return 1 if failed and args.strict else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fusion_bench_fw", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="build (or find) a mini pool and print its directory")
    build.add_argument("--variant", choices=sorted(POOLS), default="ta20")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(func=cmd_build)

    card = sub.add_parser("card-adamerging", help="measure FusionBench's layer-wise AdaMerging on a mini pool and add it to the pool card")
    card.add_argument("--pool", choices=["micro", "ta20"], default="ta20")
    card.add_argument("--seed", type=int, default=0)
    card.add_argument("--steps", type=int, default=300, help="AdaMerging steps per run (FusionBench's CLIP default is 1000)")
    card.set_defaults(func=cmd_card_adamerging)

    compare = sub.add_parser("compare", help="run FW-Merging and FusionBench baselines on a mini pool, write a table")
    compare.add_argument("--pool", choices=sorted(POOLS), default="ta20")
    compare.add_argument("--seed", type=int, default=0, help="mini pool builder seed")
    compare.add_argument("--methods", help=f"comma-separated; default for CLIP pools: {DEFAULT_METHODS}; for llm- pools: {LLM_METHODS}; for glue- pools: {GLUE_METHODS}; "
                         f"for t5- pools: {T5_METHODS} (-lora pools: without DARE); for openclip- pools: {OPENCLIP_METHODS}")
    compare.add_argument("--out", help="output folder (default: benchmarks/results/compare_<pool>)")
    compare.add_argument("--fw-iters", type=int, default=15, help="FW iterations (paper: 15 for FW-soft)")
    compare.add_argument("--samples-per-task", type=int, default=100)
    compare.add_argument("--inner-steps", type=int, default=20)
    compare.add_argument("--adamerging-steps", type=int, default=300)
    compare.add_argument("--df-merge-init-points", type=int, default=10, help="DF-Merge random points (paper: 10)")
    compare.add_argument("--df-merge-iters", type=int, default=50, help="DF-Merge GP-guided steps (paper: 50)")
    compare.add_argument("--merge", action="store_true", help="keep the methods of an earlier compare.json in --out that are not re-run")
    compare.add_argument("--override", action="append", default=[], help="extra fusion_bench override for every run (repeatable)")
    compare.add_argument("--require", help="e.g. fw_soft>task_arithmetic: exit 1 unless the first method's average beats the second's")
    compare.add_argument("--strict", action="store_true", help="exit 1 if any method failed to run")
    compare.set_defaults(func=cmd_compare)

    standin = sub.add_parser("hub-standin", add_help=False, help="write an offline Hugging Face cache standing in for the real TA20 CLIP pool (options: --help)")
    standin.set_defaults(func=None)

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["hub-standin"]:  # its own parser (python -m fusion_bench_fw.hub_standin takes the same options)
        from .hub_standin import main as hub_standin_main

        return hub_standin_main(argv[1:])
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
