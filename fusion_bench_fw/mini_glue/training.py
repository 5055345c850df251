"""Training of the mini GLUE pool: a tiny GPT-2 pretrained as a language model, then one classifier per task.

Pretraining predicts every token of generic sentences and sentence pairs over the pool's lexicon
(``tasks.pretraining_corpus``: the words and grammar, never a label). Each fine-tune is what the
hub's GPT-2 GLUE checkpoints are: ``GPT2ForSequenceClassification`` from the base model, backbone and
a fresh head trained together with cross-entropy, saved whole (``transformer.*`` and ``score``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Sequence

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from ..families.causal_lm import IGNORE
from ..families.gpt2_classification import tokenized_batch
from ..mini.finetune_jobs import one_thread
from ..mini_llm.training import optimise
from .variants import GlueVariant


def new_gpt2(variant: GlueVariant, tokenizer, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    eot = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=variant.max_length, n_embd=variant.width, n_layer=variant.layers,
                        n_head=variant.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    return GPT2LMHeadModel(config)


def pretrain(model: GPT2LMHeadModel, tokenizer, lines: Sequence[str], variant: GlueVariant, seed: int) -> None:
    rng = random.Random(seed)
    eot = tokenizer.eos_token_id
    ids = [tokenizer(line)["input_ids"][: variant.max_length - 1] + [eot] for line in lines]

    def loss_of_step(_step):
        rows = rng.sample(ids, variant.pretrain_batch)
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [eot] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return model(input_ids=input_ids, attention_mask=mask, labels=input_ids.masked_fill(mask == 0, IGNORE)).loss

    optimise(model, list(model.parameters()), variant.pretrain_steps, variant.pretrain_lr, loss_of_step)


@dataclass
class GlueFinetuneJob:
    """One task's fine-tune, run in a worker process (see ``mini.finetune_jobs.run_jobs``)."""

    task: str
    base_dir: str
    rows: List[dict]  # tokenized train rows (input_ids, attention_mask, label)
    label_names: List[str]
    pad_token_id: int
    variant: GlueVariant
    seed: int
    out_dir: str


def run_glue_job(job: GlueFinetuneJob) -> str:
    """Fine-tune backbone + head on one task from the base model and save the classifier."""
    with one_thread():
        torch.manual_seed(job.seed)
        rng = random.Random(job.seed)
        model = GPT2ForSequenceClassification.from_pretrained(
            job.base_dir, num_labels=len(job.label_names), pad_token_id=job.pad_token_id,
            id2label=dict(enumerate(job.label_names)), label2id={n: i for i, n in enumerate(job.label_names)})
        v = job.variant

        def loss_of_step(_step):
            batch = tokenized_batch(rng.sample(job.rows, min(v.finetune_batch, len(job.rows))))
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

        optimise(model, list(model.parameters()), v.finetune_steps, v.finetune_lr, loss_of_step)
        model.save_pretrained(job.out_dir)
    return job.task
