"""The causal-LM family on a tiny random Llama: what the objective counts, exact match, shape errors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import DictConfig

from fusion_bench.modelpool import CausalLMPool

from fusion_bench_fw.checkpoints import PoolCheckpoints
from fusion_bench_fw.families.causal_lm import IGNORE, CausalLMFamily, encode_pairs
from fusion_bench_fw.mini_llm.tokenizer import build_tokenizer

PAIRS = [("rev abc =", "cba"), ("add 1+2 =", "3"), ("copy hello =", "hello")]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer([p + r for p, r in PAIRS], tmp_path_factory.mktemp("tok"), vocab_size=260)


def tiny_llama(vocab_size, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)).eval()


class _Family(CausalLMFamily):
    """The family without a pool: only its loss and accuracy functions are exercised."""

    def __init__(self):
        pass


def test_labels_cover_exactly_the_response_and_eos(tokenizer):
    batch = encode_pairs(tokenizer, PAIRS)
    for row, (prompt, response) in enumerate(PAIRS):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        kept = labels != IGNORE
        expected = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert labels[kept].tolist() == expected
        prompt_len = 1 + len(tokenizer(prompt, add_special_tokens=False)["input_ids"])  # BOS + prompt
        assert not kept[:prompt_len].any() and ids[0] == tokenizer.bos_token_id
        assert int(batch["attention_mask"][row].sum()) == prompt_len + len(expected)


def test_loss_ignores_the_prompt_tokens_and_averages_per_sample(tokenizer):
    model = tiny_llama(len(tokenizer))
    params = dict(model.named_parameters())
    batch = encode_pairs(tokenizer, PAIRS)
    loss = _Family().batch_loss(model, "cross_entropy")(params, "t", batch)
    # reference: per sample, the mean CE of the response tokens predicted from their prefix
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    reference = 0.0
    for row in range(len(PAIRS)):
        positions = (batch["labels"][row] != IGNORE).nonzero().flatten()
        terms = [torch.nn.functional.cross_entropy(logits[row, p - 1], batch["input_ids"][row, p]) for p in positions]
        reference += torch.stack(terms).mean()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    # changing a prompt token's target logits does not matter, changing the prompt itself does
    altered = {k: v.clone() for k, v in batch.items()}
    altered["labels"][0, 1] = 5  # a prompt position now "labelled": must change the loss
    assert not torch.isclose(_Family().batch_loss(model, "cross_entropy")(params, "t", altered), loss)


def test_exact_match_under_teacher_forcing_matches_greedy_generation(tokenizer):
    """A sample counts as right exactly when greedy generation reproduces its response (checked on a
    model trained on the pairs until it answers them, and on wrong answers)."""
    from fusion_bench_fw.lm_taskpool import left_padded_prompts
    from fusion_bench_fw.mini_llm.training import finetune

    model = tiny_llama(len(tokenizer), seed=3)
    finetune(model, tokenizer, PAIRS, steps=150, batch_size=3, lr=1e-2, seed=0)
    correct, params = _Family().batch_correct(model), dict(model.named_parameters())
    prompts = left_padded_prompts(tokenizer, [p for p, _ in PAIRS], "cpu")
    generated = model.generate(**prompts, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    answers = tokenizer.batch_decode(generated[:, prompts["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answers == [r for _, r in PAIRS]  # trained until greedy generation answers every pair
    assert correct(params, "t", encode_pairs(tokenizer, PAIRS)) == len(PAIRS)
    wrong = [(p, r[::-1] + "x") for p, r in PAIRS]  # a different answer for each prompt
    assert correct(params, "t", encode_pairs(tokenizer, wrong)) == 0
    truncated = [(p, r[:-1]) for p, r in PAIRS if len(r) > 1]  # a right prefix without its end is wrong too
    assert correct(params, "t", encode_pairs(tokenizer, truncated)) == 0


def test_a_checkpoint_with_another_vocabulary_is_refused_naming_model_and_shapes(tokenizer, tmp_path):
    tiny_llama(len(tokenizer)).save_pretrained(tmp_path / "base")
    tiny_llama(len(tokenizer) + 64).save_pretrained(tmp_path / "wide")
    pool = CausalLMPool(DictConfig({"_pretrained_": str(tmp_path / "base"), "wide": str(tmp_path / "wide")}), tokenizer=None)
    base = dict(tiny_llama(len(tokenizer)).named_parameters())
    source = PoolCheckpoints(pool, ["wide"], list(base))
    with pytest.raises(ValueError, match=rf"model 'wide': parameter 'model.embed_tokens.weight' has shape \({len(tokenizer) + 64}, 32\).*\({len(tokenizer)}, 32\)"):
        source.validate({k: v.detach() for k, v in base.items()})
