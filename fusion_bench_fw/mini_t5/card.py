"""The mini T5 GLUE pool's card: each task's full and LoRA fine-tunes vs the base model, and the interference check.

A row is right when the model, given its input, puts every target token (the end token included)
first under teacher forcing, which is what greedy generation then outputs (the taskpool generates;
a test checks the two agree). For both kinds of fine-tune: task arithmetic over the eval tasks'
models beats it over every model of the pool, on the eval tasks, each at its best coefficient of
``variant.ta_grid`` (the irrelevant models must hurt, or the pool would not test what FW-Merging is
for). The normalised score is the paper's: a merge's accuracy over each task's own fine-tune's
(the full one), averaged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Sequence

import torch
from datasets import load_from_disk
from transformers import AutoTokenizer, T5ForConditionalGeneration

from ..families.causal_lm import IGNORE
from ..families.seq2seq import text_to_text_batch
from ..lora_adapters import read_adapter
from ..mini_llm.manifest import LLMManifest as TextPoolManifest
from .variants import T5Variant

KINDS = ("full", "lora")


class OneModel:
    """The base T5 and every fine-tune's task vector; ``accuracy`` scores theta_0 + delta."""

    def __init__(self, manifest: TextPoolManifest, batch_size: int = 200):
        self.model = T5ForConditionalGeneration.from_pretrained(manifest.base_dir).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(manifest.tokenizer_dir)
        self.base = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.vectors: Dict[str, Dict[str, Dict[str, torch.Tensor]]] = {"full": {}, "lora": {}}
        for task, path in manifest.models.items():
            tuned = dict(T5ForConditionalGeneration.from_pretrained(path).named_parameters())
            self.vectors["full"][task] = {n: (tuned[n] - self.base[n]).detach() for n in self.base}
        for task, path in manifest.adapters.items():
            adapter, why = read_adapter(Path(path))
            if adapter is None:
                raise ValueError(f"mini T5 adapter of {task}: {why}")
            self.vectors["lora"][task] = adapter.deltas(list(self.base), torch.float32)
        self.tests = {t: load_from_disk(manifest.datasets[t]["test"]) for t in manifest.tasks}
        self.batch_size = batch_size

    @torch.no_grad()
    def accuracy(self, delta: Mapping[str, torch.Tensor], tasks: Sequence[str]) -> Dict[str, float]:
        for name, parameter in self.model.named_parameters():
            parameter.copy_(self.base[name] + delta[name] if name in delta else self.base[name])
        scores = {}
        for task in tasks:
            rows, right = self.tests[task], 0
            for start in range(0, len(rows), self.batch_size):
                batch = text_to_text_batch(rows.select(range(start, min(start + self.batch_size, len(rows)))), self.tokenizer)
                labels = batch["labels"]
                predicted = self.model(**batch).logits.argmax(-1)
                right += int(((predicted == labels) | (labels == IGNORE)).all(dim=1).sum())
            scores[task] = right / len(rows)
        return scores

    def arithmetic(self, kind: str, tasks: Sequence[str], scaling: float) -> Dict[str, torch.Tensor]:
        vectors = self.vectors[kind]
        names = set().union(*(vectors[t] for t in tasks))
        return {n: scaling * sum(vectors[t][n] for t in tasks if n in vectors[t]) for n in names}


def measure_card(manifest: TextPoolManifest, variant: T5Variant) -> Dict:
    bench = OneModel(manifest)
    tasks, eval_tasks = list(manifest.tasks), list(manifest.eval_tasks)
    base = bench.accuracy({}, tasks)
    rows = {t: {"base": base[t], "eval": t in eval_tasks,
                **{kind: bench.accuracy(bench.vectors[kind][t], [t])[t] for kind in KINDS}} for t in tasks}
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    normalised = lambda d: sum(d[t] / max(rows[t]["full"], 1e-9) for t in d) / len(d)  # noqa: E731
    arithmetic = {kind: [] for kind in KINDS}
    for kind in KINDS:
        for scaling in variant.ta_grid:
            relevant = bench.accuracy(bench.arithmetic(kind, eval_tasks, scaling), eval_tasks)
            everything = bench.accuracy(bench.arithmetic(kind, tasks, scaling), eval_tasks)
            arithmetic[kind].append({"scaling": scaling, "relevant": mean(relevant), "all": mean(everything),
                                     "relevant_normalised": normalised(relevant), "all_normalised": normalised(everything)})
    average = bench.accuracy(bench.arithmetic("full", tasks, 1.0 / len(tasks)), eval_tasks)
    best = lambda kind, side: max(r[side] for r in arithmetic[kind])  # noqa: E731
    checks = {f"{kind} fine-tunes beat the base model on their own task (every task)": all(r[kind] > r["base"] for r in rows.values())
              for kind in KINDS}
    checks.update({f"task arithmetic of the {kind} fine-tunes: over the {len(eval_tasks)} eval-task models beats over all {len(tasks)} "
                   f"(best coefficient of each)": best(kind, "relevant") > best(kind, "all") for kind in KINDS})
    return {"variant": variant.to_dict(), "seed": manifest.seed, "eval_tasks": eval_tasks, "tasks": rows,
            "task_arithmetic": arithmetic, "simple_average": {"mean": mean(average), "normalised": normalised(average)}, "checks": checks}


def write_card(build_dir: Path, card: Dict) -> None:
    (Path(build_dir) / "card.json").write_text(json.dumps(card, indent=1))
    eval_tasks, n = card["eval_tasks"], len(card["tasks"])
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [f"# mini T5 GLUE pool card ({card['variant']['name']}, seed {card['seed']})", "",
             "Exact match (%) on each task's test split (every target token first under teacher forcing = greedy output).", "",
             "| task | base | full fine-tune | LoRA fine-tune | eval |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {pct(r['base'])} | {pct(r['full'])} | {pct(r['lora'])} | {'yes' if r['eval'] else ''} |" for t, r in card["tasks"].items()]
    for kind in KINDS:
        lines += ["", f"Task arithmetic of the {kind} fine-tunes on the eval tasks {', '.join(eval_tasks)}: mean exact match (normalised score):", "",
                  f"| coefficient | over the eval-task models | over all {n} models |", "|---|---|---|"]
        lines += [f"| {r['scaling']} | {pct(r['relevant'])} ({pct(r['relevant_normalised'])}) | {pct(r['all'])} ({pct(r['all_normalised'])}) |"
                  for r in card["task_arithmetic"][kind]]
    average = card["simple_average"]
    lines += ["", f"Simple average of all {n} full fine-tunes: {pct(average['mean'])} (normalised {pct(average['normalised'])}).", ""]
    lines += [f"- {'PASS' if ok else 'MISS'}: {name}" for name, ok in card["checks"].items()]
    if "build_seconds" in card:
        lines += ["", f"Built in {card['build_seconds']:.0f} s."]
    (Path(build_dir) / "card.md").write_text("\n".join(lines) + "\n")
