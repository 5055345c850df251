"""Training of the mini T5 GLUE pool: a tiny T5 pretrained by span corruption, then per-task fine-tunes.

Pretraining is T5's own objective on generic sentences over the pool's lexicon
(``mini_glue.tasks.pretraining_corpus``: words and grammar, never a label): a span of about 15 % of
each line's tokens is replaced by a sentinel in the input and the target is the sentinel, the span
and a closing sentinel. Each task is then fine-tuned twice from the base model on its text-to-text
rows: every weight (saved as a whole model, like ``tanganke/flan-t5-base_glue-*``) and rank-r LoRA
factors on the attention projections q and v (saved as a PEFT adapter, like ``*_lora-16``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Sequence

import torch
from transformers import T5Config, T5ForConditionalGeneration

from ..families.causal_lm import IGNORE
from ..families.seq2seq import text_to_text_batch
from ..mini.finetune_jobs import one_thread
from ..mini_llm.training import optimise
from .tokenizer import SENTINELS
from .variants import T5Variant

LORA_TARGETS = ["q", "v"]  # T5's attention query/value projections, the usual LoRA targets for T5


def new_t5(variant: T5Variant, tokenizer, seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=variant.width, d_kv=variant.width // variant.heads, d_ff=variant.ff_width,
                      num_layers=variant.layers, num_decoder_layers=variant.layers, num_heads=variant.heads, dropout_rate=0.0,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    return T5ForConditionalGeneration(config)


def span_corruption(ids: List[int], rng: random.Random, first: int, second: int, eos: int):
    """(input ids, target ids) of one line with one corrupted span (ids without the final EOS)."""
    length = max(1, round(0.15 * len(ids)))
    start = rng.randrange(0, len(ids) - length + 1)
    return ids[:start] + [first] + ids[start + length:] + [eos], [first] + ids[start:start + length] + [second, eos]


def _padded(rows: Sequence[List[int]], pad: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


def pretrain(model: T5ForConditionalGeneration, tokenizer, lines: Sequence[str], variant: T5Variant, seed: int) -> None:
    rng = random.Random(seed)
    first, second = tokenizer.convert_tokens_to_ids(list(SENTINELS[:2]))
    ids = [tokenizer(line, add_special_tokens=False)["input_ids"][: variant.max_length - 2] for line in lines]
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

    def loss_of_step(_step):
        pairs = [span_corruption(row, rng, first, second, eos) for row in rng.sample(ids, variant.pretrain_batch)]
        inputs, targets = _padded([p for p, _ in pairs], pad), _padded([t for _, t in pairs], IGNORE)
        return model(input_ids=inputs, attention_mask=(inputs != pad).long(), labels=targets).loss

    optimise(model, list(model.parameters()), variant.pretrain_steps, variant.pretrain_lr, loss_of_step)


@dataclass
class T5FinetuneJob:
    """One task's fine-tune (full or LoRA), run in a worker process (see ``mini.finetune_jobs.run_jobs``)."""

    task: str
    base_dir: str
    tokenizer_dir: str
    rows: List[dict]  # tokenized train rows (input_ids, attention_mask, labels)
    variant: T5Variant
    lora: bool
    seed: int
    out_dir: str


def run_t5_job(job: T5FinetuneJob) -> str:
    from transformers import AutoTokenizer

    with one_thread():
        torch.manual_seed(job.seed)
        rng = random.Random(job.seed)
        tokenizer = AutoTokenizer.from_pretrained(job.tokenizer_dir)
        model = T5ForConditionalGeneration.from_pretrained(job.base_dir)
        v, lr = job.variant, job.variant.finetune_lr
        if job.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=v.lora_rank, lora_alpha=v.lora_alpha, target_modules=LORA_TARGETS, lora_dropout=0.0,
                                                     task_type="SEQ_2_SEQ_LM"))
            lr = v.lora_lr

        def loss_of_step(_step):
            batch = text_to_text_batch(rng.sample(job.rows, min(v.finetune_batch, len(job.rows))), tokenizer)
            return model(**batch).loss

        optimise(model, [p for p in model.parameters() if p.requires_grad], v.finetune_steps, lr, loss_of_step)
        model.save_pretrained(job.out_dir)
    return job.task
