"""Training of the mini causal-LM pool: the base decoder on a generic text mix, then one fine-tune per task.

Pretraining predicts every token of generic lines plus a few hundred train pairs of each pool task
(see ``variants.py`` for why), so the base model knows the alphabet and the prompt formats but solves
little. Each fine-tune then trains on its task's
(prompt, response) pairs with the loss on response tokens only, the objective FW-Merging uses: a
full fine-tune updates every weight, a LoRA fine-tune (``peft``) only rank-r factors of the linear
layers, saved as an adapter beside the base model, as LoRA fine-tunes are published.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, get_cosine_schedule_with_warmup

from ..families.causal_lm import IGNORE, encode_pairs, sample_response_losses
from ..mini.finetune_jobs import one_thread
from .variants import LLMVariant

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def new_llama(variant: LLMVariant, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=variant.hidden, intermediate_size=variant.intermediate, num_hidden_layers=variant.layers,
        num_attention_heads=variant.heads, num_key_value_heads=variant.heads, max_position_embeddings=64, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def optimise(model: nn.Module, parameters, steps: int, lr: float, loss_of_step) -> None:
    """AdamW with warm-up and cosine decay (Hugging Face's schedule), ``steps`` steps."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    model.train()
    for step in range(steps):
        loss = loss_of_step(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
    model.eval()


def pretrain(model: LlamaForCausalLM, tokenizer, lines: Sequence[str], variant: LLMVariant, seed: int) -> None:
    rng = random.Random(seed)
    ids = [[tokenizer.bos_token_id] + tokenizer(line, add_special_tokens=False)["input_ids"][:60] + [tokenizer.eos_token_id] for line in lines]

    def loss_of_step(_step):
        rows = rng.sample(ids, variant.pretrain_batch)
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        labels = input_ids.masked_fill(mask == 0, IGNORE)
        return model(input_ids=input_ids, attention_mask=mask, labels=labels).loss

    optimise(model, [p for p in model.parameters() if p.requires_grad], variant.pretrain_steps, variant.pretrain_lr, loss_of_step)


def response_loss(model: nn.Module, batch) -> torch.Tensor:
    """Mean over the batch of each sample's mean response-token CE (the FW objective's per-sample loss)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sample_response_losses(logits, batch["labels"]).mean()


def finetune(model: nn.Module, tokenizer, pairs: List[Tuple[str, str]], steps: int, batch_size: int, lr: float, seed: int) -> None:
    rng = random.Random(seed)
    optimise(model, [p for p in model.parameters() if p.requires_grad], steps, lr,
              lambda _step: response_loss(model, encode_pairs(tokenizer, rng.sample(pairs, min(batch_size, len(pairs))))))


@dataclass
class LLMFinetuneJob:
    """One task's fine-tune, run in a worker process (see ``mini.finetune_jobs.run_jobs``)."""

    task: str
    base_dir: str
    tokenizer_dir: str
    pairs: List[Tuple[str, str]]
    variant: LLMVariant
    lora: bool
    seed: int
    out_dir: str


def run_llm_job(job: LLMFinetuneJob) -> str:
    """Fine-tune one task (full or LoRA) from the base model and save it (model dir or adapter dir)."""
    from transformers import AutoTokenizer

    with one_thread():
        torch.manual_seed(job.seed)
        tokenizer = AutoTokenizer.from_pretrained(job.tokenizer_dir)
        model = LlamaForCausalLM.from_pretrained(job.base_dir)
        v = job.variant
        if job.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=v.lora_rank, lora_alpha=v.lora_alpha, target_modules=LORA_TARGETS, lora_dropout=0.0))
            finetune(model, tokenizer, job.pairs, v.finetune_steps, v.finetune_batch, v.lora_lr, job.seed)
        else:
            finetune(model, tokenizer, job.pairs, v.finetune_steps, v.finetune_batch, v.finetune_lr, job.seed)
        model.save_pretrained(job.out_dir)
    return job.task
