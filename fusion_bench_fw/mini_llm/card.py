"""The mini LLM pool's card: base vs fine-tuned exact match per task, and the interference check.

Interference check (as for mini-TA20): task arithmetic (theta_0 + lambda * sum of task vectors) over
the eval tasks' models must beat task arithmetic over every model of the pool, on the eval tasks, each
at its best coefficient of ``variant.ta_grid``;
otherwise the irrelevant models would not hurt and the pool would not test what FW-Merging is for.
Task vectors of LoRA fine-tunes are their low-rank deltas, as FW-Merging streams them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Sequence

import torch
from datasets import load_from_disk
from transformers import AutoTokenizer, LlamaForCausalLM

from ..lm_taskpool import CausalLMExactMatchTaskPool
from ..lora_adapters import read_adapter
from .manifest import LLMManifest
from .variants import LLMVariant


def task_vectors(manifest: LLMManifest, base: Mapping[str, torch.Tensor]) -> Dict[str, Dict[str, torch.Tensor]]:
    vectors = {}
    for task, path in manifest.models.items():
        tuned = dict(LlamaForCausalLM.from_pretrained(path).named_parameters())
        vectors[task] = {n: (tuned[n] - base[n]).detach() for n in base}
    for task, path in manifest.adapters.items():
        adapter, why = read_adapter(Path(path))
        if adapter is None:
            raise ValueError(f"mini LLM pool: adapter of {task} cannot be read: {why}")
        vectors[task] = adapter.deltas(list(base), torch.float32)
    return vectors


def measure_card(manifest: LLMManifest, variant: LLMVariant) -> Dict:
    tokenizer = AutoTokenizer.from_pretrained(manifest.tokenizer_dir)
    scorer = CausalLMExactMatchTaskPool(test_datasets={}, tokenizer=manifest.tokenizer_dir, batch_size=64, max_new_tokens=16)
    model = LlamaForCausalLM.from_pretrained(manifest.base_dir).eval()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    tests = {t: load_from_disk(manifest.datasets[t]["test"]) for t in manifest.tasks}
    vectors = task_vectors(manifest, base)

    def accuracy(theta_delta: Mapping[str, torch.Tensor], tasks: Sequence[str]) -> Dict[str, float]:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(base[n] + theta_delta[n] if n in theta_delta else base[n])
        return {t: scorer.evaluate_task(model, tokenizer, tests[t])["accuracy"] for t in tasks}

    def arithmetic(tasks: Sequence[str], scaling: float) -> Dict[str, torch.Tensor]:
        return {n: scaling * sum(vectors[t][n] for t in tasks if n in vectors[t]) for n in base}

    zero = accuracy({}, manifest.tasks)
    rows = {t: {"base": zero[t], "finetuned": accuracy(vectors[t], [t])[t], "kind": "lora" if t in manifest.adapters else "full",
                "eval": t in manifest.eval_tasks} for t in manifest.tasks}
    eval_tasks = list(manifest.eval_tasks)
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    arithmetic_rows = [{"scaling": lam, "relevant": mean(accuracy(arithmetic(eval_tasks, lam), eval_tasks)),
                        "all": mean(accuracy(arithmetic(manifest.tasks, lam), eval_tasks))} for lam in variant.ta_grid]
    best = lambda side: max(r[side] for r in arithmetic_rows)  # noqa: E731
    checks = {
        "fine-tunes beat the base model on their own task (every task)": all(r["finetuned"] > r["base"] for r in rows.values()),
        f"task arithmetic over the {len(eval_tasks)} eval-task models beats it over all {len(manifest.tasks)} (best coefficient of each)":
            best("relevant") > best("all"),
    }
    return {"variant": variant.to_dict(), "seed": manifest.seed, "eval_tasks": eval_tasks, "tasks": rows,
            "task_arithmetic": arithmetic_rows, "checks": checks}


def write_card(build_dir: Path, card: Dict) -> None:
    (Path(build_dir) / "card.json").write_text(json.dumps(card, indent=1))
    eval_tasks = card["eval_tasks"]
    lines = [f"# mini-LLM pool card ({card['variant']['name']}, seed {card['seed']})", "",
             "Exact match (%) of greedy generation on each task's test split.", "",
             "| task | kind | base | fine-tuned | eval |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {r['kind']} | {100 * r['base']:.1f} | {100 * r['finetuned']:.1f} | {'yes' if r['eval'] else ''} |" for t, r in card["tasks"].items()]
    lines += ["", f"Task arithmetic, mean exact match on the eval tasks {', '.join(eval_tasks)}:", "",
              f"| coefficient | over the eval-task models | over all {len(card['tasks'])} models |", "|---|---|---|"]
    lines += [f"| {r['scaling']} | {100 * r['relevant']:.1f} | {100 * r['all']:.1f} |" for r in card["task_arithmetic"]]
    lines += [""]
    lines += [f"- {'PASS' if ok else 'MISS'}: {name}" for name, ok in card["checks"].items()]
    if "build_seconds" in card:
        lines += ["", f"Built in {card['build_seconds']:.0f} s."]
    (Path(build_dir) / "card.md").write_text("\n".join(lines) + "\n")
