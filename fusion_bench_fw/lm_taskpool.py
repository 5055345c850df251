"""A FusionBench taskpool for causal LMs on (prompt, response) test sets: greedy exact match and CE.

For each task: the share of test prompts whose greedy continuation (``model.generate``, no
sampling, up to ``max_new_tokens``) equals the reference response once decoded and stripped
(reported as ``accuracy``, the key FusionBench's report and our ``compare`` read), and the mean
response-token cross-entropy (``loss``), the quantity FW-Merging's objective minimises on train
samples. ``average`` holds the means over tasks. With real models and benchmarks, FusionBench's
``LMEvalHarnessTaskPool`` is the taskpool to use instead (see the README).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from fusion_bench import BaseTaskPool, auto_register_config

from .families.causal_lm import encode_pairs, pad_id, prompt_ids, prompt_response, sample_response_losses

log = logging.getLogger(__name__)


def left_padded_prompts(tokenizer, prompts: List[str], device) -> Dict[str, torch.Tensor]:
    """Prompts (after BOS, as in training) padded on the left, so generation continues every row."""
    rows = [prompt_ids(tokenizer, p) for p in prompts]
    width = max(len(r) for r in rows)
    pad = pad_id(tokenizer)
    return {
        "input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device),
        "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device),
    }


@auto_register_config
class CausalLMExactMatchTaskPool(BaseTaskPool):
    def __init__(self, test_datasets: DictConfig, tokenizer: str, batch_size: int = 64, max_new_tokens: int = 16, max_samples: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)

    def _tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer) if isinstance(self.tokenizer, str) else instantiate(self.tokenizer)

    @torch.no_grad()
    def evaluate_task(self, model, tokenizer, dataset) -> Dict[str, float]:
        device = next(model.parameters()).device
        pairs = [prompt_response(dataset[i]) for i in range(len(dataset) if self.max_samples is None else min(len(dataset), self.max_samples))]
        correct, loss_sum = 0, 0.0
        pad = pad_id(tokenizer)
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            prompts = left_padded_prompts(tokenizer, [p for p, _ in chunk], device)
            generated = model.generate(**prompts, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(generated[:, prompts["input_ids"].shape[1] :], skip_special_tokens=True)
            correct += sum(text.strip() == response.strip() for text, (_, response) in zip(texts, chunk))
            batch = encode_pairs(tokenizer, chunk, device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss_sum += float(sample_response_losses(logits, batch["labels"]).sum())
        return {"accuracy": correct / len(pairs), "loss": loss_sum / len(pairs)}

    def evaluate(self, model, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        tokenizer = self._tokenizer()
        was_training = model.training
        model.eval()
        report: Dict[str, Any] = {}
        for task, config in self.test_datasets.items():
            report[task] = self.evaluate_task(model, tokenizer, instantiate(config))
            log.info("task %s: exact match %.3f, response CE %.4f", task, report[task]["accuracy"], report[task]["loss"])
        model.train(was_training)
        report["average"] = {key: sum(r[key] for r in report.values()) / len(self.test_datasets) for key in ("accuracy", "loss")}
        return report
