"""A FusionBench taskpool for text-to-text models: exact match of greedy generation, and target CE.

For each task: the share of test rows whose greedy output (``model.generate``, no sampling, up to
``max_new_tokens``), decoded without special tokens and stripped, equals the decoded target, as
FusionBench's flan-T5 GLUE evaluation counts it (``accuracy``, the key FusionBench's report and our
``compare`` read), and the mean target-token cross-entropy (``loss``), what FW-Merging's objective
minimises on train rows. ``average`` holds the means over tasks. Rows are FusionBench's flan-T5 GLUE
layout or text (see ``families.seq2seq``). FusionBench's own ``flan-t5_glue_text_generation``
taskpool loads GLUE from the hub and is the one to use with the real Flan-T5 pools.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from fusion_bench import BaseTaskPool, auto_register_config

from .families.causal_lm import IGNORE
from .families.seq2seq import load_seq2seq_tokenizer, target_losses, text_to_text_batch

log = logging.getLogger(__name__)


@auto_register_config
class Seq2SeqExactMatchTaskPool(BaseTaskPool):
    def __init__(self, test_datasets: DictConfig, tokenizer, batch_size: int = 64, max_new_tokens: int = 8,
                 max_samples: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)

    @torch.no_grad()
    def evaluate_task(self, model, tokenizer, dataset) -> Dict[str, float]:
        device = next(model.parameters()).device
        count = len(dataset) if self.max_samples is None else min(len(dataset), self.max_samples)
        correct, loss_sum = 0, 0.0
        for start in range(0, count, self.batch_size):
            rows = [dataset[i] for i in range(start, min(start + self.batch_size, count))]
            batch = text_to_text_batch(rows, tokenizer, device)
            generated = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                       max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
            outputs = tokenizer.batch_decode(generated, skip_special_tokens=True)
            references = tokenizer.batch_decode(batch["labels"].masked_fill(batch["labels"] == IGNORE, tokenizer.pad_token_id), skip_special_tokens=True)
            correct += sum(out.strip() == ref.strip() for out, ref in zip(outputs, references))
            loss_sum += float(target_losses(model(**batch).logits, batch["labels"]).sum())
        return {"accuracy": correct / count, "loss": loss_sum / count}

    def evaluate(self, model, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        tokenizer = load_seq2seq_tokenizer(self.tokenizer)
        was_training = model.training
        model.eval()
        report: Dict[str, Any] = {}
        for task, config in self.test_datasets.items():
            report[task] = self.evaluate_task(model, tokenizer, instantiate(config))
            log.info("task %s: exact match %.3f, target CE %.4f", task, report[task]["accuracy"], report[task]["loss"])
        model.train(was_training)
        report["average"] = {key: sum(r[key] for r in report.values()) / len(self.test_datasets) for key in ("accuracy", "loss")}
        return report
