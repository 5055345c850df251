"""The mini GLUE pool's card: each task's fine-tune vs the base backbone under its head, and the interference check.

Every task is scored as FusionBench's GPT-2 GLUE taskpool scores it: the backbone under test inside
that task's own fine-tuned classifier (its head is never merged). Interference check (as for the other
mini pools): task arithmetic over the eval tasks' models beats task arithmetic over every model of the
pool, on the eval tasks, each at its best coefficient of ``variant.ta_grid``; otherwise the irrelevant
models would not hurt and the pool would not test what FW-Merging is for. The normalised score is the
paper's: a merge's accuracy on a task over that task's own fine-tune's, averaged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Sequence

import torch
from datasets import load_from_disk
from transformers import GPT2ForSequenceClassification, GPT2Model

from ..families.gpt2_classification import BACKBONE, tokenized_batch
from ..mini_llm.manifest import LLMManifest as TextPoolManifest
from .variants import GlueVariant


class HeadsOnOneBackbone:
    """Each task's fine-tuned classifier around one shared backbone, whose weights ``accuracy`` sets."""

    def __init__(self, manifest: TextPoolManifest, batch_size: int = 200):
        self.backbone = GPT2Model.from_pretrained(manifest.base_dir).eval()
        self.base = {n: p.detach().clone() for n, p in self.backbone.named_parameters()}
        self.classifiers: Dict[str, GPT2ForSequenceClassification] = {}
        self.vectors: Dict[str, Dict[str, torch.Tensor]] = {}
        for task, path in manifest.models.items():
            classifier = GPT2ForSequenceClassification.from_pretrained(path).eval()
            tuned = dict(getattr(classifier, BACKBONE).named_parameters())
            self.vectors[task] = {n: (tuned[n] - self.base[n]).detach() for n in self.base}
            setattr(classifier, BACKBONE, self.backbone)
            self.classifiers[task] = classifier
        self.tests = {t: load_from_disk(manifest.datasets[t]["test"]) for t in manifest.tasks}
        self.batch_size = batch_size

    @torch.no_grad()
    def accuracy(self, delta: Mapping[str, torch.Tensor], tasks: Sequence[str]) -> Dict[str, float]:
        """Test accuracy of backbone ``theta_0 + delta`` on each task, with the task's own head."""
        for name, parameter in self.backbone.named_parameters():
            parameter.copy_(self.base[name] + delta[name] if name in delta else self.base[name])
        scores = {}
        for task in tasks:
            rows, right = self.tests[task], 0
            for start in range(0, len(rows), self.batch_size):
                batch = tokenized_batch(rows.select(range(start, min(start + self.batch_size, len(rows)))))
                logits = self.classifiers[task](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                right += int((logits.argmax(-1) == batch["labels"]).sum())
            scores[task] = right / len(rows)
        return scores

    def arithmetic(self, tasks: Sequence[str], scaling: float) -> Dict[str, torch.Tensor]:
        return {n: scaling * sum(self.vectors[t][n] for t in tasks) for n in self.base}


def measure_card(manifest: TextPoolManifest, variant: GlueVariant) -> Dict:
    bench = HeadsOnOneBackbone(manifest)
    tasks, eval_tasks = list(manifest.tasks), list(manifest.eval_tasks)
    base = bench.accuracy({}, tasks)
    rows = {t: {"base": base[t], "finetuned": bench.accuracy(bench.vectors[t], [t])[t], "eval": t in eval_tasks} for t in tasks}
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    normalised = lambda d: sum(d[t] / rows[t]["finetuned"] for t in d) / len(d)  # noqa: E731
    arithmetic_rows = []
    for scaling in variant.ta_grid:
        relevant = bench.accuracy(bench.arithmetic(eval_tasks, scaling), eval_tasks)
        everything = bench.accuracy(bench.arithmetic(tasks, scaling), eval_tasks)
        arithmetic_rows.append({"scaling": scaling, "relevant": mean(relevant), "all": mean(everything),
                                "relevant_normalised": normalised(relevant), "all_normalised": normalised(everything)})
    average = bench.accuracy(bench.arithmetic(tasks, 1.0 / len(tasks)), eval_tasks)
    best = lambda side: max(r[side] for r in arithmetic_rows)  # noqa: E731
    checks = {
        "fine-tunes beat the base backbone (under their own heads) on their own task (every task)": all(r["finetuned"] > r["base"] for r in rows.values()),
        f"task arithmetic over the {len(eval_tasks)} eval-task models beats it over all {len(tasks)} (best coefficient of each)":
            best("relevant") > best("all"),
    }
    return {"variant": variant.to_dict(), "seed": manifest.seed, "eval_tasks": eval_tasks, "tasks": rows,
            "task_arithmetic": arithmetic_rows, "simple_average": {"mean": mean(average), "normalised": normalised(average)},
            "checks": checks}


def write_card(build_dir: Path, card: Dict) -> None:
    (Path(build_dir) / "card.json").write_text(json.dumps(card, indent=1))
    eval_tasks = card["eval_tasks"]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [f"# mini GLUE pool card ({card['variant']['name']}, seed {card['seed']})", "",
             "Accuracy (%) on each task's test split; every backbone is scored under the task's own fine-tuned head.", "",
             "| task | base backbone | fine-tuned | eval |", "|---|---|---|---|"]
    lines += [f"| {t} | {pct(r['base'])} | {pct(r['finetuned'])} | {'yes' if r['eval'] else ''} |" for t, r in card["tasks"].items()]
    lines += ["", f"Task arithmetic on the eval tasks {', '.join(eval_tasks)}: mean accuracy (normalised score):", "",
              f"| coefficient | over the eval-task models | over all {len(card['tasks'])} models |", "|---|---|---|"]
    lines += [f"| {r['scaling']} | {pct(r['relevant'])} ({pct(r['relevant_normalised'])}) | {pct(r['all'])} ({pct(r['all_normalised'])}) |"
              for r in card["task_arithmetic"]]
    average = card["simple_average"]
    lines += ["", f"Simple average of all {len(card['tasks'])}: {pct(average['mean'])} (normalised {pct(average['normalised'])}).", ""]
    lines += [f"- {'PASS' if ok else 'MISS'}: {name}" for name, ok in card["checks"].items()]
    if "build_seconds" in card:
        lines += ["", f"Built in {card['build_seconds']:.0f} s."]
    (Path(build_dir) / "card.md").write_text("\n".join(lines) + "\n")
